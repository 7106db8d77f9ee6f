"""Decentralized gossip training (D-PSGD, Lian et al. 2017): no server, no global all-reduce.

Each of N workers keeps its own replica, trains on its own shard and, every
--gossip_every local steps, replaces its parameters by the weighted average of its
own and its neighbours' (x_i <- sum_j W_ij x_j, W symmetric and doubly stochastic).
The exchange (exchange.py) is a tf.function of collective gathers over
neighbour pairs, so each worker sends only to its neighbours; the topologies and
mixing weights are in mixing.py.

    python -m launch.local --approach=gossip --num_workers=4 -- --topology=ring

--exchange=gradients mixes gradients instead of parameters; with --topology=full
every worker applies the average of all workers' gradients (the seed's scheme) and
the replicas stay identical.
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from cluster.errors import ConfigError
from cluster.tf_config import TaskInfo
from trainers.common import data, entry, model, session, volume
from trainers.gossip import async_gossip
from trainers.gossip import config as approach_config
from trainers.gossip import mixing as mixing_lib
from trainers.gossip.config import APPROACH
from trainers.gossip.exchange import INSTANCE_GRADS, INSTANCE_PARAMS, Flat, NeighbourExchange

GossipConfig = approach_config.Config
# Call sites of NeighbourExchange.gather_all (one collective instance each).
(_MEASURE_REPLICAS, _MEASURE_METRICS, _MEASURE_TEST, _BARRIER, _MEASURE_RESUME,
 _AGREE_STOP) = range(6)


class GossipWorker:
  """This worker's replica, its optimizer, and its steps: local SGD, gradient gossip
  (mix the gradients, then update) and parameter gossip (mix the parameters)."""

  def __init__(self, run_: session.Run, exchange: NeighbourExchange, total_steps: int):
    self.exchange = exchange
    self.model = run_.model_fn()
    self.model.build((None,) + data.IMAGE_SHAPE)
    self.optimizer = run_.optimizer_fn(total_steps)
    self.optimizer.build(self.model.trainable_variables)
    self.variables = self.model.trainable_variables
    self.flat = Flat(self.variables)
    self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                          step=self.step_var)
    # One traced exchange per phase of a time-varying topology (one_peer_exp: the
    # peer changes with the step); static topologies have one.
    self._param_gossip = [tf.function(functools.partial(self._param_gossip_fn, p))
                          for p in range(exchange.phases)]
    self._gradient_gossip = [tf.function(functools.partial(self._gradient_gossip_fn, p))
                             for p in range(exchange.phases)]

  def _gradients(self, x, y):
    with tf.GradientTape() as tape:
      logits = self.model(x, training=True)
      loss = model.mean_loss(y, logits)
    acc = model.correct(y, logits) / tf.cast(tf.size(y), tf.float32)
    return tape.gradient(loss, self.variables), loss, acc

  @tf.function
  def local_step(self, x, y):
    grads, loss, acc = self._gradients(x, y)
    self.optimizer.apply_gradients(zip(grads, self.variables))
    return loss, acc

  def gradient_gossip_step(self, x, y, exchange_num: int = 0):
    return self._gradient_gossip[exchange_num % self.exchange.phases](x, y)

  def param_gossip(self, exchange_num: int = 0):
    return self._param_gossip[exchange_num % self.exchange.phases]()

  def _gradient_gossip_fn(self, phase: int, x, y):
    grads, loss, acc = self._gradients(x, y)
    # Gossip: the update uses the neighbours' mixed gradients, not this worker's own.
    mixed = self.exchange.mix(self.flat.flatten(grads), INSTANCE_GRADS, phase)
    self.optimizer.apply_gradients(zip(self.flat.unflatten(mixed), self.variables))
    return loss, acc

  def _param_gossip_fn(self, phase: int):
    # D-PSGD: x_i <- sum_j W_ij x_j with the neighbours' parameters.
    mixed = self.exchange.mix(self.flat.flatten(self.variables), INSTANCE_PARAMS, phase)
    for v, new in zip(self.variables, self.flat.unflatten(mixed)):
      v.assign(new)

  def get_flat(self) -> np.ndarray:
    """This replica's parameters as one float32 vector."""
    return self.flat.flatten(self.variables).numpy()

  def set_flat(self, vector: np.ndarray) -> None:
    for v, new in zip(self.variables, self.flat.unflatten(tf.constant(vector, tf.float32))):
      v.assign(new)

  def weights_of(self, vector: np.ndarray) -> list[np.ndarray]:
    """A flat parameter vector as model weights."""
    return [t.numpy() for t in self.flat.unflatten(tf.constant(vector, tf.float32))]

  @tf.function
  def gather_all(self, vector, key: int):
    return self.exchange.gather_all(vector, key)

  def measure(self) -> tuple[float, np.ndarray]:
    """(consensus distance, every replica as rows); a collective: all workers call it."""
    replicas = self.gather_all(self.flat.flatten(self.variables), _MEASURE_REPLICAS)
    replicas = replicas.numpy().astype(np.float64)
    return mixing_lib.consensus_distance(replicas), replicas

  def mean_weights(self, replicas: np.ndarray) -> list[np.ndarray]:
    """x-bar, the average of every replica, as model weights."""
    return self.weights_of(replicas.mean(axis=0))

  def agree(self, stop: bool) -> bool:
    """True on every worker if any says stop (the chief, which alone evaluates); a
    collective: all workers call it at the same step."""
    return bool(self.gather_all(tf.constant([float(stop)]), _AGREE_STOP).numpy().max() > 0)

  def restore_common(self, manager: tf.train.CheckpointManager, task_name: str) -> str | None:
    """--resume: a worker may have died after some others saved an epoch and before
    it did, so all restore the newest step every worker has (max_to_keep=2 covers
    it), or all start afresh. Returns what was restored (None: nothing)."""
    saved = {int(p.rpartition("-")[2]): p for p in manager.checkpoints}
    mine = float(max(saved, default=0))
    common = int(self.gather_all(tf.constant([mine]), _MEASURE_RESUME).numpy().min())
    if common == 0:
      return None
    if common not in saved:
      raise ConfigError(f"{task_name} has no checkpoint of step {common} in "
                        f"{manager.directory} (has {sorted(saved)}); cannot resume")
    self.checkpoint.restore(saved[common])
    return f"{saved[common]} at step {common}"


