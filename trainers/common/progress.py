"""Progress lines and metric records for every training loop (Keras fit or hand-written).

One format everywhere, in steps and epochs or (FedAvg) in rounds:
    [ps/async] epoch 1/2 step 300/937 loss 0.3120 acc 0.9061 | 8177 ex/s | eta 12s
    [fedavg] round 3/20 loss 0.2210 acc 0.9350 test_acc 0.9512 | 1.52s, 3947 ex/s | eta 26s

Records go to metrics.jsonl with kind "first_step", "step", "eval", "epoch",
"round" or "target"; "eval", "epoch" and "round" records carry `examples_seen` and,
when evaluated, `test_loss`, `test_accuracy` and the measured bytes on the wire so
far, so every approach's curve is read the same way.

Time to accuracy: with a target, the first evaluation at or above it is the
"target" record (seconds from the launcher's start and from the first step,
examples, steps or rounds, bytes), and `should_stop` turns true if the run stops
there. Deciding to stop is the approach's: its workers must agree on the step.
"""

import dataclasses
import math
import time
from typing import Any, Callable, Iterator

from trainers.common.errors import Diverged
from trainers.common.outputs import RunWriter


class Progress:
  """Tracks throughput between calls, prints one line and writes one record per call."""

  def __init__(self, writer: RunWriter, label: str, epochs: int, steps_per_epoch: int,
               examples_per_step: int, verbose: bool = True, target: "Target | None" = None,
               traffic: Callable[[], dict] | None = None):
    """`traffic()` -> the measured bytes so far (fields added to every evaluation)."""
    self.writer, self.label, self.verbose = writer, label, verbose
    self.target = target or Target()
    self._traffic = traffic or dict
    self.first_step_rec: dict | None = None
    self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
    self.examples_per_step = examples_per_step
    self.train_time_s = 0.0       # time inside epochs, evaluation excluded
    self.examples = 0             # training examples processed (all workers)
    self.last_test = (float("nan"), float("nan"))
    self.history: list[dict] = []
    self._mark = self._epoch_start = time.perf_counter()
    self._mark_step = 0
    self._eval_in_epoch_s = 0.0  # mid-epoch evaluations, kept out of the epoch's time

  def first_step(self, global_step: int) -> None:
    """Records when training produced its first update (start-up latency)."""
    self.first_step_rec = self.writer.log("first_step", global_step)

  def start_epoch(self) -> None:
    self._mark = self._epoch_start = time.perf_counter()
    self._mark_step = 0
    self._eval_in_epoch_s = 0.0

  def evaluate(self, epoch: int, step_in_epoch: int, global_step: int,
               evaluate: Callable[[], tuple[float, float]]) -> dict:
    """A mid-epoch evaluation (--eval_every_examples): one "eval" record with the
    examples seen so far; its time counts neither as training nor in the throughput."""
    t = time.perf_counter()
    test = evaluate()
    check_finite(global_step, test_loss=test[0], test_accuracy=test[1])
    self.last_test = test
    seen = self.examples + step_in_epoch * self.examples_per_step
    rec = self.writer.log("eval", global_step, epoch=epoch, examples_seen=seen,
                          test_loss=test[0], test_accuracy=test[1], **self._traffic())
    self._check_target(rec)
    spent = time.perf_counter() - t
    self._eval_in_epoch_s += spent
    self._mark += spent
    if self.verbose:
      print(f"[{self.label}] epoch {epoch}/{self.epochs} step {step_in_epoch}/"
            f"{self.steps_per_epoch}{_shown(test)} ({seen} examples)", flush=True)
    return rec

  def step(self, epoch: int, step_in_epoch: int, global_step: int, loss: float,
           accuracy: float, **extra: Any) -> dict:
    """Call at a logging point; `epoch` counts from 1, `step_in_epoch` is steps done."""
    check_finite(global_step, loss=loss)
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
                evaluate: Callable[[], tuple[float, float]] | None = None,
                steps_done: int | None = None, **extra: Any) -> dict:
    """Call after each epoch's training; `evaluate()` -> (test loss, test accuracy) runs
    after the epoch's clock has stopped, so evaluation never counts as training time.
    `steps_done`: the steps of an epoch cut short (a run stopped at its target)."""
    epoch_time = time.perf_counter() - self._epoch_start - self._eval_in_epoch_s
    steps = self.steps_per_epoch if steps_done is None else steps_done
    examples = steps * self.examples_per_step
    rec, test = self._close_unit("epoch", global_step, epoch_time, examples, evaluate, {},
                                 epoch=epoch, loss=float(loss), accuracy=float(accuracy),
                                 epoch_time_s=epoch_time, **extra)
    if self.verbose:
      print(f"[{self.label}] epoch {epoch}/{self.epochs} done in {epoch_time:.1f}s "
            f"loss {loss:.4f} acc {accuracy:.4f}{_shown(test)} | "
            f"{rec['examples_per_sec']:.0f} ex/s", flush=True)
    return rec

  def end_round(self, round_num: int, total_rounds: int, loss: float, accuracy: float,
                examples: int, round_time_s: float,
                evaluate: Callable[[], tuple[float, float]] | None = None,
                **extra: Any) -> dict:
    """Call after each federated round (the unit of FedAvg's progress); evaluation,
    if due, runs outside the round's time. The first round is also the first step."""
    if not self.history:
      self.first_step(round_num)
    rec, test = self._close_unit("round", round_num, round_time_s, examples, evaluate,
                                 {"examples": examples}, round=round_num, loss=float(loss),
                                 accuracy=float(accuracy), round_time_s=round_time_s, **extra)
    if self.verbose:
      eta = self.train_time_s / len(self.history) * (total_rounds - round_num)
      print(f"[{self.label}] round {round_num}/{total_rounds} loss {loss:.4f} "
            f"acc {accuracy:.4f}{_shown(test)} | {round_time_s:.2f}s, "
            f"{rec['examples_per_sec']:.0f} ex/s | eta {eta:.0f}s", flush=True)
    return rec

  def _close_unit(self, kind: str, step: int, seconds: float, examples: int,
                  evaluate: Callable[[], tuple[float, float]] | None,
                  first: dict[str, Any], **values: Any):
    """Books one epoch or round: time, examples, the evaluation; writes its record
    (`first`'s fields, then `values`')."""
    values = {**first, **values}
    check_finite(step, **{k: values[k] for k in ("loss", "accuracy") if k in values})
    test = evaluate() if evaluate is not None else None
    if test is not None:
      check_finite(step, test_loss=test[0], test_accuracy=test[1])
    self.train_time_s += seconds
    self.examples += examples
    values.update(examples_seen=self.examples, train_time_s=self.train_time_s,
                  examples_per_sec=examples / max(seconds, 1e-9))
    if test is not None:
      self.last_test = test
      values.update(test_loss=test[0], test_accuracy=test[1], **self._traffic())
    rec = self.writer.log(kind, step, **values)
    self.history.append(rec)
    if test is not None:
      self._check_target(rec)
    return rec, test

  def _check_target(self, rec: dict) -> None:
    """Books `rec` as the time to target if it is the first evaluation to reach it."""
    if not self.target.accuracy or self.target.reached is not None \
        or rec["test_accuracy"] < self.target.accuracy:
      return
    self.target.reached = fields = self.target.fields(rec, self.first_step_rec)
    self.writer.log("target", rec["step"], **fields)
    if self.verbose:
      when = f"{fields['time_to_target_s']:.1f}s from the {fields['time_to_target_from']}'s start"
      print(f"[{self.label}] reached {self.target.accuracy:.2%} test accuracy: {when}, "
            f"{fields['train_time_to_target_s']:.1f}s from the first step, "
            f"{fields['examples_to_target']} examples, step {fields['steps_to_target']}"
            f"{'; stopping' if self.should_stop else ''}", flush=True)

  @property
  def should_stop(self) -> bool:
    """The target is reached and the run is to stop there (--stop_at_target)."""
    return self.target.stop and self.target.reached is not None

  def summary_fields(self) -> dict:
    """The throughput/accuracy part of summary.json every approach shares."""
    return {"test_loss": self.last_test[0], "test_accuracy": self.last_test[1],
            "train_time_s": self.train_time_s, "examples_processed": self.examples,
            "examples_per_sec": self.examples / max(self.train_time_s, 1e-9),
            "first_step_since_launch_s": (self.first_step_rec or {}).get("since_launch_s"),
            **self.target.summary_fields()}


