"""Asynchronous gossip's transport: slots on each worker's own task that its peers write
into, through TensorFlow's gRPC runtime, without a barrier and without waiting.

Every worker runs a `tf.distribute.Server` for its task of TF_CONFIG's cluster and
creates resource variables ("slots") on its own device. A peer writes one with an
`AssignVariableOp` placed on the owner's device (the resource found by its shared
name), run through a `tf.compat.v1.Session` on the writer's own server: a one-sided
put, as in BlueFog's window puts. A worker reads only its own slots (local), so a
slow or stopped peer blocks nothing but the thread that writes to it. An assign
replaces the slot's tensor under the variable's lock, so a reader sees either the
old vector or the new one, never a torn mix.

The graph is private (a `tf.Graph`), so the trainer itself stays eager.

Slot kinds (each a float32 vector; names are "<kind>_<owner>_from_<writer>"):
  model    a neighbour's latest parameters and the step they are from ([P + 1])
  status   a peer's clock and running statistics ([STATUS])
  final    a worker's final parameters and figures, written to the chief once ([P + F])
  control  written by the chief: [stop, release, go] flags, one slot per worker; each
           put is an elementwise max (ResourceScatterMax), so flags only rise

A slot other than control is not initialised by its owner: its server listens before
the slots exist, and a peer's first put may land before the owner's initialiser would
run (AssignVariableOp creates a missing variable), so an initialiser would overwrite
it. Reads give EMPTY for a slot nobody wrote yet.

Writers keep pushing the newest vector they were given; one thread per destination
and kind (`Pusher`), so one peer's slowness never delays a push to another.
"""

import socket
import threading
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

MODEL, STATUS, FINAL, CONTROL = "model", "status", "final", "control"
EMPTY = -1.0  # a slot's last element until first written: "nothing yet"
# Slots whose fields only ever rise (the chief's stop/release/go flags): written with an
# elementwise max on the owner, so a put that lands late cannot undo a newer one.
MONOTONIC = frozenset({CONTROL})
WRITE_TIMEOUT_S = 20.0  # one put, even a model over a thin link (0.74 MB at 10 Mbit/s: 0.6 s)


def device(task: int) -> str:
  return f"/job:worker/replica:0/task:{task}/device:CPU:0"


def slot_name(kind: str, owner: int, writer: int) -> str:
  return f"tfdist_{kind}_{owner}_from_{writer}"


