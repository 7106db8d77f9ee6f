"""Where the seconds from the launcher's start to the first training step go.

The trainer marks the end of each start-up phase once (`mark`); the session turns
the marks, the process' own start and the launcher's into the phases of
summary.json's `startup_s` (`breakdown`). TF-free, no side effects beyond the marks.

  launcher     launcher start -> this process started (flag checks, preflight, spawn)
  import       process start -> trainer module imported (Python, TensorFlow, TFF)
  peers        waiting for every peer task to answer (lifecycle.await_peers)
  cluster      strategy and TF's gRPC server / collective runtime, TFF's context
  data         reading the dataset splits into memory
  first_step   model and optimizer built, input pipeline, tracing, the first step
"""

import time

PHASES = ("launcher", "import", "peers", "cluster", "data", "first_step")
_MARKS: dict[str, float] = {}


def mark(phase: str, when: float | None = None) -> None:
  """Records the end of `phase` (the first call wins: a phase ends once)."""
  _MARKS.setdefault(phase, time.time() if when is None else when)


def breakdown(process_start: float, launched: float | None, first_step: float | None,
              marks: dict[str, float] | None = None) -> dict[str, float | None]:
  """Seconds per phase; a phase whose end or start is unknown is None, and an
  unmarked phase in the middle takes no time (its successor absorbs nothing)."""
  marks = dict(_MARKS if marks is None else marks)
  marks["launcher"] = process_start
  if first_step is not None:
    marks["first_step"] = first_step
  out, previous = {}, launched
  for phase in PHASES:
    end = marks.get(phase)
    if end is None:
      out[phase] = None if phase in ("launcher", "first_step") else 0.0
      continue
    out[phase] = None if previous is None else round(max(end - previous, 0.0), 3)
    previous = end
  return out


def reset() -> None:
  """Forgets the marks (a process that opens several runs: tests)."""
  _MARKS.clear()
