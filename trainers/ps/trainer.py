"""Centralized parameter server: ParameterServerStrategy + ClusterCoordinator.

`ps` tasks hold the variables (partitioned across them when there are several),
`worker` tasks compute, and the `chief` runs this training loop as coordinator,
scheduling closures onto whichever worker is free. Started by the launcher:

    python -m launch.local --approach=ps --num_workers=2 --num_ps=1 -- --ps_mode=async

--ps_mode=async (TF's native behaviour): each worker step applies its update to the
  variables on the ps as soon as it is computed; workers never wait for each other.
--ps_mode=sync (the seed's semantics): each global step, N gradients (one per worker
  batch) are added into accumulators on the ps, then one optimizer step is applied with
  their mean (or sum, --sync_aggregation) and every worker continues from the new model.
  With --steps_per_closure K > 1 (sync's default is 1) the chief schedules N closures of
  K steps at once, which meet at a barrier on the ps every step (barrier.py); a lost
  worker breaks the barrier and the rest of the run takes one step a closure.

A worker that dies mid-run is tolerated: the coordinator re-schedules its closures on
the remaining workers (and rebuilds its dataset if it comes back). A ps or chief death
ends the run. Checkpoints go to <run_dir>/ckpt every epoch; --resume continues.
The aggregation math is in aggregation.py; the server tasks in servers.py.
"""

import os
import sys
import time

import numpy as np
import tensorflow as tf

from cluster.errors import ConfigError
from cluster.tf_config import TaskInfo, host_of, task_name, task_names
from trainers.common import data, entry, model, profiling, session, volume
from trainers.common import server as server_lib
from trainers.ps import aggregation, barrier, servers
from trainers.ps import config as approach_config
from trainers.ps.config import APPROACH

PSConfig = approach_config.Config


def make_strategy(config: PSConfig, num_ps: int):
  """PSS from TF_CONFIG; variables partitioned over the ps tasks when there are several."""
  partitioner = (tf.distribute.experimental.partitioners.MinSizePartitioner(
      min_shard_bytes=config.min_shard_bytes, max_shards=num_ps) if num_ps > 1 else None)
  return tf.distribute.experimental.ParameterServerStrategy(
      tf.distribute.cluster_resolver.TFConfigClusterResolver(),
      variable_partitioner=partitioner)