class Mailbox:
  """This worker's slots and its writes into its peers' slots.

  `incoming`: kind -> (writers, size) of the slots on this task;
  `outgoing`: kind -> (owners, size) of the slots this worker writes.
  """

  def __init__(self, cluster: dict, me: int, incoming: dict, outgoing: dict,
               server: tf.distribute.Server | None = None):
    self.me = me
    self.addresses = list(cluster["worker"])
    self._listening: set[int] = set()
    self.server = server or tf.distribute.Server(
        tf.train.ClusterSpec(cluster), job_name="worker", task_index=me, start=True)
    # A session sees only the tasks in its device filters (and places its whole
    # graph on them), and its first run asks each for its devices. So the slots and
    # reads are a graph and session of their own, needing no peer at all, and the
    # writes to each peer another: a peer not up yet, or stopped, holds up nothing but
    # the writes to it.
    self._reads, self._writes, inits = {}, {}, []
    local = tf.Graph()
    with local.as_default(), tf.device(device(me)):
      for kind, (writers, size) in incoming.items():
        for w in writers:
          handle = tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[size],
                                          shared_name=slot_name(kind, me, w))
          if kind in MONOTONIC:
            # Written with an elementwise max, which needs the slot to exist: created
            # here (a put before this fails and its pusher tries again).
            inits.append(tf.raw_ops.AssignVariableOp(
                resource=handle, value=tf.fill([size], EMPTY)))
          # Every other slot is never initialised by its owner: the server listens
          # before this runs, and a peer's put (an AssignVariableOp, which creates a
          # missing variable) may land first; an initialiser would overwrite it. A
          # slot nobody wrote yet reads as EMPTY.
          self._reads[(kind, w)] = tf.cond(
              tf.raw_ops.VarIsInitializedOp(resource=handle),
              lambda h=handle: tf.raw_ops.ReadVariableOp(resource=h, dtype=tf.float32),
              lambda n=size: tf.fill([n], EMPTY))
    self.local = self._session(local, me)
    if inits:
      self.local.run(inits)
    graphs: dict[int, tf.Graph] = {}
    for kind, (owners, size) in outgoing.items():
      for o in owners:
        with graphs.setdefault(o, tf.Graph()).as_default(), tf.device(device(o)):
          handle = tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[size],
                                          shared_name=slot_name(kind, o, me))
          value = tf.compat.v1.placeholder(tf.float32, [size])
          if kind in MONOTONIC:  # a late put can never lower a flag a newer one raised
            op = tf.raw_ops.ResourceScatterMax(resource=handle, indices=tf.range(size),
                                               updates=value)
          else:
            op = tf.raw_ops.AssignVariableOp(resource=handle, value=value)
          self._writes[(kind, o)] = (op, value)
    self._remote = {o: self._session(g, me, o) for o, g in graphs.items()}

  def _session(self, graph: tf.Graph, *tasks: int) -> tf.compat.v1.Session:
    return tf.compat.v1.Session(self.server.target, graph=graph,
                                config=tf.compat.v1.ConfigProto(
                                    device_filters=[f"/job:worker/task:{t}" for t in tasks]))

  def read(self, keys: Sequence[tuple[str, int]], attempts: int = 10) -> list[np.ndarray]:
    """This task's slots (kind, writer), in one local run. The run goes through the
    task's own gRPC master; on a crowded host its call to the local worker can time
    out and be retried by gRPC, which TF refuses as a duplicate (AbortedError "The same
    RunGraph request was received twice", seen with 8 workers on 2 cores). A read
    changes nothing, so it is simply made again."""
    fetches = [self._reads[k] for k in keys]
    for attempt in range(attempts):
      try:
        return self.local.run(fetches)
      except (tf.errors.AbortedError, tf.errors.UnavailableError):
        if attempt == attempts - 1:
          raise
        time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")

  def write(self, kind: str, owner: int, vector: np.ndarray) -> None:
    """Puts `vector` into `owner`'s slot from this worker; blocks until it is there."""
    self._await_listening(owner)
    op, value = self._writes[(kind, owner)]
    # A put that never returns (seen: a first put to a peer busy loading, 8 workers on
    # 2 cores) fails after WRITE_TIMEOUT_S instead, and its pusher tries again.
    self._remote[owner].run(op, {value: vector}, options=tf.compat.v1.RunOptions(
        timeout_in_ms=int(1000 * WRITE_TIMEOUT_S)))

  def _await_listening(self, owner: int, deadline_s: float = 600.0) -> None:
    """Before the first put to a peer: wait until its server accepts connections. A
    gRPC channel whose first attempts fail backs off (to minutes), so a put tried
    while the peer is still importing TF could stall long after the peer is up (seen
    with 8 workers starting on 2 cores)."""
    if owner in self._listening:
      return
    host, port = self.addresses[owner].rsplit(":", 1)
    end = time.monotonic() + deadline_s
    while True:
      try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
        self._listening.add(owner)
        return
      except OSError:
        if time.monotonic() > end:
          raise RuntimeError(f"worker {owner} ({self.addresses[owner]}) not listening "
                             f"within {deadline_s:.0f}s") from None
        time.sleep(0.1)

  def close(self) -> None:
    for s in [self.local, *self._remote.values()]:
      s.close()


