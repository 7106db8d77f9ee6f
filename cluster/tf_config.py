"""TF_CONFIG, the one contract between whatever starts a task and the task itself.

`make_tf_config` writes it (the launcher, Slurm resolution), `parse_tf_config`
reads and validates it into a frozen `TaskInfo` (the trainers). Kubernetes'
training operator writes the same shape.
"""

import dataclasses
import json
import re
from typing import Mapping, Sequence

from cluster.errors import ConfigError

# A task's name, role:index, as every log prefix, flag and record spells it.
TASK_NAME_RE = re.compile(r"^(chief|worker|ps):\d+$")


def task_name(role: str, index: int) -> str:
  """'worker', 1 -> 'worker:1'."""
  return f"{role}:{index}"


def split_task_name(name: str) -> tuple[str, int]:
  """'worker:1' -> ('worker', 1)."""
  role, _, index = name.partition(":")
  return role, int(index)


def role_of(name: str) -> str:
  """'worker:1' -> 'worker'."""
  return name.partition(":")[0]


def task_names(roles: Mapping[str, int]) -> list[str]:
  """Every task of a job (role -> count), in role order, then index."""
  return [task_name(r, i) for r, n in roles.items() for i in range(n)]


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """Where this process sits in the cluster."""
  cluster: Mapping[str, tuple[str, ...]]
  task_type: str
  task_index: int

  @property
  def num_workers(self) -> int:
    return len(self.cluster.get("worker", ()))

  @property
  def is_chief(self) -> bool:
    """The task that writes outputs: `chief` if the cluster has one, else worker 0."""
    if "chief" in self.cluster:
      return self.task_type == "chief"
    return self.task_type == "worker" and self.task_index == 0

  @property
  def name(self) -> str:
    return task_name(self.task_type, self.task_index)

  @property
  def address(self) -> str:
    return self.cluster[self.task_type][self.task_index]


SINGLE_PROCESS = TaskInfo(cluster={"worker": ("localhost:0",)}, task_type="worker", task_index=0)


def host_of(address: str) -> str:
  """'10.0.0.1:2222' -> '10.0.0.1'."""
  return address.rpartition(":")[0]


def port_of(address: str) -> int:
  """'10.0.0.1:2222' -> 2222."""
  return int(address.rpartition(":")[2])


def make_tf_config(cluster: Mapping[str, Sequence[str]], role: str, index: int) -> str:
  """The TF_CONFIG of task role:index of `cluster` (role -> addresses)."""
  spec = {r: list(a) for r, a in cluster.items()}
  return json.dumps({"cluster": spec, "task": {"type": role, "index": index}}, sort_keys=True)


def parse_tf_config(raw: str | None) -> TaskInfo:
  """Parses a TF_CONFIG string; None or empty means a single local process."""
  if not raw:
    return SINGLE_PROCESS
  try:
    cfg = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ConfigError(f"TF_CONFIG is not valid JSON ({e.msg} at char {e.pos})") from e
  if not isinstance(cfg, dict) or not isinstance(cfg.get("cluster"), dict) \
      or not isinstance(cfg.get("task"), dict):
    raise ConfigError('TF_CONFIG must be {"cluster": {role: [host:port, ...]}, '
                      '"task": {"type": role, "index": i}}')
  cluster = {}
  for role, addrs in cfg["cluster"].items():
    if not isinstance(addrs, list) or not addrs or not all(
        isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addrs):
      raise ConfigError(f"TF_CONFIG cluster role {role!r} must be a non-empty list of "
                        f"'host:port' strings, got {addrs!r}")
    cluster[role] = tuple(addrs)
  task_type = cfg["task"].get("type")
  task_index = cfg["task"].get("index", 0)
  if task_type not in cluster:
    raise ConfigError(f"TF_CONFIG task type {task_type!r} is not a role of the cluster "
                      f"{sorted(cluster)}")
  if not isinstance(task_index, int) or not 0 <= task_index < len(cluster[task_type]):
    raise ConfigError(f"TF_CONFIG task index {task_index!r} out of range for "
                      f"{len(cluster[task_type])} {task_type} task(s)")
  return TaskInfo(cluster, task_type, task_index)


# The launcher's start (time.time(), seconds), passed to every task: time to accuracy
# counts from there, start-up included.
ENV_LAUNCH_TIME = "TFDIST_LAUNCH_TIME"


def launch_time(environ: Mapping[str, str]) -> float | None:
  """The launcher's start from `environ`; None when not launched (or unreadable)."""
  try:
    return float(environ[ENV_LAUNCH_TIME])
  except (KeyError, ValueError):
    return None
