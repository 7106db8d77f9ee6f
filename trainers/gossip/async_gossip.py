"""Asynchronous gossip (--gossip_mode=async): decentralized SGD that never waits.

Each worker trains at its own pace. Every --gossip_every local steps it mixes its
parameters with the newest model it holds from each neighbour that sent a newer one
since its last mix (mixing.async_mix: x_i <- x_i + sum_j W_ij (x_j - x_i)), then
offers its own to its neighbours. The models travel as one-sided puts into slots on
the receiver's task (mailbox.py, TF's gRPC runtime); a put to a slow or stopped
neighbour holds up only the thread that makes it. This is AD-PSGD's idea (Lian et
al., 2018) with each neighbour's most recent available model (as in ADSGD).

Besides the models, each worker puts a small status vector (its step, mixes,
staleness, running loss and accuracy) into its neighbours' and worker 0's slots.
Worker 0 (the chief) keeps the job's clock from them: the job step is the workers'
mean step, so its progress points, evaluations and the example count follow the
whole job's examples (the mean step x batch x N). It evaluates its own replica at
those points, and decides the stop (target, or the example cap) for everyone by a
put into every worker's control slot; nobody waits for anybody per step.

One final agreement: every worker puts its final model and figures into the chief's
slots; the chief scores the mean of the replicas (the summary's test accuracy, as in
synchronous gossip), measures the consensus distance, writes the summary and releases
the workers.
"""

import dataclasses
import time
from typing import Sequence

import numpy as np
import tensorflow as tf

from cluster.tf_config import TaskInfo
from trainers.common import volume
from trainers.gossip import mailbox as mb
from trainers.gossip import mixing as mixing_lib
from trainers.gossip import protocol

# The wire layout: trainers/gossip/protocol.py. The final vector is the parameters, then
# a protocol.Final, then the model puts to each worker, then a 1 that says the slot was
# written.
STATUS_FIELDS = protocol.names(protocol.Status)
FINAL_FIELDS = protocol.names(protocol.Final)
CONTROL_FIELDS = protocol.names(protocol.Control)  # the chief's flags to every worker
STOP, RELEASE, GO = (protocol.index(protocol.Control, n) for n in ("stop", "release", "go"))
STATUS_INTERVAL_S = 0.02  # at most 50 status puts a second per peer
EMA = 0.05                 # the running loss/accuracy's smoothing
FINAL_TIMEOUT_S = 600.0
START_TIMEOUT_S = 300.0


@dataclasses.dataclass
class Clock:
  """One worker's running figures (what its status vector carries)."""
  step: int = 0
  mixes: int = 0            # neighbour models mixed
  staleness_sum: int = 0
  staleness_max: int = 0
  loss: float = float("nan")
  accuracy: float = float("nan")
  train_seconds: float = 0.0  # in the loop, the chief's progress points left out

  def observe(self, loss: float, accuracy: float) -> None:
    if np.isnan(self.loss):
      self.loss, self.accuracy = loss, accuracy
    else:
      self.loss += EMA * (loss - self.loss)
      self.accuracy += EMA * (accuracy - self.accuracy)

  def mixed(self, staleness: int) -> None:
    self.mixes += 1
    self.staleness_sum += staleness
    self.staleness_max = max(self.staleness_max, staleness)

  def vector(self) -> np.ndarray:
    return protocol.encode(protocol.pick(protocol.Status, self))

  @property
  def staleness_mean(self) -> float | None:
    return self.staleness_sum / self.mixes if self.mixes else None


def status_dict(vector: np.ndarray) -> dict:
  return dataclasses.asdict(protocol.decode(protocol.Status, vector))


