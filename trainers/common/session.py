"""One run session under all four approaches: how a run opens and how it closes.

    with session.open_run(config.train, task, label, num_workers, flag_values) as run:
      ...                                     # the approach: strategy, exchange or round
      return run.finish(steps=step, **fields_of_this_approach)

Opening: the run directory, config.json, the metrics/TensorBoard writer (a no-op
off the chief), the data splits, the seed, the model and optimizer factories, this
worker's shard and the evaluator. Closing: summary.json with one schema (the
common core below plus the approach's own fields), and the writer closed in a
`finally`, whatever happened. The progress and evaluation cadence
(`progress.schedule`) is reached through here too, so every approach reports and
evaluates at the same points.

Common core of summary.json: approach, label, dataset, model, num_workers,
test_accuracy, test_loss, train_time_s, examples_processed, examples_per_sec,
wall_time_s (from this process' start), since_launch_s (from the launcher's start),
bytes_sent_per_worker and bytes_received_per_worker (measured on the wire by the
task shim, mean over the worker tasks; None without the launcher's shim),
bytes_analytic_per_worker (what the approach's algorithm sends per worker, from
its own formula), notes (one line for the report), run_dir; with
--target_accuracy, the time-to-target fields (progress.Target).
"""

import contextlib
import dataclasses
import os
import time
from typing import Callable, Iterator

import numpy as np
import psutil
import tensorflow as tf

from cluster import approaches, traffic
from cluster.errors import ConfigError
from cluster.tf_config import TaskInfo, launch_time
from models import build_model
from trainers.common import data, lifecycle, model, partition, startup
from trainers.common import progress as progress_lib
from trainers.common.config import TrainConfig
from trainers.common.errors import Diverged
from trainers.common.faults import fail_if_scheduled
from trainers.common.flags import SYNTHETIC
from trainers.common.outputs import RunWriter


