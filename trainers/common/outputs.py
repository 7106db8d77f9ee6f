"""The output contract every approach writes into its run directory.

    <run_dir>/config.json     every flag value
    <run_dir>/metrics.jsonl   one JSON object per logging step / epoch / round
    <run_dir>/tb/             TensorBoard scalars of the same records
    <run_dir>/summary.json    the final figures (see REQUIRED_SUMMARY_KEYS)

Only the task that owns the outputs (the chief) writes; others get a writer
that does nothing, so trainer code has no `if chief` around every record.
"""

import datetime
import json
import math
import numbers
import os
import time
from typing import Any, Mapping

from cluster import posix

# The common core every approach's summary carries (trainers/common/session.py).
REQUIRED_SUMMARY_KEYS = ("approach", "label", "dataset", "model", "num_workers",
                         "test_accuracy", "test_loss", "wall_time_s", "train_time_s",
                         "examples_processed", "examples_per_sec", "bytes_sent_per_worker",
                         "notes", "run_dir")


def default_run_dir(approach: str, now: datetime.datetime | None = None) -> str:
  stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
  return os.path.join("runs", f"{approach}-{stamp}")


def write_json_atomic(path: str, obj: Any) -> None:
  """Write then rename, so a reader never sees a half-written file."""
  with posix.atomic_path(path) as tmp, open(tmp, "w") as f:
    json.dump(strict_json(obj), f, indent=2, sort_keys=True, allow_nan=False)
    f.write("\n")


def strict_json(value: Any) -> Any:
  """`value` as plain JSON types: numpy scalars and arrays unwrapped, and NaN or
  infinity as None (null), which JSON has no literal for."""
  if isinstance(value, dict):
    return {str(k): strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  if hasattr(value, "tolist"):  # numpy scalars and arrays
    return strict_json(value.tolist())
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if value is None or isinstance(value, (bool, int, str)):
    return value
  return str(value)


def amend_summary(run_dir: str, fields) -> bool:
  """Adds `fields(summary)` (a dict) to an existing summary.json, atomically: what only
  the launcher knows once every task has exited (final bytes on the wire, the veth
  counters, the straggler). The one other way summary.json is written, beside
  RunWriter.write_summary. False if there is no summary.json."""
  path = os.path.join(run_dir, "summary.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    summary = json.load(f)
  summary.update(fields(summary))
  write_json_atomic(path, summary)
  return True


class RunWriter:
  """Writes config, metric records (JSONL + TensorBoard) and the summary."""

  def __init__(self, run_dir: str, enabled: bool = True, start: float | None = None,
               launched: float | None = None):
    """`start` (time.time() scale, default now) is where records' elapsed_s counts
    from; `launched` (the launcher's start, if known) where their since_launch_s does."""
    self.run_dir = run_dir
    self.enabled = enabled
    self._start = time.time() if start is None else start
    self._launched = launched
    self._metrics = None
    self._tb = None
    if enabled:
      os.makedirs(run_dir, exist_ok=True)
      self._metrics = open(os.path.join(run_dir, "metrics.jsonl"), "a", buffering=1)

  def write_config(self, config: Mapping[str, Any]) -> None:
    if self.enabled:
      write_json_atomic(os.path.join(self.run_dir, "config.json"), dict(config))

  def log(self, kind: str, step: int, **values: Any) -> dict:
    """Appends one record {time, elapsed_s, [since_launch_s,] kind, step, **values};
    returns it."""
    now = time.time()
    record = {"time": now, "elapsed_s": round(now - self._start, 3)}
    if self._launched is not None:
      record["since_launch_s"] = round(now - self._launched, 3)
    record.update(kind=kind, step=int(step), **values)
    if not self.enabled:
      return record
    self._metrics.write(json.dumps(strict_json(record), allow_nan=False) + "\n")
    self._write_tb(kind, step, values)
    return record

  def _write_tb(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self._tb is None:
      # Pinned to the CPU and outside any strategy: summaries are host-side files.
      self._tb = tf.summary.create_file_writer(os.path.join(self.run_dir, "tb"))
    with self._tb.as_default(step=int(step)):
      for key, value in values.items():
        if isinstance(value, numbers.Number) and not isinstance(value, bool) \
            and math.isfinite(float(value)):
          tf.summary.scalar(f"{kind}/{key}", float(value))
    self._tb.flush()

  def write_summary(self, summary: Mapping[str, Any]) -> dict:
    summary = strict_json(dict(summary))
    missing = [k for k in REQUIRED_SUMMARY_KEYS if k not in summary]
    if missing:
      raise ValueError(f"summary lacks required keys {missing}")
    if self.enabled:
      write_json_atomic(os.path.join(self.run_dir, "summary.json"), summary)
    return summary

  def close(self) -> None:
    if self._metrics:
      self._metrics.close()
      self._metrics = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None
