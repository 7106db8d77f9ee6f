"""Keras fit reporting through the shared Progress: a callback (all-reduce and the
single-process baseline, the approaches that train with Model.fit)."""

from typing import Callable

import numpy as np
import tensorflow as tf

from trainers.common.faults import fail_if_scheduled
from trainers.common.progress import Progress


class ProgressCallback(tf.keras.callbacks.Callback):
  """Drives a Progress from Keras fit: step lines every `log_every`, test eval per epoch."""

  def __init__(self, progress: Progress, log_every: int, evaluate: Callable | None,
               task_name: str, fail_task: str | None = None, fail_at_step: int | None = None,
               eval_every: int | None = None):
    super().__init__()
    self.progress, self.log_every, self.evaluate = progress, max(1, log_every), evaluate
    self.task_name, self.fail_task, self.fail_at_step = task_name, fail_task, fail_at_step
    self.eval_every = eval_every  # steps between mid-epoch evaluations (None: none)
    self._started = False
    self._last_step = 0

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
    if (self.eval_every and self.evaluate and done < self.progress.steps_per_epoch
        and step // self.eval_every > self._last_step // self.eval_every):
      self.progress.evaluate(self._epoch + 1, done, step,
                             lambda: self.evaluate(self.model.get_weights()))
    self._last_step = step
    if done >= self._next_log or done == self.progress.steps_per_epoch:
      self._next_log = (done // self.log_every + 1) * self.log_every
      logs = logs or {}
      self.progress.step(self._epoch + 1, done, step, logs.get("loss", np.nan),
                         logs.get("accuracy", np.nan))

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    evaluate = (lambda: self.evaluate(self.model.get_weights())) if self.evaluate else None
    self.progress.end_epoch(epoch + 1, (epoch + 1) * self.progress.steps_per_epoch,
                            logs.get("loss", np.nan),
                            logs.get("accuracy", np.nan), evaluate)