@dataclasses.dataclass
class _Tally:
  """Local loss/accuracy since the last progress point, and the exchanges so far."""
  loss: float = 0.0
  acc: float = 0.0
  count: int = 0
  exchanges: int = 0

  def add(self, loss, acc) -> None:
    self.loss, self.acc, self.count = self.loss + float(loss), self.acc + float(acc), \
        self.count + 1


def train(run_: session.Run, worker: GossipWorker, config: GossipConfig, batches,
          start_step: int, manager: tf.train.CheckpointManager) -> tuple[int, int, float]:
  """The D-PSGD loop. Returns (final step, exchanges, consensus distance)."""
  n, progress = run_.num_workers, run_.progress
  tally, step, last = _Tally(), start_step, (float("nan"), float("nan"))
  distance, _ = worker.measure()
  run_.writer.log("step", step, consensus_distance=distance, bytes_sent_per_worker=0.0)
  for chunk in run_.schedule(start_step):
    if chunk.opens_epoch:
      progress.start_epoch()
    for step in range(chunk.start + 1, chunk.end + 1):
      x, y = next(batches)
      gossip_now = n > 1 and step % config.gossip_every == 0
      exchange_num = step // config.gossip_every  # picks one_peer_exp's peer
      if gossip_now and config.exchange == "gradients":
        tally.add(*worker.gradient_gossip_step(x, y, exchange_num))
      else:
        tally.add(*worker.local_step(x, y))
        if gossip_now:
          worker.param_gossip(exchange_num)
      tally.exchanges += int(gossip_now)
      if step == start_step + 1:
        progress.first_step(step)
      worker.step_var.assign(step)
      run_.maybe_fail(step)
    per_worker = worker.gather_all(tf.constant([tally.loss / tally.count,
                                                tally.acc / tally.count]),
                                   _MEASURE_METRICS).numpy()
    distance, replicas = worker.measure()
    last = (float(per_worker[:, 0].mean()), float(per_worker[:, 1].mean()))
    progress.step(chunk.epoch, chunk.step_in_epoch, step, *last, consensus_distance=distance,
                  bytes_analytic_per_worker=volume.gossip(worker.flat.size,
                                                          worker.exchange.degree,
                                                          tally.exchanges),
                  worker_loss=per_worker[:, 0].round(5).tolist(),
                  worker_accuracy=per_worker[:, 1].round(5).tolist())
    tally = _Tally(exchanges=tally.exchanges)
    # The chief scores x-bar, the average of the replicas.
    evaluate = (run_.evaluator(lambda r=replicas: worker.mean_weights(r))
                if run_.task.is_chief else None)
    if chunk.evaluates and evaluate:
      progress.evaluate(chunk.epoch, chunk.step_in_epoch, step, evaluate)
    # Stop at the target: decided at a mid-epoch evaluation (the epoch is then cut
    # short, already evaluated) or after the epoch's own evaluation.
    stop = chunk.evaluates and _agreed_stop(progress, worker)
    if chunk.closes_epoch or stop:
      progress.end_epoch(chunk.epoch, step, *last, None if stop else evaluate,
                         steps_done=chunk.step_in_epoch, consensus_distance=distance)
      manager.save(checkpoint_number=step)
      stop = stop or _agreed_stop(progress, worker)
    if stop:
      break
  return step, tally.exchanges, distance