class Replica:
  """The model, optimizer, metrics and (sync) accumulators, all placed on the ps by
  the strategy, and the closures the coordinator sends to the workers."""

  def __init__(self, run_: session.Run, strategy, config: PSConfig, total_steps: int):
    self.strategy, self.config, self.num_workers = strategy, config, run_.num_workers
    with strategy.scope():
      self.model = run_.model_fn()
      self.model.build((None,) + data.IMAGE_SHAPE)
      self.optimizer = run_.optimizer_fn(total_steps)
      self.optimizer.build(self.model.trainable_variables)
      self.loss = tf.keras.metrics.Mean("loss")
      self.accuracy = tf.keras.metrics.SparseCategoricalAccuracy("accuracy")
      # Each worker's dataset creation takes the next number: its shard of the data.
      self.shard_counter = tf.Variable(0, dtype=tf.int64, trainable=False)
      self.accumulators = (aggregation.make_accumulators(
          self.model.trainable_variables, strategy.extended.colocate_vars_with)
                           if config.sync else [])
      self.barrier = (barrier.Barrier(self.num_workers, strategy.extended.colocate_vars_with(
          self.optimizer.iterations)) if config.sync and config.closure_steps > 1
                      else None)
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
    self._shapes = [w.shape for w in run_.model_fn().weights]

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def placement(self) -> dict:
    """Where TF put the model: parameters held by each ps task (a partitioned
    variable counted shard by shard), and how many more pieces than the model has
    weights (the shards the partitioner added)."""
    held: dict[str, int] = {}
    pieces = self.model.weights  # under PSS: a partitioned weight's shards, in order
    for piece in pieces:
      spec = tf.DeviceSpec.from_string(piece.device)
      name = task_name(spec.job, spec.task)
      held[name] = held.get(name, 0) + int(np.prod(piece.shape))
    return {"params_by_task": held, "extra_shards": len(pieces) - len(self._shapes)}

  def weights(self) -> list[np.ndarray]:
    """The model's weights as one process would hold them (shards re-joined)."""
    return aggregation.merge_shards(self.model.get_weights(), self._shapes)

  def _gradients(self, x, y):
    with tf.GradientTape() as tape:
      logits = self.model(x, training=True)
      loss = model.mean_loss(y, logits)
    self.loss.update_state(loss)
    self.accuracy.update_state(y, logits)
    return tape.gradient(loss, self.model.trainable_variables), loss

  @tf.function
  def async_closure(self, iterator, num_steps):
    """One worker runs `num_steps` steps, each applied to the ps immediately."""
    def replica_step(x, y):
      grads, loss = self._gradients(x, y)
      self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
      return loss
    loss = tf.constant(0.0)
    for _ in tf.range(num_steps):
      x, y, _ = next(iterator)
      loss = self.strategy.run(replica_step, args=(x, y))
    return loss

  @tf.function
  def accumulate_closure(self, iterator):
    """Sync phase 1: one worker's gradient on its own batch, added into the ps accumulators."""
    def replica_step(x, y):
      grads, loss = self._gradients(x, y)
      aggregation.accumulate(self.accumulators, grads)
      return loss
    x, y, _ = next(iterator)
    return self.strategy.run(replica_step, args=(x, y))

  @tf.function
  def sync_closure(self, iterator, num_steps):
    """Sync, `num_steps` global steps in one closure; the chief runs N at once, one per
    worker. Each step: this worker's gradient into the accumulators, its arrival at the
    barrier; the N-th to arrive applies the step and releases the others; each waits
    for its token before its next batch. Returns the steps it took part in (fewer when
    the chief aborted the barrier)."""
    def replica_step(x, y):
      grads, loss = self._gradients(x, y)
      with tf.control_dependencies(aggregation.accumulate(self.accumulators, grads)):
        return tf.identity(loss)

    def apply_step():
      aggregation.apply_and_reset(self.optimizer, self.accumulators,
                                  self.model.trainable_variables, self.num_workers,
                                  self.config.sync_aggregation)
      return self.optimizer.iterations

    done = tf.constant(0, tf.int64)
    for _ in tf.range(num_steps):
      if self.barrier.aborted():
        break
      x, y, worker = next(iterator)
      loss = self.strategy.run(replica_step, args=(x, y))
      if self.barrier.arrive(after=[loss]) == self.num_workers:
        self.barrier.release(after=[self.strategy.run(apply_step)])
      if not self.barrier.wait(worker):
        break
      done += 1
    return done

  def drop_partial_step(self) -> None:
    """After an aborted barrier (every closure returned): the half-accumulated step's
    gradients dropped, the barrier cleared."""
    aggregation.zero(self.accumulators)
    self.barrier.reset()

  @tf.function
  def apply_closure(self):
    """Sync phase 2: exactly one optimizer step with the aggregate of the N gradients."""
    def replica_step():
      aggregation.apply_and_reset(self.optimizer, self.accumulators,
                              self.model.trainable_variables, self.num_workers,
                              self.config.sync_aggregation)
      return self.optimizer.iterations
    return self.strategy.run(replica_step)