@dataclasses.dataclass
class Target:
  """Time to accuracy: the target, whether to stop there, and when it was reached."""
  accuracy: float | None = None  # None: no target
  stop: bool = False             # stop at the first evaluation that reaches it
  reached: dict | None = None    # the target fields, once reached

  def fields(self, rec: dict, first_step: dict | None) -> dict:
    """The time-to-target fields of the evaluation record `rec` that reached it:
    seconds from the launcher's start (else from the process start) and from the
    first training step, examples, steps (FedAvg: rounds), bytes so far."""
    launched = "since_launch_s" in rec
    return {
        "target_accuracy": self.accuracy, "test_accuracy": rec["test_accuracy"],
        "time_to_target_s": rec["since_launch_s"] if launched else rec["elapsed_s"],
        "time_to_target_from": "launcher" if launched else "process",
        "train_time_to_target_s": rec["time"] - (first_step or rec)["time"],
        "examples_to_target": rec["examples_seen"], "steps_to_target": rec["step"],
        **{f"{k}_to_target": v for k, v in rec.items() if k.startswith("bytes_")}}

  def summary_fields(self) -> dict:
    if not self.accuracy:
      return {}
    reached = self.reached or {}
    return {"target_accuracy": self.accuracy, "reached_target": bool(self.reached),
            **{k: reached.get(k) for k in (
                "time_to_target_s", "time_to_target_from", "train_time_to_target_s",
                "examples_to_target", "steps_to_target", "bytes_sent_per_worker_to_target",
                "bytes_received_per_worker_to_target")}}


