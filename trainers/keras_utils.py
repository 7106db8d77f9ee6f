"""Keras pieces the Keras-based trainers share: optimizers, evaluation, callbacks."""

import os
import sys
import time
from typing import Callable

import numpy as np
import tensorflow as tf

from trainers.data import Arrays, eval_dataset
from trainers.outputs import RunWriter


def make_optimizer(name: str, learning_rate: float, schedule: str = "constant",
                   total_steps: int = 1) -> tf.keras.optimizers.Optimizer:
  """Optimizer by name; `schedule="cosine"` decays the rate to 0 over `total_steps`."""
  if schedule == "cosine":
    learning_rate = tf.keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps))
  elif schedule != "constant":
    raise ValueError(f"Unrecognized --lr_schedule: {schedule!r}")
  if name == "sgd":
    return tf.keras.optimizers.SGD(learning_rate)
  if name == "momentum":
    return tf.keras.optimizers.SGD(learning_rate, momentum=0.9)
  if name == "adam":
    return tf.keras.optimizers.Adam(learning_rate)
  raise ValueError(f"Unrecognized --optimizer: {name!r}")


def loss_fn() -> tf.keras.losses.Loss:
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_evaluator(model_fn: Callable[[], tf.keras.Model], test: Arrays,
                   batch_size: int = 1000) -> Callable[[list[np.ndarray]], tuple[float, float]]:
  """Returns evaluate(weights) -> (mean loss, accuracy) over the *whole* split.

  It owns a plain (undistributed) copy of the model and a hand-written loop, so
  it can run inside any strategy's fit loop or after any approach's training
  without mixing strategies: every approach is scored by the same code.
  """
  model = model_fn()
  ds = eval_dataset(test, batch_size)
  xent = tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction=tf.keras.losses.Reduction.SUM)

  @tf.function
  def batch_stats(x, y):
    logits = model(x, training=False)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y),
                                    tf.float32))
    return xent(y, logits), correct

  def evaluate(weights: list[np.ndarray]) -> tuple[float, float]:
    model.set_weights(weights)
    total_loss = total_correct = 0.0
    for x, y in ds:
      loss, correct = batch_stats(x, y)
      total_loss += float(loss)
      total_correct += float(correct)
    return total_loss / len(test), total_correct / len(test)

  return evaluate


def fail_if_scheduled(task_name: str, fail_task: str | None, fail_at_step: int | None,
                      step: int) -> None:
  """Fault injection: the named task dies abruptly (exit 3) at the scheduled step."""
  if fail_task and fail_at_step is not None and task_name == fail_task and step >= fail_at_step:
    print(f"fault injection: {task_name} exiting with code 3 at step {step}", flush=True)
    sys.stderr.flush()
    os._exit(3)  # pylint: disable=protected-access  # no cleanup: simulate a crash


class ProgressCallback(tf.keras.callbacks.Callback):
  """Every `log_every` steps: one progress line and one metrics record; per epoch: test eval.

  `global_batch` is the number of examples one step consumes across all workers.
  """

  def __init__(self, writer: RunWriter, label: str, global_batch: int, steps_per_epoch: int,
               epochs: int, log_every: int, evaluate: Callable | None, task_name: str,
               fail_task: str | None = None, fail_at_step: int | None = None,
               verbose: bool = True):
    super().__init__()
    self.writer, self.label, self.verbose = writer, label, verbose
    self.global_batch, self.steps_per_epoch, self.epochs = global_batch, steps_per_epoch, epochs
    self.log_every, self.evaluate, self.task_name = max(1, log_every), evaluate, task_name
    self.fail_task, self.fail_at_step = fail_task, fail_at_step
    self.train_time_s = 0.0
    self.examples = 0
    self.last_test = (float("nan"), float("nan"))
    self.history: list[dict] = []

  def _step(self) -> int:
    return int(self.model.optimizer.iterations.numpy())

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    self._epoch_start = self._mark = time.perf_counter()
    self._mark_step = 0

  def on_train_batch_end(self, batch, logs=None):
    done = batch + 1
    step = self._step()
    fail_if_scheduled(self.task_name, self.fail_task, self.fail_at_step, step)
    if done % self.log_every and done != self.steps_per_epoch:
      return
    now = time.perf_counter()
    steps_per_sec = (done - self._mark_step) / max(now - self._mark, 1e-9)
    self._mark, self._mark_step = now, done
    logs = logs or {}
    rec = self.writer.log("step", step, epoch=self._epoch + 1, loss=float(logs.get("loss", np.nan)),
                          accuracy=float(logs.get("accuracy", np.nan)),
                          steps_per_sec=steps_per_sec,
                          examples_per_sec=steps_per_sec * self.global_batch)
    if self.verbose:
      print(f"[{self.label}] epoch {self._epoch + 1}/{self.epochs} step {done}/"
            f"{self.steps_per_epoch} loss {rec['loss']:.4f} acc {rec['accuracy']:.4f} "
            f"| {rec['examples_per_sec']:.0f} ex/s", flush=True)

  def on_epoch_end(self, epoch, logs=None):
    epoch_time = time.perf_counter() - self._epoch_start
    self.train_time_s += epoch_time
    self.examples += self.steps_per_epoch * self.global_batch
    logs = logs or {}
    values = dict(epoch=epoch + 1, loss=float(logs.get("loss", np.nan)),
                  accuracy=float(logs.get("accuracy", np.nan)), epoch_time_s=epoch_time,
                  examples_seen=self.examples, train_time_s=self.train_time_s,
                  examples_per_sec=self.steps_per_epoch * self.global_batch / epoch_time)
    if self.evaluate is not None:
      self.last_test = self.evaluate(self.model.get_weights())
      values.update(test_loss=self.last_test[0], test_accuracy=self.last_test[1])
    rec = self.writer.log("epoch", self._step(), **values)
    self.history.append(rec)
    if self.verbose:
      test = (f" test_loss {self.last_test[0]:.4f} test_acc {self.last_test[1]:.4f}"
              if self.evaluate is not None else "")
      print(f"[{self.label}] epoch {epoch + 1}/{self.epochs} done in {epoch_time:.1f}s "
            f"loss {values['loss']:.4f} acc {values['accuracy']:.4f}{test} "
            f"| {values['examples_per_sec']:.0f} ex/s", flush=True)