def dataset_fn(run_: session.Run, counter: tf.Variable, batch_size: int):
  """The per-worker input: every worker builds it (PSS does not shard), and each
  creation takes the next number k of `counter`, keeping shard k mod N of the data,
  so workers never train on identical batches. The function carries which shard
  each example is in (2 bytes an example), not the examples: a worker reads its
  shard from the prepared files on its own host (synthetic data, made in memory,
  travels as constants). Each batch also carries k mod N, the worker's number: sync's
  barrier keeps a token queue per worker."""
  n = run_.num_workers
  shards = run_.partition(n)
  owner = np.zeros(len(run_.train), np.int16)  # example -> its shard
  for k, s in enumerate(shards):
    owner[s] = k
  length = max(len(s) for s in shards)  # the shuffle buffer: a whole shard
  cfg = run_.config

  def make():
    mine = tf.cast((counter.assign_add(1) - 1) % n, tf.int16)
    # tf.equal, not ==: in a v1-style graph (TFF's) a tensor's == is Python identity.
    keep = lambda i: tf.equal(tf.gather(owner, i), mine)
    if run_.from_files:
      ds = data.read_prepared(cfg.dataset, "train", cfg.data_dir, keep).cache()
    else:
      rows = tf.where(tf.equal(owner, mine))[:, 0]
      ds = tf.data.Dataset.from_tensor_slices((tf.gather(run_.train.x, rows),
                                               tf.gather(run_.train.y, rows)))
    batches = data.batched(ds, length, batch_size, cfg.seed)
    return batches.map(lambda x, y: (x, y, mine))
  return make


class Coordinator:
  """Runs chunks of global steps through TF's ClusterCoordinator (async or sync)."""

  def __init__(self, coordinator, replica: Replica, iterator, config: PSConfig):
    self.coordinator, self.replica, self.iterator = coordinator, replica, iterator
    self.config = config
    self.grad_phase_s = self.apply_phase_s = 0.0
    self.fallback = False  # sync: the barrier was broken; one step a closure from then on

  def first_step(self) -> None:
    """One lone step, so the start-up latency to the first update is measured."""
    self.run_steps(1)

  def run_steps(self, count: int) -> None:
    if self.config.sync:
      if self.replica.barrier is not None and not self.fallback:
        count = self._sync_closures(count)
      for _ in range(count):
        self._sync_step()
      return
    for n in aggregation.closure_sizes(count, self.config.closure_steps):
      self.coordinator.schedule(self.replica.async_closure,
                                args=(self.iterator, tf.constant(n)))
    self.coordinator.join()

  def _sync_closures(self, count: int) -> int:
    """Sync, K steps a closure: N closures at once per chunk, meeting at the barrier.
    Returns the steps left to run one a closure: 0, or after an aborted barrier those
    not applied."""
    start = self.replica.step
    for n in aggregation.closure_sizes(count, self.config.closure_steps):
      for _ in range(self.replica.num_workers):
        self.coordinator.schedule(self.replica.sync_closure,
                                  args=(self.iterator, tf.constant(n, tf.int64)))
      with barrier.Watchdog(lambda: self.replica.step, self._abort,
                            self.config.sync_stall_s) as watchdog:
        self.coordinator.join()
      if watchdog.fired:
        self.replica.drop_partial_step()
        self.fallback = True
        return count - (self.replica.step - start)
    return 0

  def _abort(self) -> None:
    print(f"[{APPROACH}] sync: no global step for {self.config.sync_stall_s:g} s with "
          f"{self.replica.num_workers} closures at the barrier (a worker lost?): breaking "
          "it; the rest of the run takes one step a closure", flush=True)
    self.replica.barrier.abort()

  def _sync_step(self) -> None:
    # PS sync: N gradient closures (any free worker takes each), then one update.
    t = time.perf_counter()
    for _ in range(self.replica.num_workers):
      self.coordinator.schedule(self.replica.accumulate_closure, args=(self.iterator,))
    self.coordinator.join()
    t2 = time.perf_counter()
    self.coordinator.schedule(self.replica.apply_closure)
    self.coordinator.join()
    self.grad_phase_s += t2 - t
    self.apply_phase_s += time.perf_counter() - t2

  @property
  def grad_phase_frac(self) -> float | None:
    total = self.grad_phase_s + self.apply_phase_s
    return self.grad_phase_s / total if total else None

  def notes(self) -> list[str]:
    """The report's notes on how sync ran: its phases, or its barrier."""
    out = []
    frac = self.grad_phase_frac
    if frac is not None:
      out.append(f"{100 * frac:.0f}% gradient phase / {100 * (1 - frac):.0f}% apply phase")
    elif self.config.sync:
      out.append(f"{self.config.closure_steps} steps a closure at a barrier")
    if self.fallback:
      out.append("barrier broken, then one step a closure")
    return out

  def phase_fields(self) -> dict:
    """Sync one step a closure: wall time of the two phases of every global step, seen
    from the chief: phase 1 = N workers fetch variables, compute gradients and push them
    into the accumulators; phase 2 = one update applied on the ps (workers idle). With
    K steps a closure both happen inside the closures: no fields."""
    if self.grad_phase_frac is None:  # async, or sync K steps a closure
      return {}
    return {"grad_phase_s": self.grad_phase_s, "apply_phase_s": self.apply_phase_s}


