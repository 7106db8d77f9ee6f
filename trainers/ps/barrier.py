"""Sync PS with several steps per closure: a barrier on the ps that the N workers'
closures meet at every step, and the chief's watchdog that breaks it when a worker is
lost.

Each global step, every worker adds its gradient into the accumulators and arrives
(`arrive`: a counter on the ps); the N-th to arrive applies the step and `release`s
everyone, one token into each worker's own queue; every worker then `wait`s for its
token before its next batch. A worker's own queue (its number rides on its batches,
trainer.dataset_fn) means a worker that applied and hurries on can never take a token
meant for a slower one, so no worker starts step s + 1 before step s is applied, and
no step mixes gradients from two steps.

ClusterCoordinator re-runs a lost worker's closure on whichever worker is free next,
but behind a barrier nobody is free, and TF's queues have no dequeue timeout. So the
chief watches the global step while it waits (`Watchdog`); when the step stops moving
for --sync_stall_s seconds it `abort`s: a flag every closure checks and a -1 token in every
queue, so each closure returns at once. The chief then drops the half-made step
(`reset`, and the accumulators zeroed) and runs the rest of the run one step a
closure, which any set of live workers can serve.
"""

import threading
import time
from typing import Callable, Sequence

import tensorflow as tf

POLL_S = 0.5


class Barrier:
  """The barrier's state on the ps: an arrival counter, an abort flag and one token
  queue per worker. Create it under the strategy's scope; `colocate` (PSS:
  strategy.extended.colocate_vars_with(v)) puts it beside `v`."""

  def __init__(self, num_workers: int, colocate):
    self.num_workers = num_workers
    with colocate:
      self.arrivals = tf.Variable(0, dtype=tf.int64, trainable=False, name="sync_arrivals")
      self.aborted_ = tf.Variable(0, dtype=tf.int64, trainable=False, name="sync_abort")
    with tf.device(self.arrivals.device):
      self.queues = [tf.queue.FIFOQueue(1 << 16, tf.int64, shapes=[[]], name=f"sync_tokens_{i}")
                     for i in range(num_workers)]

  # In a closure (graph).
  def aborted(self) -> tf.Tensor:
    return self.aborted_ > 0

  def arrive(self, after: Sequence[tf.Tensor]) -> tf.Tensor:
    """This worker's arrival, once `after` (its gradient's accumulation) has run: how
    many have arrived this step, itself included."""
    with tf.control_dependencies(after):
      return self.arrivals.assign_add(1)

  def release(self, after: Sequence[tf.Tensor]) -> None:
    """The N-th arrival, once `after` (the applied step) has run: the count back to
    zero, then one token into every worker's queue (its own included)."""
    with tf.control_dependencies(after):
      reset = self.arrivals.assign(0)
    with tf.control_dependencies([reset]):
      for queue in self.queues:
        queue.enqueue(tf.constant(1, tf.int64))

  def wait(self, worker: tf.Tensor) -> tf.Tensor:
    """Blocks until this worker's token comes: True to go on, False after an abort."""
    token = tf.switch_case(tf.cast(worker, tf.int32) % self.num_workers,
                           [lambda q=q: q.dequeue() for q in self.queues])
    return token > 0

  # On the chief (eager).
  def abort(self) -> None:
    self.aborted_.assign(1)
    for queue in self.queues:
      queue.enqueue(tf.constant(-1, tf.int64))

  def reset(self) -> None:
    """After every closure has returned: no abort, no arrivals, no tokens left."""
    self.aborted_.assign(0)
    self.arrivals.assign(0)
    for queue in self.queues:
      left = int(queue.size())
      if left:
        queue.dequeue_many(left)


class Watchdog:
  """While the chief waits for closures: calls `on_stall()` once if `read_step()` has
  not changed for `stall_s` seconds. A context manager; `fired` says whether it did."""

  def __init__(self, read_step: Callable[[], int], on_stall: Callable[[], None],
               stall_s: float, poll_s: float = POLL_S,
               clock: Callable[[], float] = time.monotonic):
    self.read_step, self.on_stall = read_step, on_stall
    self.stall_s, self.poll_s, self.clock = stall_s, poll_s, clock
    self.fired = False
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True, name="sync-watchdog")

  def __enter__(self) -> "Watchdog":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()

  def _watch(self) -> None:
    try:
      last, since = self.read_step(), self.clock()
      while not self._stop.wait(self.poll_s):
        step = self.read_step()
        if step != last:
          last, since = step, self.clock()
        elif self.clock() - since >= self.stall_s:
          self.fired = True
          self.on_stall()
          return
    except Exception:  # pylint: disable=broad-except
      return  # a dead ps: the chief's own wait raises it, naming it
