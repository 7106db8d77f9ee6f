"""The parameter server's non-chief tasks, and how the chief reaches them.

Worker and ps tasks run a `tf.distribute.Server` and no Python of ours while they
serve (trainers/common/server.py). So the chief stops them (training over: exit 0) or crashes one (fault
injection: SIGABRT) with TF's `Abort` op placed on that task's device.
"""

import logging

import tensorflow as tf

from cluster.tf_config import TaskInfo, split_task_name

SERVER_ROLES = ("worker", "ps")


def abort_task(role: str, index: int, message: str, exit_without_error: bool) -> None:
  """Runs TF's Abort op on a server task's device: that process exits at once, with
  SIGABRT or (exit_without_error) code 0. The RPC itself may fail as it goes."""
  try:
    with tf.device(f"/job:{role}/replica:0/task:{index}/device:CPU:0"):
      tf.raw_ops.Abort(error_msg=message, exit_without_error=exit_without_error)
  except (tf.errors.OpError, RuntimeError):
    pass  # the task is gone, or going: expected


def crash(task_name: str, step: int) -> None:
  """Fault injection for a server task: it dies at once (SIGABRT), as a crashed
  machine would."""
  role, index = split_task_name(task_name)
  print(f"fault injection: crashing {task_name} at step {step}", flush=True)
  abort_task(role, index, f"fault injection: {task_name} crashes at step {step}",
             exit_without_error=False)


def stop_all(task: TaskInfo) -> None:
  """Training is over: every worker and ps task exits with code 0, so hosts that run
  only servers finish by themselves."""
  for role in SERVER_ROLES:
    for i in range(len(task.cluster.get(role, ()))):
      abort_task(role, i, "training finished", exit_without_error=True)


class _RecoveryFilter(logging.Filter):
  """Passes records at or above `floor`, and the coordinator's 'recovered' line."""

  def __init__(self, floor: int):
    super().__init__()
    self.floor = floor

  def filter(self, record):
    return record.levelno >= self.floor or "has been recovered" in record.getMessage()


def show_worker_recovery(logger: logging.Logger) -> None:
  """The coordinator logs a returning worker at INFO, below TF's default level: let
  that one line through (so a restart is visible), and nothing else new."""
  if logger.getEffectiveLevel() > logging.INFO:
    logger.addFilter(_RecoveryFilter(logger.getEffectiveLevel()))
    logger.setLevel(logging.INFO)
