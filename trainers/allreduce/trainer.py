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
from trainers.common import data, entry, model, session, volume
from trainers.common.keras_progress import ProgressCallback

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
    run_.announce(f"{num_workers} worker(s), {replicas} replica(s), global batch "
                  f"{global_batch}, {steps_per_epoch} steps/epoch x {cfg.epochs} epoch(s), "
                  f"model {cfg.model}, dataset {cfg.dataset} ({len(run_.train)} train / "
                  f"{len(run_.test)} test)", every_task=True)
    net.fit(strategy.distribute_datasets_from_function(dataset_fn), epochs=cfg.epochs,
            steps_per_epoch=steps_per_epoch, verbose=0, callbacks=callbacks)
    steps = int(net.optimizer.iterations.numpy())
    summary = run_.finish(
        replicas=replicas, communication=config.communication,
        batch_size_per_worker=cfg.batch_size, global_batch_size=global_batch,
        epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, steps=steps,
        bytes_analytic_per_worker=volume.ring_allreduce(net.count_params(), num_workers,
                                                        steps),
        bytes_analytic_by_task=volume.ring_allreduce_tasks(net.count_params(), num_workers,
                                                           steps))
  # Final barrier: every worker leaves together, once the chief's summary is written,
  # so TF's exit-time shutdown of the cluster finds every peer still there.
  agree(False)
  return summary


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
  return net


def run_main(argv=None) -> int:
  return entry.trainer_main(approach_config, run, argv)