@dataclasses.dataclass(frozen=True)
class Plan:
  """Who puts what where (pure): worker `me` of `n` puts its model to `model_to` and
  mixes the models of `model_from` (the same neighbours on a fixed graph; on the
  one-peer exponential graph, i + 2^k and i - 2^k, one a time in turn)."""
  me: int
  n: int
  model_to: tuple[int, ...]
  model_from: tuple[int, ...]
  num_params: int
  one_peer: bool = False

  @property
  def chief(self) -> bool:
    return self.me == 0

  def out_peers(self, exchange_num: int) -> tuple[int, ...]:
    """Who gets this worker's model at its exchange `exchange_num`: every neighbour,
    or (one-peer) the peer i + 2^(t mod log2 n)."""
    if not self.one_peer:
      return self.model_to
    return ((self.me + mixing_lib.one_peer_shift(self.n, exchange_num)) % self.n,)

  def weights(self, fresh: Sequence[int], w: np.ndarray) -> dict[int, float]:
    """The mixing weight of each neighbour whose newer model arrived: W_ij on a fixed
    graph; one-peer, the plain average of this model and the mean of those arrived,
    (x_i + x_j) / 2 for one."""
    if self.one_peer:
      return {j: 0.5 / len(fresh) for j in fresh}
    return {j: float(w[self.me, j]) for j in fresh}

  @property
  def sizes(self) -> dict[str, int]:
    return {mb.MODEL: self.num_params + 1, mb.STATUS: len(STATUS_FIELDS),
            mb.FINAL: self.num_params + len(FINAL_FIELDS) + self.n + 1,
            mb.CONTROL: len(CONTROL_FIELDS)}

  @property
  def status_to(self) -> tuple[int, ...]:
    """Whoever mixes this worker's models (their staleness is counted in its steps),
    and the chief (the job's clock)."""
    return tuple(sorted((set(self.model_to) | {0}) - {self.me}))

  @property
  def status_from(self) -> tuple[int, ...]:
    others = set(range(self.n)) - {self.me}
    return tuple(sorted(others if self.chief else set(self.model_from)))

  def incoming(self) -> dict:
    s = self.sizes
    out = {mb.MODEL: (self.model_from, s[mb.MODEL]), mb.STATUS: (self.status_from,
                                                                 s[mb.STATUS])}
    if self.chief:
      out[mb.FINAL] = (tuple(range(1, self.n)), s[mb.FINAL])
    else:
      out[mb.CONTROL] = ((0,), s[mb.CONTROL])
    return out

  def outgoing(self) -> dict:
    s = self.sizes
    out = {mb.MODEL: (self.model_to, s[mb.MODEL]), mb.STATUS: (self.status_to,
                                                               s[mb.STATUS])}
    if self.chief:
      out[mb.CONTROL] = (tuple(range(1, self.n)), s[mb.CONTROL])
    else:
      out[mb.FINAL] = ((0,), s[mb.FINAL])
    return out


def plan_for(me: int, n: int, topology: str, num_params: int) -> Plan:
  """Worker `me`'s Plan on `topology` (pure)."""
  if topology == mixing_lib.ONE_PEER_EXP:
    shifts = {mixing_lib.one_peer_shift(n, p) for p in range(mixing_lib.one_peer_phases(n))}
    to = tuple(sorted({(me + s) % n for s in shifts} - {me})) if n > 1 else ()
    frm = tuple(sorted({(me - s) % n for s in shifts} - {me})) if n > 1 else ()
    return Plan(me, n, to, frm, num_params, one_peer=True)
  nbrs = tuple(mixing_lib.neighbours(n, topology)[me])
  return Plan(me, n, nbrs, nbrs, num_params)


def final_vector(params: np.ndarray, test: tuple[float, float], clock: Clock,
                 status_pushes: int, control_pushes: int, model_pushes: list[int]
                 ) -> np.ndarray:
  final = protocol.Final(test_loss=test[0], test_accuracy=test[1], step=clock.step,
                         mixes=clock.mixes, staleness_sum=clock.staleness_sum,
                         staleness_max=clock.staleness_max, status_pushes=status_pushes,
                         control_pushes=control_pushes, train_seconds=clock.train_seconds)
  return np.concatenate([params, protocol.encode(final),
                         np.array(list(model_pushes) + [1.0], np.float32)])


def parse_final(vector: np.ndarray, num_params: int, n: int) -> tuple[np.ndarray, dict]:
  """(parameters, figures) of a final vector (final_vector's layout)."""
  params, rest = vector[:num_params], vector[num_params:]
  figures = dataclasses.asdict(protocol.decode(protocol.Final, rest))
  figures["model_pushes"] = [int(x) for x in rest[len(FINAL_FIELDS):len(FINAL_FIELDS) + n]]
  return params, figures


def analytic_tasks(plan_sizes: dict[str, int], figures: list[dict], plans: list[Plan]
                   ) -> dict:
  """Every put the workers counted, as bytes per task (volume.pushes_tasks)."""
  pushes = []
  for w, (fig, p) in enumerate(zip(figures, plans)):
    pushes += [(mb.MODEL, w, j, fig["model_pushes"][j]) for j in p.model_to]
    # Status puts are counted per worker in all; each went to one of status_to.
    per = fig["status_pushes"] / max(1, len(p.status_to))
    pushes += [(mb.STATUS, w, j, per) for j in p.status_to]
    if w:
      pushes.append((mb.FINAL, w, 0, 1))
    else:
      per = fig["control_pushes"] / max(1, p.n - 1)
      pushes += [(mb.CONTROL, 0, j, per) for j in range(1, p.n)]
  return volume.pushes_tasks(plan_sizes, pushes)


