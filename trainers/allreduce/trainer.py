"""Synchronous all-reduce training with tf.distribute.MultiWorkerMirroredStrategy.

Every worker holds a full replica; each step every worker computes gradients on
its own shard's batch and the gradients are summed across workers with a
collective all-reduce (ring over gRPC on CPU, NCCL on GPU) before the identical
update is applied everywhere. Started by the launcher, one process per worker:

    python -m launch.local --approach=allreduce --num_workers=2 -- --model=mlp --epochs=1

Without TF_CONFIG it runs as a single worker; with --plain_keras it is the
single-process baseline (Keras fit, no strategy) through the same code.
"""

import os
from typing import Callable

import tensorflow as tf

from cluster.tf_config import TaskInfo
from trainers.allreduce import config as approach_config
from trainers.allreduce.config import APPROACH
from trainers.common import data, entry, model, profiling, session, volume
from trainers.common.keras_progress import ProfileCallback, ProgressCallback

AllReduceConfig = approach_config.Config


def make_strategy(config: AllReduceConfig):
  """MWMS from TF_CONFIG (the default strategy for --plain_keras). Must run before
  any other TF op in the process."""
  if config.plain_keras:
    return tf.distribute.get_strategy()  # the default: no distribution at all
  impl = tf.distribute.experimental.CommunicationImplementation[config.communication.upper()]
  return tf.distribute.MultiWorkerMirroredStrategy(
      communication_options=tf.distribute.experimental.CommunicationOptions(
          implementation=impl, bytes_per_pack=config.bytes_per_pack))


def agreement(strategy) -> Callable[[bool], bool]:
  """agree(stop) for every worker at the same point: True on all of them if any says
  so (in practice the chief, the only one that evaluates). A one-number all-reduce."""
  @tf.function
  def total(flag):
    return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, (flag,)),
                           axis=None)

  return lambda stop: float(total(tf.constant(float(stop)))) > 0


def run(config: AllReduceConfig, task: TaskInfo, strategy=None, flag_values: dict | None = None,
        datasets=None) -> dict:
  """Trains and returns the summary dict (written to summary.json by the chief)."""
  config.check_cluster(task.num_workers)
  strategy = strategy or make_strategy(config)

  cfg = config.train
  num_workers = getattr(strategy.extended, "_num_workers", 1)  # pylint: disable=protected-access
  replicas = strategy.num_replicas_in_sync
  global_batch = cfg.batch_size * replicas
  label = "keras_fit" if config.plain_keras else APPROACH
  with session.open_run(cfg, task, label, num_workers, flag_values, datasets) as run_:
    steps_per_epoch = run_.steps_per_epoch(global_batch)

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
      # All-reduce: each input pipeline (one per worker) reads only its own shard.
      shard = run_.shard(ctx.input_pipeline_id, ctx.num_input_pipelines)
      return data.train_dataset(shard, ctx.get_per_replica_batch_size(global_batch),
                                seed=cfg.seed + ctx.input_pipeline_id)

    net = compile_model(run_, strategy, config, steps_per_epoch)
    agree = agreement(strategy)
    if task.is_chief:
      run_.prepare_scoring()  # outside the strategy's scope, which fit enters
    progress = run_.start_progress(steps_per_epoch, global_batch)
    callbacks = [
        # A restarted job resumes from the last finished epoch. Every worker names
        # the same directory: all restore from the chief's copy, and TF gives the
        # others private scratch subdirectories to write to.
        tf.keras.callbacks.BackupAndRestore(os.path.join(cfg.run_dir, "backup")),
        ProgressCallback(progress, cfg.log_every,
                         run_.score if task.is_chief else None,
                         task.name, cfg.fail_task, cfg.fail_at_step, run_.eval_every_steps(),
                         agree=agree)]
    window = None
    if config.profile_ms:
      logdir = os.path.join(cfg.run_dir, "profile", profiling.task_file(task.name))
      window = profiling.LocalWindow(logdir, config.profile_ms, config.profile_at_step)
      callbacks.append(ProfileCallback(window, steps_per_epoch))
    run_.announce(f"{num_workers} worker(s), {replicas} replica(s), global batch "
                  f"{global_batch}, {steps_per_epoch} steps/epoch x {cfg.epochs} epoch(s), "
                  f"model {cfg.model}, dataset {cfg.dataset} ({len(run_.train)} train / "
                  f"{len(run_.test)} test)", every_task=True)
    net.fit(strategy.distribute_datasets_from_function(dataset_fn), epochs=cfg.epochs,
            steps_per_epoch=steps_per_epoch, verbose=0, callbacks=callbacks)
    steps = int(net.optimizer.iterations.numpy())
    profile = _profile(window, cfg.run_dir, task.name, run_.announce) if window else {}
    summary = run_.finish(
        replicas=replicas, communication=config.communication,
        batch_size_per_worker=cfg.batch_size, global_batch_size=global_batch,
        epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, steps=steps,
        bytes_analytic_per_worker=volume.ring_allreduce(net.count_params(), num_workers,
                                                        steps),
        bytes_analytic_by_task=volume.ring_allreduce_tasks(net.count_params(), num_workers,
                                                           steps), **profile)
  # Final barrier: every worker leaves together, once the chief's summary is written,
  # so TF's exit-time shutdown of the cluster finds every peer still there.
  agree(False)
  return summary