def _shown(test: tuple[float, float] | None) -> str:
  return f" test_loss {test[0]:.4f} test_acc {test[1]:.4f}" if test is not None else ""


@dataclasses.dataclass(frozen=True)
class Chunk:
  """Steps [start, end) of one epoch, trained between two progress points."""
  epoch: int          # counts from 1
  start: int          # global step before the chunk
  end: int            # global step after it
  step_in_epoch: int  # steps of this epoch done after it
  opens_epoch: bool
  closes_epoch: bool  # the epoch ends here: evaluate and checkpoint
  evaluates: bool = False  # an --eval_every_examples point inside the epoch

  @property
  def size(self) -> int:
    return self.end - self.start


def schedule(start_step: int, steps_per_epoch: int, epochs: int, log_every: int,
             eval_every: int | None = None) -> Iterator[Chunk]:
  """The progress and evaluation cadence of a step-based loop: chunks that end at
  every multiple of `log_every`, of `eval_every` (steps; None: epoch ends only) and
  at every epoch end, from `start_step` (a resumed run) to the last step. The test
  split is evaluated where a chunk closes an epoch or `evaluates`."""
  step, total = start_step, steps_per_epoch * epochs
  while step < total:
    epoch = step // steps_per_epoch + 1
    epoch_end = epoch * steps_per_epoch
    opens = True
    while step < epoch_end:
      end = min(epoch_end, _next_multiple(step, log_every),
                _next_multiple(step, eval_every) if eval_every else epoch_end)
      closes = end == epoch_end
      yield Chunk(epoch, step, end, end - (epoch - 1) * steps_per_epoch, opens, closes,
                  bool(eval_every) and end % eval_every == 0 and not closes)
      opens, step = False, end


def _next_multiple(step: int, every: int) -> int:
  return (step // every + 1) * every


def eval_every_steps(eval_every_examples: int | None, examples_per_step: int) -> int | None:
  """--eval_every_examples as a step count (at least one step); None: per epoch."""
  if not eval_every_examples:
    return None
  return max(1, -(-eval_every_examples // examples_per_step))


def round_due_for_eval(round_num: int, last_round: int, every: int) -> bool:
  """FedAvg's evaluation cadence: every `every` rounds and after the last."""
  return round_num % every == 0 or round_num == last_round


def check_finite(step: int, **metrics: float) -> None:
  """Raises Diverged naming the first non-finite metric and the step."""
  for name, value in metrics.items():
    if not math.isfinite(float(value)):
      raise Diverged(f"{name} is {value} at step {step}; lower --learning_rate or check "
                     "the data")
