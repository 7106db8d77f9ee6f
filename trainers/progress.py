"""Progress lines and metric records for every training loop (Keras fit or hand-written).

One format everywhere:
    [ps/async] epoch 1/2 step 300/937 loss 0.3120 acc 0.9061 | 8177 ex/s | eta 12s
"""

import time
from typing import Any, Callable

from trainers.outputs import RunWriter


class Progress:
  """Tracks throughput between calls, prints one line and writes one record per call."""

  def __init__(self, writer: RunWriter, label: str, epochs: int, steps_per_epoch: int,
               examples_per_step: int, verbose: bool = True):
    self.writer, self.label, self.verbose = writer, label, verbose
    self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
    self.examples_per_step = examples_per_step
    self.train_time_s = 0.0       # time inside epochs, evaluation excluded
    self.examples = 0             # training examples processed (all workers)
    self.last_test = (float("nan"), float("nan"))
    self.history: list[dict] = []
    self._mark = self._epoch_start = time.perf_counter()
    self._mark_step = 0

  def first_step(self, global_step: int) -> None:
    """Records when training produced its first update (start-up latency)."""
    self.writer.log("first_step", global_step)

  def start_epoch(self) -> None:
    self._mark = self._epoch_start = time.perf_counter()
    self._mark_step = 0

  def step(self, epoch: int, step_in_epoch: int, global_step: int, loss: float,
           accuracy: float, **extra: Any) -> dict:
    """Call at a logging point; `epoch` counts from 1, `step_in_epoch` is steps done."""
    now = time.perf_counter()
    rate = (step_in_epoch - self._mark_step) / max(now - self._mark, 1e-9)
    self._mark, self._mark_step = now, step_in_epoch
    remaining = (self.epochs - epoch) * self.steps_per_epoch + self.steps_per_epoch - step_in_epoch
    rec = self.writer.log("step", global_step, epoch=epoch, loss=float(loss),
                          accuracy=float(accuracy), steps_per_sec=rate,
                          examples_per_sec=rate * self.examples_per_step, **extra)
    if self.verbose:
      extras = "".join(f" {k} {v:.4g}" for k, v in extra.items() if isinstance(v, float))
      print(f"[{self.label}] epoch {epoch}/{self.epochs} step {step_in_epoch}/"
            f"{self.steps_per_epoch} loss {loss:.4f} acc {accuracy:.4f}{extras} | "
            f"{rec['examples_per_sec']:.0f} ex/s | eta {remaining / max(rate, 1e-9):.0f}s",
            flush=True)
    return rec

  def end_epoch(self, epoch: int, global_step: int, loss: float, accuracy: float,
                evaluate: Callable[[], tuple[float, float]] | None = None, **extra: Any) -> dict:
    """Call after each epoch's training; `evaluate()` -> (test loss, test accuracy) runs
    after the epoch's clock has stopped, so evaluation never counts as training time."""
    epoch_time = time.perf_counter() - self._epoch_start
    test = evaluate() if evaluate is not None else None
    self.train_time_s += epoch_time
    self.examples += self.steps_per_epoch * self.examples_per_step
    values = dict(epoch=epoch, loss=float(loss), accuracy=float(accuracy),
                  epoch_time_s=epoch_time, examples_seen=self.examples,
                  train_time_s=self.train_time_s,
                  examples_per_sec=self.steps_per_epoch * self.examples_per_step / epoch_time,
                  **extra)
    if test is not None:
      self.last_test = test
      values.update(test_loss=test[0], test_accuracy=test[1])
    rec = self.writer.log("epoch", global_step, **values)
    self.history.append(rec)
    if self.verbose:
      shown = f" test_loss {test[0]:.4f} test_acc {test[1]:.4f}" if test is not None else ""
      print(f"[{self.label}] epoch {epoch}/{self.epochs} done in {epoch_time:.1f}s "
            f"loss {loss:.4f} acc {accuracy:.4f}{shown} | "
            f"{values['examples_per_sec']:.0f} ex/s", flush=True)
    return rec

  def summary_fields(self) -> dict:
    """The throughput/accuracy part of summary.json every approach shares."""
    return {"test_loss": self.last_test[0], "test_accuracy": self.last_test[1],
            "train_time_s": self.train_time_s, "examples_processed": self.examples,
            "examples_per_sec": self.examples / max(self.train_time_s, 1e-9)}