def _agreed_stop(progress, worker: GossipWorker) -> bool:
  """Whether every worker stops here (a collective when stopping at a target)."""
  return progress.target.stop and worker.agree(progress.should_stop)


def run(config: GossipConfig, task: TaskInfo, flag_values: dict | None = None,
        datasets=None) -> dict:
  """Trains this worker's replica with its neighbours; returns the summary."""
  if task.task_type != "worker":
    raise ConfigError(f"approach gossip runs worker tasks only, not {task.name}")
  cfg, n, me = config.train, max(1, task.num_workers), task.task_index
  if config.is_async:
    return run_async(config, task, flag_values, datasets)
  if n > 1:
    # Brings up this task's gRPC server and TF's collective runtime for the
    # cluster in TF_CONFIG; training itself does not use the strategy.
    tf.distribute.MultiWorkerMirroredStrategy()
  config.check_cluster(n)
  exchange = NeighbourExchange(me, n, config.topology, config.mixing)
  label = f"{APPROACH}/{config.topology}"
  with session.open_run(cfg, task, label, n, flag_values, datasets) as run_:
    steps_per_epoch, batches, worker = _replica(run_, config, exchange)
    manager = run_.checkpoint_manager(worker.checkpoint, f"worker_{me}")
    run_.resume(lambda: worker.restore_common(manager, task.name), manager.directory,
                every_task=True)
    payload = exchange.payload_bytes(worker.flat.size)
    run_.start_progress(steps_per_epoch, cfg.batch_size * n)
    run_.announce(f"{n} worker(s), topology {config.topology} ({config.mixing}), degree "
                  f"{exchange.degree}, spectral gap {mixing_lib.spectral_gap(exchange.w):.3f},"
                  f" exchange {config.exchange} every {config.gossip_every} step(s), "
                  f"{payload} B sent per worker per exchange; {steps_per_epoch} steps/epoch "
                  f"x {cfg.epochs}, model {cfg.model}, dataset {cfg.dataset}")
    step, exchanges, distance = train(run_, worker, config, batches,
                                      int(worker.step_var.numpy()), manager)
    # Every worker scores its own replica; the chief has scored x-bar (test_accuracy).
    own = worker.gather_all(tf.constant(run_.score(worker.model.get_weights()), tf.float32),
                            _MEASURE_TEST).numpy()
    summary = run_.finish(
        topology=config.topology, mixing=config.mixing, exchange=config.exchange,
        gossip_every=config.gossip_every, degree=exchange.degree,
        spectral_gap=mixing_lib.spectral_gap(exchange.w), epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch, steps=step, batch_size_per_worker=cfg.batch_size,
        consensus_distance=distance, worker_test_accuracy=own[:, 1].tolist(),
        worker_test_loss=own[:, 0].tolist(),
        bytes_analytic_per_worker=volume.gossip(worker.flat.size, exchange.degree, exchanges),
        bytes_analytic_by_task=volume.gossip_tasks(worker.flat.size, exchange.degrees,
                                                   exchanges),
        bytes_per_exchange_per_worker=payload, exchanges=exchanges,
        notes=f"consensus distance {distance:.2e}, degree {exchange.degree}")
    # Final barrier: nobody exits (taking its collective service endpoint with it)
    # while another worker still needs it.
    worker.gather_all(tf.constant([0.0]), _BARRIER)
    return summary