@dataclasses.dataclass
class Run:
  """An open run: the shared pieces an approach trains with."""
  config: TrainConfig
  task: TaskInfo
  label: str          # e.g. "ps/sync", "gossip/ring": progress lines and reports
  num_workers: int
  writer: RunWriter
  train: data.Arrays | None  # None where the clients hold it (a FedAvg chief)
  test: data.Arrays
  started: float      # when this process started (time.time() scale)
  launched: float | None = None    # when the launcher started (None: not launched)
  traffic_dir: str | None = None   # where the task shim counts bytes (None: not counted)
  from_files: bool = False  # the splits are prepared TFDS files (a worker can read its own)
  progress: progress_lib.Progress | None = None
  _scorer: Callable | None = dataclasses.field(default=None, repr=False)
  _parts: dict = dataclasses.field(default_factory=dict, repr=False)  # count -> partition

  # --- factories -------------------------------------------------------------
  def model_fn(self) -> tf.keras.Model:
    """A fresh, uncompiled model of --model."""
    return build_model(self.config.model)

  def optimizer_fn(self, total_steps: int) -> tf.keras.optimizers.Optimizer:
    """The --optimizer with the --lr_schedule over `total_steps`."""
    cfg = self.config
    return model.make_optimizer(cfg.optimizer, cfg.learning_rate, cfg.lr_schedule, total_steps)

  # --- data ------------------------------------------------------------------
  def partition(self, count: int) -> list[np.ndarray]:
    """The training set's indices split into `count` disjoint parts by --partition
    (one per worker, or FedAvg's clients); seeded, so every task computes the same.
    Computed once per count (shards, label histograms and the PS table share it)."""
    cfg = self.config
    if count not in self._parts:
      try:
        self._parts[count] = partition.partition(cfg.partition, self.train.y, count, cfg.seed,
                                                 cfg.dirichlet_alpha)
      except ValueError as e:  # e.g. more parts than examples: a flag's fault
        raise ConfigError(str(e)) from e
    return self._parts[count]

  def shard(self, index: int, count: int) -> data.Arrays:
    """Part `index` of `count` of the training set (`partition`)."""
    return self.train.take(self.partition(count)[index])

  def label_histograms(self, count: int) -> list[list[int]]:
    """Each of `count` parts' examples per label: how skewed --partition made them."""
    return partition.label_histograms(self.train.y, self.partition(count)).tolist()

  def steps_per_epoch(self, examples_per_step: int) -> int:
    return data.steps_per_epoch(len(self.train), examples_per_step,
                                self.config.steps_per_epoch)

  # --- progress and evaluation -------------------------------------------------
  def start_progress(self, steps_per_epoch: int, examples_per_step: int,
                     epochs: int | None = None) -> progress_lib.Progress:
    """The run's Progress (lines on the chief only, records through the writer)."""
    cfg = self.config
    self.progress = progress_lib.Progress(
        self.writer, self.label, epochs or cfg.epochs, steps_per_epoch, examples_per_step,
        verbose=self.task.is_chief,
        target=progress_lib.Target(cfg.target_accuracy, cfg.stop_at_target),
        traffic=self.measured_traffic)
    return self.progress

  def measured_traffic(self) -> dict:
    """Bytes on the wire so far, mean per worker task and the busiest task's sent +
    received (the shim's files, <= 0.5 s old)."""
    if not self.traffic_dir:
      return {}
    totals = traffic.read(self.traffic_dir)
    sent, received = traffic.per_role(totals)
    fields = traffic.job_fields(totals, {})
    return {"bytes_sent_per_worker": sent, "bytes_received_per_worker": received,
            "bytes_busiest_task": fields["bytes_busiest_task"]}

  def schedule(self, start_step: int) -> Iterator[progress_lib.Chunk]:
    """Chunks between progress (and evaluation) points, from `start_step` to the end."""
    p = self.progress
    return progress_lib.schedule(start_step, p.steps_per_epoch, p.epochs, self.config.log_every,
                                 self.eval_every_steps())

  def eval_every_steps(self) -> int | None:
    """--eval_every_examples in this run's steps (None: at epoch ends only)."""
    return progress_lib.eval_every_steps(self.config.eval_every_examples,
                                         self.progress.examples_per_step)

  def prepare_scoring(self) -> None:
    """Builds the scorer's own plain model now. Built on first use instead, inside a
    strategy's scope (Keras fit under MultiWorkerMirroredStrategy), its variables
    would be mirrored and their initialisation a collective across the workers; built
    before TFF traces its computations, Keras would refuse it afterwards. So it is
    built lazily, and all-reduce asks for it before fit."""
    if self._scorer is None:
      self._scorer = model.make_scorer(self.model_fn)

  def score(self, weights: list[np.ndarray], arrays: data.Arrays | None = None
            ) -> tuple[float, float]:
    """(mean loss, accuracy) of `weights` on `arrays` (default: the whole test split)."""
    self.prepare_scoring()
    return self._scorer(weights, self.test if arrays is None else arrays)

  def evaluator(self, weights_fn: Callable[[], list[np.ndarray]]
                ) -> Callable[[], tuple[float, float]]:
    """evaluate() for Progress: scores weights_fn()'s weights on the test split."""
    return lambda: self.score(weights_fn())

  # --- the rest ----------------------------------------------------------------
  def announce(self, text: str, every_task: bool = False) -> None:
    """One line about the run's set-up, printed by the chief (or by every task, each
    naming itself)."""
    if every_task:
      print(f"[{self.label}] {self.task.name}: {text}", flush=True)
    elif self.task.is_chief:
      print(f"[{self.label}] {text}", flush=True)

  def maybe_fail(self, step: int, unit: str = "step") -> None:
    """Fault injection: this task exits 3 at --fail_at_step if it is --fail_task."""
    fail_if_scheduled(self.task.name, self.config.fail_task, self.config.fail_at_step,
                      step, unit)

  def resume(self, restore: Callable[[], str | None], where: str,
             every_task: bool = False) -> None:
    """--resume, the same way in every approach: `restore()` loads the newest state
    it finds and says what it restored (None: nothing there), and the run announces
    either; without --resume nothing is read."""
    if not self.config.resume:
      return
    restored = restore()
    self.announce(f"resumed from {restored}" if restored else
                  f"--resume: no checkpoint in {where}; starting from scratch", every_task)

  def checkpoint_manager(self, checkpoint: tf.train.Checkpoint,
                         *subdir: str) -> tf.train.CheckpointManager:
    """Checkpoints in <run_dir>/ckpt[/subdir]; the last two are kept."""
    return tf.train.CheckpointManager(
        checkpoint, os.path.join(self.config.run_dir, "ckpt", *subdir), max_to_keep=2)

  def finish(self, bytes_analytic_by_task: dict | None = None, **fields) -> dict:
    """Writes summary.json (the common core, then the approach's fields) and returns
    it. `bytes_analytic_by_task` (volume.*_tasks) is what the algorithm moves on each
    task's link, set beside the measured bytes of the whole job."""
    cfg = self.config
    now = time.time()
    summary = {
        "approach": cfg.approach, "label": self.label, "dataset": cfg.dataset, "status": "ok",
        "model": cfg.model, "num_workers": self.num_workers,
        "bytes_analytic_per_worker": None, "notes": "",
        "wall_time_s": now - self.started, "run_dir": os.path.abspath(cfg.run_dir),
        "since_launch_s": None if self.launched is None else now - self.launched,
        # Final figures once every task has exited: the launcher rewrites these.
        **traffic.summary_fields(traffic.read(self.traffic_dir), bytes_analytic_by_task),
        **(self.progress.summary_fields() if self.progress else {}),
        "startup_s": startup.breakdown(
            self.started, self.launched,
            self.progress.first_step_rec["time"] if self.progress and
            self.progress.first_step_rec else None),
    }
    if self.num_workers > 0 and approaches.get(cfg.approach).worker_partitions:
      summary.update(partition=cfg.partition, worker_label_histograms=self.label_histograms(
          self.num_workers))
    summary.update(fields)
    startup.reset()
    if fields.get("steps") is not None:  # each task says where its own loop ended
      self.announce(f"finished at step {fields['steps']}", every_task=True)
    return self.writer.write_summary(summary)