class Peers:
  """This worker's mailbox and its pushers (one per peer and kind)."""

  def __init__(self, task: TaskInfo, plan: Plan, w: np.ndarray, topology: str):
    """`w`: the topology's mixing matrix."""
    self.plan, self.w, self.topology = plan, w, topology
    # One worker alone has nobody to put anything to: no server, no slots.
    self.box = (mb.Mailbox({"worker": list(task.cluster["worker"])}, plan.me,
                           plan.incoming(), plan.outgoing()) if plan.n > 1 else None)
    self.models = {j: mb.Pusher(self._writer(mb.MODEL, j), f"model->{j}")
                   for j in plan.model_to}
    self.status = {j: mb.Pusher(self._writer(mb.STATUS, j), f"status->{j}",
                                min_interval_s=STATUS_INTERVAL_S) for j in plan.status_to}
    self.control = ({j: mb.Pusher(self._writer(mb.CONTROL, j), f"control->{j}")
                     for j in range(1, plan.n)} if plan.chief else {})
    self.keys = ([(mb.MODEL, j) for j in plan.model_from] +
                 [(mb.STATUS, j) for j in plan.status_from] +
                 ([] if plan.chief else [(mb.CONTROL, 0)]))

  def _writer(self, kind: str, owner: int):
    return lambda vector: self.box.write(kind, owner, vector)

  def read(self) -> tuple[dict, dict, np.ndarray | None]:
    """(neighbour -> its newest [params, step]; peer -> status; control or None)."""
    values = dict(zip(self.keys, self.box.read(self.keys)))
    models = {j: values[(mb.MODEL, j)] for j in self.plan.model_from}
    status = {j: values[(mb.STATUS, j)] for j in self.plan.status_from}
    return models, status, values.get((mb.CONTROL, 0))

  def pushes(self) -> tuple[list[int], int, int]:
    """(model puts to each worker, status puts, control puts) that landed."""
    models = [self.models[j].count() if j in self.models else 0 for j in range(self.plan.n)]
    return (models, sum(p.count() for p in self.status.values()),
            sum(p.count() for p in self.control.values()))

  def start_together(self, clock: "Clock", deadline_s: float = START_TIMEOUT_S) -> None:
    """The one start-up agreement: every worker announces step 0; the chief waits
    until every worker has, then puts "go" into every control slot; the others wait
    for it (and for their neighbours' announcements). Nobody trains while another is
    still building its model (on a busy host that can take many of the others' steps)."""
    for p in self.status.values():
      p.offer(clock.vector())
    if self.box is None:
      return
    keys = [(mb.STATUS, j) for j in self.plan.status_from]
    self._wait(lambda: [j for (_, j), v in zip(keys, self.box.read(keys)) if v[0] < 0],
               deadline_s, "did not start")
    if self.plan.chief:
      self.signal(stop=False, release=False)
    else:
      self._wait(lambda: [0] if self.box.read([(mb.CONTROL, 0)])[0][GO] < 1 else [],
                 deadline_s, "did not say go")

  @staticmethod
  def _wait(waiting, deadline_s: float, what: str) -> None:
    """Polls `waiting()` (the workers still awaited) until it is empty."""
    end = time.monotonic() + deadline_s
    while left := waiting():
      if time.monotonic() > end:
        raise RuntimeError(f"asynchronous gossip: worker(s) {left} {what} within "
                           f"{deadline_s:.0f}s")
      time.sleep(0.02)

  def stop_gossip(self) -> None:
    mb.stop_all(list(self.models.values()) + list(self.status.values()))

  def finals(self, deadline_s: float = FINAL_TIMEOUT_S) -> list[np.ndarray]:
    """The chief: every other worker's final vector, waiting until each has landed."""
    keys = [(mb.FINAL, j) for j in range(1, self.plan.n)]
    end = time.monotonic() + deadline_s
    while True:
      values = self.box.read(keys)
      missing = [j for j, v in zip(range(1, self.plan.n), values) if v[-1] != 1.0]
      if not missing:
        return values
      if time.monotonic() > end:
        raise RuntimeError(f"asynchronous gossip: no final model from worker(s) {missing} "
                           f"within {deadline_s:.0f}s")
      time.sleep(0.02)

  def put_final(self, vector: np.ndarray) -> None:
    mb.push_until_landed(lambda: self.box.write(mb.FINAL, 0, vector), FINAL_TIMEOUT_S,
                         "asynchronous gossip: final model to the chief")

  def signal(self, stop: bool, release: bool) -> None:
    """The chief: puts [stop, release, go] into every worker's control slot."""
    for p in self.control.values():
      p.offer(protocol.encode(protocol.Control(stop=float(stop), release=float(release),
                                               go=1.0)))

  def flush_control(self, deadline_s: float = FINAL_TIMEOUT_S) -> None:
    """Every control put landed, within one deadline for all of them (not each its own)."""
    end = time.monotonic() + deadline_s
    for p in self.control.values():
      p.flush(max(0.0, end - time.monotonic()))

  def wait_release(self, deadline_s: float = FINAL_TIMEOUT_S) -> None:
    self._wait(lambda: [0] if self.box.read([(mb.CONTROL, 0)])[0][RELEASE] < 1 else [],
               deadline_s, "did not release this worker")

  def close(self) -> None:
    # By now the counts were read (or the run failed): a put still in flight to a
    # stopped peer is left to its daemon thread.
    mb.stop_all([*self.control.values(), *self.models.values(), *self.status.values()],
                timeout_s=1.0)
    if self.box:
      self.box.close()