def _profile(window: profiling.LocalWindow, run_dir: str, task_name: str, announce) -> dict:
  """This worker's --profile_ms window: profile/breakdown-<task>.json, one line, and the
  summary's `profile` field (ms per step of each kind of work)."""
  result, steps = window.finish()
  result = {task_name: result}
  path = profiling.write(run_dir, result, steps,
                         f"breakdown-{profiling.task_file(task_name)}.json")
  b = profiling.per_step(result, steps)[task_name]
  announce(f"profile {task_name}: " + (b["error"] if "error" in b else ", ".join(
      f"{k} {b[k]:.2f}" for k in (*profiling.KINDS, "idle", "collective")) +
      f" ms per {b['wall']:.2f} ms step, {b['collectives']:.1f} collective ops a step "
      f"({steps} steps traced); {path}"), every_task=True)
  return {"profile": {"steps_in_window": steps, "per_step_ms": {task_name: b}}}


def compile_model(run_: session.Run, strategy, config: AllReduceConfig,
                  steps_per_epoch: int) -> tf.keras.Model:
  """The model, its optimizer over the whole run, loss and accuracy, under `strategy`."""
  with strategy.scope():
    # All-reduce: variables are mirrored on every worker; Keras sums gradients
    # across them with the strategy's collective before each (identical) update.
    net = run_.model_fn()
    net.compile(optimizer=run_.optimizer_fn(steps_per_epoch * run_.config.epochs),
                loss=model.keras_loss(), metrics=["accuracy"],
                steps_per_execution=min(config.steps_per_execution, steps_per_epoch))
  # Step-level logs: this worker's running loss/accuracy (Keras' default "sum"
  # would add the workers' running means together). Epoch logs stay global.
  net.distribute_reduction_method = "first"
  if not config.plain_keras:
    net.train_step = local_metrics_train_step(net)
  return net


def _local_result(metric) -> tf.Tensor:
  """A metric's value on this replica: a mean's total / count read where they are
  (SyncOnRead variables read in replica context), where `metric.result()` under a
  strategy all-reduces them first."""
  if hasattr(metric, "total") and hasattr(metric, "count"):
    return tf.math.divide_no_nan(metric.total, tf.cast(metric.count, metric.total.dtype))
  return metric.result()


def local_metrics_train_step(net: tf.keras.Model):
  """Keras' train_step, but the step's logs are this replica's running metrics: Keras'
  own step all-reduces every metric's total and count at every step (two collectives a
  metric, on the step's critical path) for logs the suite reads every `log_every` steps
  (distribute_reduction_method 'first': worker 0's anyway). The epoch's logs stay global:
  fit reads them with `get_metrics_result()` across replicas at the epoch's end. Measured
  (BENCHMARKS.md, issue 33): 1.18-1.27x the examples/s at N = 2 on 2 cores. The update
  is Keras' own; only the step's logs differ. The plain fit keeps Keras' step (no
  strategy: its result() is already local)."""
  def train_step(batch):
    x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(batch)
    with tf.GradientTape() as tape:
      y_pred = net(x, training=True)
      loss = net.compute_loss(x, y, y_pred, sample_weight)
    net.optimizer.minimize(loss, net.trainable_variables, tape=tape)
    net.compiled_metrics.update_state(y, y_pred, sample_weight)
    return {m.name: _local_result(m) for m in net.metrics}
  return train_step


def run_main(argv=None) -> int:
  return entry.trainer_main(approach_config, run, argv)