def _replica(run_: session.Run, config: GossipConfig, exchange: NeighbourExchange):
  """(steps per epoch, this worker's batches, its GossipWorker): what both modes
  train with. Identical initial replicas (D-PSGD's usual start) unless asked otherwise."""
  cfg, me, n = config.train, exchange.me, exchange.n
  steps_per_epoch = run_.steps_per_epoch(cfg.batch_size * n)
  batches = iter(data.train_dataset(run_.shard(me, n), cfg.batch_size, seed=cfg.seed + me))
  if config.independent_init:
    tf.keras.utils.set_random_seed(cfg.seed + me)
  return steps_per_epoch, batches, GossipWorker(run_, exchange, steps_per_epoch * cfg.epochs)


def run_async(config: GossipConfig, task: TaskInfo, flag_values: dict | None = None,
              datasets=None) -> dict:
  """--gossip_mode=async (async_gossip.py): no collective, no barrier per step; the
  exchange is one-sided puts through this task's own gRPC server."""
  cfg, n, me = config.train, max(1, task.num_workers), task.task_index
  config.check_cluster(n)
  exchange = NeighbourExchange(me, n, config.topology, config.mixing)
  label = f"{APPROACH}/{config.topology}/async"
  with session.open_run(cfg, task, label, n, flag_values, datasets) as run_:
    steps_per_epoch, batches, worker = _replica(run_, config, exchange)
    total = steps_per_epoch * cfg.epochs
    plan = async_gossip.plan_for(me, n, config.topology, worker.flat.size)
    # W of a fixed graph (one-peer mixes by its own rule: Plan.weights).
    peers = async_gossip.Peers(task, plan, exchange.w, config.topology)
    try:
      run_.start_progress(steps_per_epoch, cfg.batch_size * n)
      run_.announce(f"{n} worker(s), asynchronous gossip, topology {config.topology} "
                    f"({config.mixing}), degree {exchange.degree}, every "
                    f"{config.gossip_every} step(s), {volume.model_bytes(plan.sizes['model'])}"
                    f" B per model put; {steps_per_epoch} job steps/epoch x {cfg.epochs}, "
                    f"model {cfg.model}, dataset {cfg.dataset}")
      clock = async_gossip.train(run_, worker, peers, batches, config.gossip_every, total)
      fields = async_gossip.finish(run_, worker, peers, clock)
      if fields is None:  # released by the chief, which wrote the summary
        return {}
      test = run_.score(fields.pop("mean_replica"))
      progress = run_.progress
      summary = run_.finish(
          topology=config.topology, mixing=config.mixing, exchange=config.exchange,
          gossip_mode=config.gossip_mode, gossip_every=config.gossip_every,
          degree=exchange.degree, spectral_gap=mixing_lib.spectral_gap(exchange.w),
          epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, steps=clock.step,
          batch_size_per_worker=cfg.batch_size,
          test_loss=test[0], test_accuracy=test[1],
          chief_replica_test_accuracy=progress.last_test[1],
          examples_processed=sum(fields["worker_steps"]) * cfg.batch_size,
          notes=f"asynchronous; consensus distance {fields['consensus_distance']:.2e}, "
                f"staleness mean {fields['staleness_mean'] or 0:.1f} max "
                f"{fields['staleness_max']} steps",
          **fields)
      async_gossip.release(peers)
      return summary
    finally:
      peers.close()


def run_main(argv=None) -> int:
  return entry.trainer_main(approach_config, run, argv)
