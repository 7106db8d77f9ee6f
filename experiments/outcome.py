"""How a run ended: the one rule every experiment driver reads (no TF, no processes).

A run directory holds, after a launch, the chief's summary.json (with `status`:
"ok", or why the run ended without results, e.g. "diverged") and, when the
comparison launched it, compare_exit.json (the launcher's exit code and seconds).
compare (--reuse), the regime grid, the scaling sweep, the bench and the report all
decide "did it finish?", "did it reach the target?" and "run it again?" here:

- ok: summary.json exists and its status is "ok" (results to report);
- reached: ok and the summary says the target was reached;
- reusable (--reuse): ok, or the launcher timed it out (it would time out again,
  unless the run is now given more time: `reusable_within`).
  A diverged or otherwise failed run is run again.
"""

import dataclasses
import json
import os

from cluster import exits

SUMMARY, EXIT_FILE = "summary.json", "compare_exit.json"
OK = "ok"


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What a run directory says about how its run ended."""
  summary: dict | None      # summary.json (None: not written)
  exit_code: int | None     # compare_exit.json's launcher exit code (None: not recorded)
  seconds: float | None = None

  @property
  def status(self) -> str:
    """"ok", the summary's failure status (e.g. "diverged"), "timeout", "failed"
    (a launcher exit code without a summary) or "missing" (nothing recorded)."""
    if self.summary is not None:
      return self.summary.get("status", OK)
    if self.exit_code == exits.TIMEOUT:
      return "timeout"
    return "missing" if self.exit_code is None else "failed"

  @property
  def ok(self) -> bool:
    return self.status == OK and (self.exit_code in (None, exits.OK))

  @property
  def reached(self) -> bool:
    return self.ok and bool(self.summary.get("reached_target"))

  @property
  def reusable(self) -> bool:
    return self.reusable_within(None)

  def reusable_within(self, timeout_s: float | None) -> bool:
    """Reusable for a run now given `timeout_s`: a timed-out run only when it had at
    least that long (given more time, it runs again; with --resume it continues)."""
    if self.ok:
      return True
    if self.status != "timeout":
      return False
    return timeout_s is None or self.seconds is None or self.seconds >= timeout_s

  @property
  def error(self) -> str:
    """One line saying why a run that is not ok is not ("" when it is)."""
    if self.ok:
      return ""
    if self.summary is not None and self.status != OK:
      return f"{self.status}: {self.summary.get('error', '')}".rstrip(": ")
    if self.exit_code is not None:
      return f"{self.status} (exit {self.exit_code})"
    return "no summary.json"


def _json(path: str) -> dict | None:
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def of_run(run_dir: str) -> Outcome:
  """The outcome recorded in `run_dir` (a missing directory: nothing recorded)."""
  ended = _json(os.path.join(run_dir, EXIT_FILE)) or {}
  return Outcome(summary=_json(os.path.join(run_dir, SUMMARY)),
                 exit_code=ended.get("exit_code"), seconds=ended.get("seconds"))


def record_exit(run_dir: str, exit_code: int, seconds: float) -> None:
  """compare_exit.json: how the launcher ended, for --reuse and the grids."""
  if os.path.isdir(run_dir):
    with open(os.path.join(run_dir, EXIT_FILE), "w") as f:
      json.dump({"exit_code": exit_code, "seconds": seconds}, f)
