"""Keras fit reporting through the shared Progress: a callback (all-reduce and the
single-process baseline, the approaches that train with Model.fit)."""

from typing import Callable

import numpy as np
import tensorflow as tf

from trainers.common.faults import fail_if_scheduled
from trainers.common.progress import Progress


class ProgressCallback(tf.keras.callbacks.Callback):
  """Drives a Progress from Keras fit: step lines every `log_every`, test eval per epoch
  and every `eval_every` steps, and the stop at the target.

  Only the chief evaluates (`evaluate` is None elsewhere), but every worker reaches
  the same evaluation points, where `agree(stop)` (a collective under
  MultiWorkerMirroredStrategy: the chief's decision for all) says whether to stop,
  so all workers leave fit after the same step."""

  def __init__(self, progress: Progress, log_every: int, evaluate: Callable | None,
               task_name: str, fail_task: str | None = None, fail_at_step: int | None = None,
               eval_every: int | None = None, agree: Callable[[bool], bool] | None = None):
    super().__init__()
    self.progress, self.log_every, self.evaluate = progress, max(1, log_every), evaluate
    self.task_name, self.fail_task, self.fail_at_step = task_name, fail_task, fail_at_step
    self.eval_every = eval_every  # steps between mid-epoch evaluations (None: none)
    self.agree = agree or (lambda stop: stop)
    self._started = False
    self._last_step = 0
    self._stopped_at: int | None = None  # steps of the epoch in which the run stopped

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    self._next_log = self.log_every
    self._last_step = epoch * self.progress.steps_per_epoch
    self.progress.start_epoch()

  def on_train_batch_end(self, batch, logs=None):
    # The step is counted, never read from the optimizer: reading a variable every
    # batch would force a host sync per step and stall the pipeline. With
    # steps_per_execution K this runs once per K batches (batch = the last of them).
    done = batch + 1
    step = self._epoch * self.progress.steps_per_epoch + done
    if not self._started:
      self._started = True
      self.progress.first_step(step)
    fail_if_scheduled(self.task_name, self.fail_task, self.fail_at_step, step)
    # With steps_per_execution K this sees every K-th step: evaluate once a multiple
    # of eval_every has been passed (the epoch's end evaluates anyway).
    if (self.eval_every and done < self.progress.steps_per_epoch
        and step // self.eval_every > self._last_step // self.eval_every):
      if self.evaluate:
        self.progress.evaluate(self._epoch + 1, done, step,
                               lambda: self.evaluate(self.model.get_weights()))
      self._maybe_stop(done)
    self._last_step = step
    if done >= self._next_log or done == self.progress.steps_per_epoch:
      self._next_log = (done // self.log_every + 1) * self.log_every
      logs = logs or {}
      self.progress.step(self._epoch + 1, done, step, logs.get("loss", np.nan),
                         logs.get("accuracy", np.nan))

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    spe = self.progress.steps_per_epoch
    if self._stopped_at is not None:  # stopped inside this epoch: evaluated already
      self.progress.end_epoch(epoch + 1, epoch * spe + self._stopped_at,
                              logs.get("loss", np.nan), logs.get("accuracy", np.nan),
                              steps_done=self._stopped_at)
      return
    evaluate = (lambda: self.evaluate(self.model.get_weights())) if self.evaluate else None
    self.progress.end_epoch(epoch + 1, (epoch + 1) * spe, logs.get("loss", np.nan),
                            logs.get("accuracy", np.nan), evaluate)
    self._maybe_stop(None)

  def _maybe_stop(self, done: int | None) -> None:
    """At an evaluation point: stop fit if the target is reached (all workers agree).
    `done`: steps of the epoch so far (None: the epoch's end)."""
    if self.progress.target.stop and self.agree(self.progress.should_stop):
      self.model.stop_training = True
      self._stopped_at = done


class ProfileCallback(tf.keras.callbacks.Callback):
  """Feeds a profiling.LocalWindow the global step at each Keras call's end (every K-th
  step with steps_per_execution K), so the window opens and closes at the same steps on
  every worker."""

  def __init__(self, window, steps_per_epoch: int):
    super().__init__()
    self.window, self.steps_per_epoch = window, steps_per_epoch
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    self.window.observe(self._epoch * self.steps_per_epoch + batch + 1)