def train(run_: session.Run, replica: Replica, ps: Coordinator,
          manager: tf.train.CheckpointManager, start_step: int,
          window: profiling.Window | None = None) -> int:
  """The loop: chunks of steps to each progress point, evaluation and a checkpoint
  at each epoch end (and the --profile_ms window opened on the way). Returns the final
  step."""
  cfg, progress = run_.config, run_.progress
  injected, step = False, start_step
  for chunk in run_.schedule(start_step):
    if chunk.opens_epoch:
      progress.start_epoch()
      replica.loss.reset_state()
      replica.accuracy.reset_state()
    todo = chunk.end - step  # a re-run closure may have applied a step twice
    if step == start_step and todo > 0:
      ps.first_step()
      progress.first_step(start_step + 1)
      todo -= 1
    ps.run_steps(max(todo, 0))
    step = replica.step
    if window:
      window.observe(step)
    frac = ps.grad_phase_frac
    extra = {"grad_phase_frac": frac} if frac is not None else {}
    progress.step(chunk.epoch, chunk.step_in_epoch, step, float(replica.loss.result()),
                  float(replica.accuracy.result()), **extra)
    if chunk.evaluates:
      progress.evaluate(chunk.epoch, chunk.step_in_epoch, step, run_.evaluator(replica.weights))
      if progress.should_stop:  # the chief alone drives the workers: nothing to agree
        progress.end_epoch(chunk.epoch, step, float(replica.loss.result()),
                           float(replica.accuracy.result()), steps_done=chunk.step_in_epoch)
        break
    run_.maybe_fail(step)
    if cfg.fail_task and cfg.fail_task != run_.task.name and not injected \
        and step >= cfg.fail_at_step:
      servers.crash(cfg.fail_task, step)  # a worker/ps, crashed by the chief once
      injected = True
    if chunk.closes_epoch:
      progress.end_epoch(chunk.epoch, step, float(replica.loss.result()),
                         float(replica.accuracy.result()), run_.evaluator(replica.weights))
      manager.save(checkpoint_number=step)
      if progress.should_stop:
        break
  return step


def restore(replica: Replica, manager: tf.train.CheckpointManager) -> str | None:
  """The newest checkpoint into the variables on the ps; what was restored, or None."""
  if not manager.latest_checkpoint:
    return None
  replica.checkpoint.restore(manager.latest_checkpoint)
  return f"{manager.latest_checkpoint} at step {replica.step}"