@dataclasses.dataclass
class _Window:
  """The chief's own loss/accuracy since its last progress point."""
  loss: float = 0.0
  acc: float = 0.0
  count: int = 0

  def add(self, loss: float, acc: float) -> None:
    self.loss, self.acc, self.count = self.loss + loss, self.acc + acc, self.count + 1

  def mean(self) -> tuple[float, float]:
    return (self.loss / self.count, self.acc / self.count) if self.count else (
        float("nan"), float("nan"))


def job_step(own_step: int, status: dict, n: int) -> int:
  """The job's clock on the chief: the workers' mean step (peers as last announced)."""
  return (own_step + sum(int(v[0]) for v in status.values() if v[0] >= 0)) // n


def heard_step(own_step: int, status: dict) -> int:
  """This worker's estimate of the job's clock: the mean step of itself and the peers
  it hears from (the chief hears from every worker: exact)."""
  steps = [own_step] + [int(v[0]) for v in status.values() if v[0] >= 0]
  return sum(steps) // len(steps)


def train(run_, worker, peers: Peers, batches, gossip_every: int, total_steps: int):
  """One worker's loop; returns its Clock. The chief drives the progress points and
  the stop; the others train until its control slot says stop (or, should the chief
  never say, the whole job's steps)."""
  plan, clock = peers.plan, Clock()
  last_mixed = {j: -1.0 for j in plan.model_from}
  progress = run_.progress if plan.chief else None
  chunks = iter(run_.schedule(0)) if plan.chief else None
  chunk = next(chunks, None) if chunks else None
  window, last, status = _Window(), (float("nan"), float("nan")), {}
  peers.start_together(clock)
  if progress:
    progress.start_epoch()
  started = time.perf_counter()
  while True:
    x, y = next(batches)
    loss, acc = (float(v) for v in worker.local_step(x, y))
    clock.step += 1
    clock.observe(loss, acc), window.add(loss, acc)
    if clock.step == 1 and progress:
      progress.first_step(1)
    control = None
    if plan.n > 1 and clock.step % gossip_every == 0:
      models, status, control = peers.read()
      # The learning-rate schedule spans the job's steps: it follows the job's clock,
      # not this worker's own count (a fast worker would run past its end, at rate 0).
      worker.optimizer.iterations.assign(heard_step(clock.step, status))
      fresh = {j: v for j, v in models.items() if v[-1] > last_mixed[j]}
      if fresh:
        for j, v in fresh.items():
          clock.mixed(mixing_lib.staleness(status[j][0], v[-1]))
          last_mixed[j] = v[-1]
        worker.set_flat(mixing_lib.async_mix(worker.get_flat(),
                                             {j: v[:-1] for j, v in fresh.items()},
                                             plan.weights(sorted(fresh), peers.w)))
      own = np.append(worker.get_flat(), np.float32(clock.step))
      for j in plan.out_peers(clock.step // gossip_every):
        peers.models[j].offer(own)
    clock.train_seconds = time.perf_counter() - started
    run_.maybe_fail(clock.step)
    for p in peers.status.values():
      p.offer(clock.vector())
    if not plan.chief:
      if (control is not None and control[STOP] >= 1) or clock.step >= total_steps * plan.n:
        return clock
      continue
    # The chief: progress points on the job's clock, the stop for everyone.
    stop = False
    while chunk is not None and job_step(clock.step, status, plan.n) >= chunk.end:
      t = time.perf_counter()
      last, stop = _progress_point(run_, worker, chunk, window, clock, status, last)
      started += time.perf_counter() - t
      window = _Window()
      chunk = None if stop else next(chunks, None)
      if chunk is not None and chunk.opens_epoch:
        progress.start_epoch()
    if stop or chunk is None:
      peers.signal(stop=True, release=False)
      return clock


def _progress_point(run_, worker, chunk, window: _Window, clock: Clock, status: dict,
                    last: tuple[float, float]):
  """The chief at a progress point of the job's clock: its line and record, and the
  evaluation of its own replica when due. Returns ((loss, acc), stop). The others'
  steps can carry the job's clock past more than one point during one of the chief's
  steps: a point with no step of the chief's own repeats its last loss and accuracy."""
  progress = run_.progress
  last = window.mean() if window.count else last
  peers_status = {j: status_dict(v) for j, v in sorted(status.items())}
  steps = [clock.step] + [int(s["step"]) for s in peers_status.values()]
  progress.step(chunk.epoch, chunk.step_in_epoch, chunk.end, *last,
                staleness_mean=clock.staleness_mean or 0.0,
                staleness_max=float(clock.staleness_max),
                worker_steps=steps,
                worker_staleness_mean=[clock.staleness_mean] + [
                    s["staleness_sum"] / s["mixes"] if s["mixes"] > 0 else None
                    for s in peers_status.values()],
                worker_loss=[clock.loss] + [s["loss"] for s in peers_status.values()])
  evaluate = run_.evaluator(worker.model.get_weights)
  if chunk.evaluates:
    progress.evaluate(chunk.epoch, chunk.step_in_epoch, chunk.end, evaluate)
  stop = chunk.evaluates and progress.should_stop
  if chunk.closes_epoch or stop:
    progress.end_epoch(chunk.epoch, chunk.end, *last, None if stop else evaluate,
                       steps_done=chunk.step_in_epoch)
    stop = stop or progress.should_stop
  return last, stop


def finish(run_, worker, peers: Peers, clock: Clock) -> dict | None:
  """The final agreement. Every worker scores its own replica; the others put their
  final model into the chief's slots and wait to be released; the chief gathers them,
  scores the mean replica, writes the summary, then releases everyone. Returns the
  summary's fields (the chief) or None."""
  plan = peers.plan
  peers.stop_gossip()
  params = worker.get_flat()
  test = run_.score(worker.model.get_weights())
  models, status_pushes, control_pushes = peers.pushes()
  mine = final_vector(params, test, clock, status_pushes, control_pushes, models)
  if not plan.chief:
    peers.put_final(mine)
    peers.wait_release()
    return None
  finals = [mine] + (peers.finals() if plan.n > 1 else [])
  parsed = [parse_final(v, plan.num_params, plan.n) for v in finals]
  replicas = np.stack([p for p, _ in parsed]).astype(np.float64)
  figures = [f for _, f in parsed]
  plans = [plan_for(w, plan.n, peers.topology, plan.num_params) for w in range(plan.n)]
  by_task = analytic_tasks(plan.sizes, figures, plans)
  mixes = sum(f["mixes"] for f in figures)
  return {
      "mean_replica": worker.weights_of(replicas.mean(axis=0)),
      "consensus_distance": mixing_lib.consensus_distance(replicas),
      "worker_steps": [int(f["step"]) for f in figures],
      "worker_step_time_s": [f["train_seconds"] / max(1.0, f["step"]) for f in figures],
      "worker_test_accuracy": [f["test_accuracy"] for f in figures],
      "worker_test_loss": [f["test_loss"] for f in figures],
      "worker_mixes": [int(f["mixes"]) for f in figures],
      "worker_staleness_mean": [f["staleness_sum"] / f["mixes"] if f["mixes"] else None
                                for f in figures],
      "worker_staleness_max": [int(f["staleness_max"]) for f in figures],
      "staleness_mean": (sum(f["staleness_sum"] for f in figures) / mixes) if mixes else None,
      "staleness_max": max(int(f["staleness_max"]) for f in figures),
      "mixes": int(mixes),
      "model_pushes": int(sum(sum(f["model_pushes"]) for f in figures)),
      "bytes_analytic_by_task": by_task,
      "bytes_analytic_per_worker": float(np.mean([v["sent"] for v in by_task.values()]))
                                   if by_task else 0.0,
  }


def release(peers: Peers) -> None:
  """The chief, after its summary: every worker may exit now."""
  peers.signal(stop=True, release=True)
  peers.flush_control()
  peers.close()
