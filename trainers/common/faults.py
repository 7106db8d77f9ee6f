"""Fault injection: the named task dies abruptly at a scheduled step (TF-free)."""

import os
import sys


def fail_if_scheduled(task_name: str, fail_task: str | None, fail_at_step: int | None,
                      step: int, unit: str = "step") -> None:
  """Exit 3 at once, with no cleanup, when `task_name` is due to crash at `step`."""
  if fail_task and fail_at_step is not None and task_name == fail_task and step >= fail_at_step:
    print(f"fault injection: {task_name} exiting with code 3 at {unit} {step}", flush=True)
    sys.stderr.flush()
    os._exit(3)  # pylint: disable=protected-access  # no cleanup: simulate a crash