def run(config: PSConfig, task: TaskInfo, strategy=None, flag_values: dict | None = None,
        datasets=None) -> dict | None:
  """Chief: trains and returns the summary. Other tasks: serve until stopped."""
  if config.profile_ms:
    profiling.serve(config.train.run_dir, task.name, host_of(task.address))
  if task.task_type in servers.SERVER_ROLES:
    server_lib.serve(task, APPROACH)
    return None
  if task.task_type != "chief" or "ps" not in task.cluster or task.num_workers < 1:
    raise ConfigError("approach ps needs TF_CONFIG with chief, worker and ps tasks "
                      f"(this task: {task.name}, roles: {sorted(task.cluster)})")
  cfg, num_ps = config.train, len(task.cluster["ps"])
  strategy = strategy or make_strategy(config, num_ps)
  coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
  servers.show_worker_recovery(tf.get_logger())
  label = f"{APPROACH}/{config.ps_mode}"
  with session.open_run(cfg, task, label, task.num_workers, flag_values, datasets) as run_:
    # One epoch is one pass over the training set by all workers together.
    examples_per_step = cfg.batch_size * (run_.num_workers if config.sync else 1)
    steps_per_epoch = run_.steps_per_epoch(examples_per_step)
    replica = Replica(run_, strategy, config, steps_per_epoch * cfg.epochs)
    manager = run_.checkpoint_manager(replica.checkpoint)
    run_.resume(lambda: restore(replica, manager), manager.directory)
    iterator = iter(coordinator.create_per_worker_dataset(
        dataset_fn(run_, replica.shard_counter, cfg.batch_size)))
    ps = Coordinator(coordinator, replica, iterator, config)
    run_.start_progress(steps_per_epoch, examples_per_step)
    run_.announce(f"chief: {run_.num_workers} worker(s), {num_ps} ps, "
                  f"{'partitioned' if num_ps > 1 else 'unpartitioned'} variables, batch "
                  f"{cfg.batch_size}/worker, {steps_per_epoch} steps/epoch x {cfg.epochs} "
                  f"epoch(s), model {cfg.model}, dataset {cfg.dataset} "
                  f"({len(run_.train)} train / {len(run_.test)} test)")
    tasks = task_names({role: len(a) for role, a in task.cluster.items()})
    window = (profiling.Window(cfg.run_dir, tasks, config.profile_ms, config.profile_at_step)
              if config.profile_ms else None)
    step = train(run_, replica, ps, manager, replica.step, window)
    profile = _profile(window, run_.announce) if window else {}
    notes = "; ".join([f"{num_ps} ps", *ps.notes()])
    # One global step is one worker's step (async) or every worker's (sync).
    worker_steps = step * (1 if config.sync else 1 / run_.num_workers)
    placement, params = replica.placement(), replica.model.count_params()
    return run_.finish(
        bytes_analytic_per_worker=volume.parameter_server(params, worker_steps),
        bytes_analytic_by_task=volume.parameter_server_tasks(
            params, run_.num_workers, worker_steps, placement["params_by_task"]),
        ps_mode=config.ps_mode, num_ps=num_ps, batch_size_per_worker=cfg.batch_size,
        epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, steps=step,
        partitioned=num_ps > 1, notes=notes, **placement, **ps.phase_fields(),
        **({"sync_aggregation": config.sync_aggregation} if config.sync else {}), **profile)


def _profile(window: profiling.Window, announce) -> dict:
  """The --profile_ms window's traces: breakdown.json, one line per task, the summary's
  `profile` field (ms per global step of each kind of work, per task)."""
  result, steps = window.finish()
  path = profiling.write(window.run_dir, result, steps)
  per_step = profiling.per_step(result, steps)
  for task, b in per_step.items():
    announce(f"profile {task}: " + (b["error"] if "error" in b else ", ".join(
        f"{k} {b[k]:.2f}" for k in (*profiling.KINDS, "remote_call")) +
        f" ms per {b['wall']:.2f} ms step ({steps:.0f} steps, {b['threads']} TF thread(s))"))
  announce(f"profile: {path}")
  return {"profile": {"steps_in_window": round(steps, 1), "per_step_ms": per_step}}


def _after_run(task: TaskInfo, summary: dict | None) -> None:
  if summary is None:  # a server, stopped
    return
  servers.stop_all(task)  # the chief, done: every worker and ps exits 0
  # Leave at once: TF's exit-time cleanup would try to reach the servers just
  # stopped (a page of "Failed to pick subchannel"); every output is on disk.
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)  # pylint: disable=protected-access


def run_main(argv=None) -> int:
  return entry.trainer_main(approach_config, run, argv, after=_after_run)
