"""One launch, parsed and checked once: the frozen record the plan, the preflight and
the spawner read (in the manner of torchrun's LaunchConfig). Pure: no flags, no
processes; launch/local.py builds it from the command line."""

import dataclasses
import sys

from cluster import approaches
from cluster.tf_config import task_names


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
  """Everything about a job that does not depend on the machine it starts on."""
  approach: str
  num_workers: int
  run_dir: str                      # absolute
  run_id: str = "run"               # every task's TFDIST_RUN_ID
  trainer_argv: tuple[str, ...] = ()  # what follows `--`, for every task
  program: tuple[str, ...] = ()     # a user's program instead of the suite's trainer
  num_ps: int = 0
  host: str = "localhost"           # a local job's address
  hosts: tuple[str, ...] = ()       # a host list: task k on hosts[k % H]
  port_base: int = 0                # the first port of each host's tasks (hosts)
  this_host: str | None = None      # start only this host's tasks
  bind: str = "task"
  timeout: float | None = None
  max_restarts: int = 0
  fail_task: str | None = None      # injected into the first attempt only
  fail_at_step: int | None = None
  gpus_per_worker: int = 1
  cpu_budget: bool = True
  threads_per_task: int | None = None
  pin_cpus: bool = False
  allow_oversubscribe: bool = False
  link_rate_bps: int | None = None  # --link, parsed
  straggler: tuple[str, float] | None = None  # --straggler, parsed: (task, factor)
  dry_run: bool = False
  launched: float | None = None     # the launcher's start (time.time()): time to accuracy
  env: tuple[tuple[str, str], ...] = ()  # variables every task gets (a caller's, not flags)

  def __post_init__(self):
    object.__setattr__(self, "trainer_argv", tuple(self.trainer_argv))
    object.__setattr__(self, "program", tuple(self.program))
    object.__setattr__(self, "hosts", tuple(self.hosts))
    object.__setattr__(self, "env", tuple(sorted(dict(self.env).items())))
    self.record.roles(self.num_workers, self.num_ps)  # ConfigError naming the flag

  @property
  def record(self) -> approaches.Approach:
    return approaches.get(self.approach)

  @property
  def roles(self) -> dict[str, int]:
    """Role -> task count (ConfigError for a count the approach cannot run)."""
    return self.record.roles(self.num_workers, self.num_ps)

  @property
  def task_names(self) -> list[str]:
    """The job's task names in plan order (role order, then index)."""
    return task_names(self.roles)


@dataclasses.dataclass(frozen=True)
class Machine:
  """What the host that starts the tasks offers them, found out once by the launcher."""
  num_gpus: int = 0
  cpu_ids: tuple[int, ...] = ()      # the cores it may use (empty: no CPU budget)
  preload: tuple[str, ...] = ()      # LD_PRELOAD for every task (the task shim first)
  python: str = sys.executable