class Pusher:
  """Keeps one peer's slot up to date with the newest vector `offer`ed, from a thread of
  its own: a push that is slow (thin link, slow peer) skips the vectors offered
  meanwhile, and delays only itself. Counts the pushes that landed."""

  def __init__(self, write: Callable[[np.ndarray], None], name: str,
               min_interval_s: float = 0.0, retry_s: float = 0.2):
    self._write, self._min_interval, self._retry = write, min_interval_s, retry_s
    self._lock = threading.Condition()
    self._latest: np.ndarray | None = None
    self._version = self._sent_version = 0
    self._stopped = False
    self.pushes = 0
    self.errors = 0  # failed puts tried again (peer not up yet, a timeout)
    self.last_error = ""
    self.failure: BaseException | None = None  # what ended the thread, if not stop()
    self.name = name
    self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
    self._thread.start()

  def offer(self, vector: np.ndarray) -> None:
    """Hands the newest vector to the thread; raises what ended the thread, if anything
    did, so the job fails at once with the error instead of at a deadline."""
    self.check()
    with self._lock:
      self._latest, self._version = vector, self._version + 1
      self._lock.notify()

  def check(self) -> None:
    if self.failure is not None:
      raise RuntimeError(f"{self._thread.name}: pusher failed: "
                         f"{type(self.failure).__name__}: {self.failure}") from self.failure

  def _loop(self) -> None:
    try:
      self._push_while_offered()
    except BaseException as e:  # pylint: disable=broad-except  # heard by offer/flush
      with self._lock:
        self.failure = e
        self._lock.notify_all()

  def _push_while_offered(self) -> None:
    while True:
      with self._lock:
        while not self._stopped and self._version == self._sent_version:
          self._lock.wait()
        if self._stopped:
          return
        vector, version = self._latest, self._version
      started = time.monotonic()
      try:
        self._write(vector)
      except (tf.errors.OpError, RuntimeError) as e:  # peer not up yet, or gone
        with self._lock:
          self.errors += 1
          self.last_error = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        time.sleep(self._retry)
        continue
      with self._lock:
        self.pushes += 1
        self._sent_version = version
        self._lock.notify_all()
      pause = self._min_interval - (time.monotonic() - started)
      if pause > 0:
        time.sleep(pause)

  def flush(self, deadline_s: float) -> None:
    """Waits until the newest vector offered has landed; RuntimeError after
    `deadline_s`."""
    end = time.monotonic() + deadline_s
    with self._lock:
      while self._sent_version != self._version:
        self.check()
        left = end - time.monotonic()
        if left <= 0:
          raise RuntimeError(f"{self._thread.name}: not delivered within {deadline_s:.0f}s"
                             + (f" ({self.last_error})" if self.last_error else ""))
        self._lock.wait(min(left, 0.1))

  def request_stop(self) -> None:
    with self._lock:
      self._stopped = True
      self._lock.notify()

  def join(self, timeout_s: float) -> bool:
    """Waits for a put in flight to land or time out (one put is bounded by
    WRITE_TIMEOUT_S), so `pushes` is final; False if the thread is still in a put
    after `timeout_s` (its peer stopped answering: a daemon thread, left)."""
    self._thread.join(max(0.0, timeout_s))
    return not self._thread.is_alive()

  def stop(self, timeout_s: float = WRITE_TIMEOUT_S + 1.0) -> bool:
    """Stops pushing (see join)."""
    self.request_stop()
    return self.join(timeout_s)

  def count(self) -> int:
    """Puts that landed (read under the pusher's lock)."""
    with self._lock:
      return self.pushes


def stop_all(pushers, timeout_s: float = WRITE_TIMEOUT_S + 1.0) -> list[str]:
  """Stops every pusher, waiting for their puts in flight within one deadline for all;
  returns the names of those still in a put."""
  pushers = list(pushers)
  for p in pushers:
    p.request_stop()
  end = time.monotonic() + timeout_s
  return [p.name for p in pushers if not p.join(end - time.monotonic())]


def push_until_landed(write: Callable[[], None], deadline_s: float, what: str,
                      retry_s: float = 0.2) -> None:
  """One write that must land (the final agreement): retried while the peer comes
  up, RuntimeError after `deadline_s`."""
  end = time.monotonic() + deadline_s
  while True:
    try:
      write()
      return
    except tf.errors.OpError as e:
      if time.monotonic() > end:
        raise RuntimeError(f"{what}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                           ) from e
      time.sleep(retry_s)