@contextlib.contextmanager
def open_run(config: TrainConfig, task: TaskInfo, label: str, num_workers: int,
             flag_values: dict | None = None,
             datasets: tuple[data.Arrays, data.Arrays] | None = None,
             train_split: bool = True) -> Iterator[Run]:
  """Opens the run (see the module docstring); `datasets` = (train, test) overrides
  loading, for tests; train_split=False leaves the training split unread (Run.train
  None: a FedAvg chief, whose clients hold it). Call it after the approach's strategy
  exists: TF's distributed runtime must start before any other TF op of the process. wall_time_s and the
  records' elapsed_s count from the start of this process, so they include TF's
  import and the cluster's start-up."""
  # TF's preemption notifier took SIGTERM over when the strategy started: take it back.
  lifecycle.honour_sigterm()
  startup.mark("cluster")  # the approach's strategy or TFF context exists by now
  started = psutil.Process().create_time()
  launched = launch_time(os.environ)
  # The data first: a run without its data leaves no run directory files behind.
  from_files = datasets is None and config.dataset != SYNTHETIC
  if datasets is None:
    datasets = (data.load_split(config.dataset, "train", config.data_dir,
                                config.synthetic_examples) if train_split else None,
                data.load_split(config.dataset, "test", config.data_dir))
  elif not train_split:
    datasets = (None, datasets[1])
  startup.mark("data")
  writer = RunWriter(config.run_dir, enabled=task.is_chief, start=started, launched=launched)
  try:
    if flag_values is not None:
      writer.write_config(flag_values)
    tf.keras.utils.set_random_seed(config.seed)
    run_ = Run(config, task, label, num_workers, writer, *datasets, started,
               launched=launched, traffic_dir=os.environ.get(traffic.ENV_DIR) or None,
               from_files=from_files)
    try:
      yield run_
    except Diverged as e:  # still a strict summary.json, saying how the run ended
      writer.write_summary(failed_summary(run_, "diverged", str(e)))
      raise
  finally:
    writer.close()


def failed_summary(run_: Run, status: str, error: str) -> dict:
  """summary.json of a run that ended without results (`status`: why)."""
  cfg, p = run_.config, run_.progress
  return {"approach": cfg.approach, "label": run_.label, "dataset": cfg.dataset,
          "model": cfg.model, "num_workers": run_.num_workers, "status": status,
          "error": error, "test_accuracy": None, "test_loss": None,
          "wall_time_s": time.time() - run_.started,
          "train_time_s": p.train_time_s if p else None,
          "examples_processed": p.examples if p else 0, "examples_per_sec": None,
          "bytes_sent_per_worker": None, "notes": f"{status}: {error}",
          "run_dir": os.path.abspath(cfg.run_dir)}
