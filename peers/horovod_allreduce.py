"""Horovod's all-reduce on the suite's all-reduce row: same model, data shard, per-worker
batch, optimizer and schedule, evaluation cadence, target stop and summary.

    python -m launch.local --approach=allreduce --num_workers=2 -- \
        .venv-peers/bin/python -m peers.horovod_allreduce --model=small_cnn --epochs=1

Every task of the launcher's job is one Horovod rank (Gloo, no MPI); worker 0 serves
Horovod's rendezvous on its own address (peers/gloo.py). The flags are the suite's
all-reduce trainer's (trainers/allreduce/config.py); what differs is who sums the
gradients: hvd.DistributedOptimizer (Horovod's ring all-reduce over Gloo, tensor
fusion, its background coordinator) instead of MultiWorkerMirroredStrategy.
"""

import os
import sys

from absl import flags

from cluster import approaches
from cluster.tf_config import TaskInfo, parse_tf_config
from peers import gloo
from trainers.allreduce import config as allreduce_config
from trainers.common import config as config_lib
from trainers.common import entry

LABEL = "horovod_allreduce"


def run(config: allreduce_config.Config, task: TaskInfo, flag_values: dict | None = None
        ) -> dict:
  """Trains as rank task.task_index of task.num_workers; returns the summary."""
  workers = list(task.cluster["worker"])
  rank, size = task.task_index, len(workers)
  stop_rendezvous = gloo.serve(workers) if rank == 0 else None
  os.environ.update(gloo.env(workers, rank, gloo.iface_of(task.address)))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import horovod.tensorflow.keras as hvd  # pylint: disable=g-import-not-at-top
  from trainers.common import data, model, session, volume  # pylint: disable=g-import-not-at-top
  from trainers.common.keras_progress import ProgressCallback  # pylint: disable=g-import-not-at-top
  from trainers.common import startup  # pylint: disable=g-import-not-at-top
  startup.mark("import")
  try:
    hvd.init()  # Horovod: the rendezvous, then Gloo's ring among the ranks
    startup.mark("peers")

    def agree(stop: bool) -> bool:  # Horovod: a one-number all-reduce, every rank
      return float(hvd.allreduce(tf.constant(float(stop)), op=hvd.Sum)) > 0

    cfg = config.train
    global_batch = cfg.batch_size * size
    with session.open_run(cfg, task, LABEL, size, flag_values) as run_:
      steps_per_epoch = run_.steps_per_epoch(global_batch)
      shard = run_.shard(rank, size)  # the suite's partition: the same examples per rank
      net = run_.model_fn()
      # Horovod: gradients averaged across ranks before each (identical) update. The
      # suite's all-reduce sums per-replica losses scaled by the global batch: the same
      # mean gradient.
      net.compile(optimizer=hvd.DistributedOptimizer(
          run_.optimizer_fn(steps_per_epoch * cfg.epochs)),
                  loss=model.keras_loss(), metrics=["accuracy"],
                  steps_per_execution=min(config.steps_per_execution, steps_per_epoch))
      if task.is_chief:
        run_.prepare_scoring()
      progress = run_.start_progress(steps_per_epoch, global_batch)
      callbacks = [
          hvd.callbacks.BroadcastGlobalVariablesCallback(0),  # Horovod: rank 0's start
          ProgressCallback(progress, cfg.log_every, run_.score if task.is_chief else None,
                           task.name, eval_every=run_.eval_every_steps(), agree=agree)]
      run_.announce(f"Horovod {hvd.size()} rank(s) over Gloo, global batch {global_batch}, "
                    f"{steps_per_epoch} steps/epoch, model {cfg.model}", every_task=True)
      net.fit(data.train_dataset(shard, cfg.batch_size, seed=cfg.seed + rank),
              epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, verbose=0,
              callbacks=callbacks)
      steps = int(net.optimizer.iterations.numpy())
      summary = run_.finish(
          peer="horovod", horovod_version=_version(), replicas=size,
          communication="horovod-gloo", batch_size_per_worker=cfg.batch_size,
          global_batch_size=global_batch, epochs=cfg.epochs,
          steps_per_epoch=steps_per_epoch, steps=steps,
          bytes_analytic_per_worker=volume.ring_allreduce(net.count_params(), size, steps),
          bytes_analytic_by_task=volume.ring_allreduce_tasks(net.count_params(), size, steps))
    agree(False)  # every rank leaves together, once the chief's summary is written
    hvd.shutdown()
    return summary
  finally:
    if stop_rendezvous:
      stop_rendezvous()


def _version() -> str:
  import horovod  # pylint: disable=g-import-not-at-top
  return horovod.__version__


def main(argv: list[str] | None = None) -> int:
  def run_from_flags(fv: flags.FlagValues) -> None:
    config = allreduce_config.Config.from_flags(fv, approaches.ALLREDUCE.name)
    task = parse_tf_config(os.environ.get("TF_CONFIG"))
    config.check_cluster(task.num_workers)
    run(config, task, flag_values=config_lib.flag_dict(fv))

  return entry.run_main(allreduce_config.define_flags, run_from_flags, argv,
                        approach=approaches.ALLREDUCE.name)


if __name__ == "__main__":
  sys.exit(main())
