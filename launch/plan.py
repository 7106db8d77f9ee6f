"""Pure planning of a local (or host-list) cluster: no processes, no environment changes.

A plan says, for every task: its role and index, its address, its TF_CONFIG, the
environment variables it gets on top of the launcher's (the bind shim, the
approach's variables, its GPUs), where its log goes, the command it runs, and
whether the job waits for it to finish (`primary`) or stops it once the primaries
are done (a server task). What `--dry_run` prints is this plan, and it is exactly
what the spawner starts. What an approach needs comes from its record in
cluster.approaches; TF_CONFIG is written by cluster.tf_config.
"""

import dataclasses
import json
import os
import shlex
from typing import Callable, Mapping, Sequence

from cluster import approaches, traffic
from cluster.approaches import COMPUTE_ROLES
from cluster.tf_config import (ENV_LAUNCH_TIME, host_of, make_tf_config, role_of,
                               split_task_name, task_name, task_names)
from launch import cpu_budget, program as program_lib
from launch.config import LaunchConfig, Machine

# Variables a task gets from the plan that --dry_run shows beside TF_CONFIG.
SHOWN_ENV = ("GRPC_FAIL_FAST", "LD_PRELOAD", "TFDIST_BIND_ADDRESS")


@dataclasses.dataclass(frozen=True)
class Task:
  role: str
  index: int
  address: str
  tf_config: str
  env: Mapping[str, str]
  log_path: str
  argv: tuple[str, ...]
  primary: bool
  may_fail: bool = False  # the job survives this task's death (PS workers)
  cpu: cpu_budget.Share | None = None  # its share of the host's cores (None: all of them)
  netns: str | None = None  # --link: the network namespace it runs in
  slowdown: float = 1.0     # --straggler: runs 1/slowdown of the time (launch/spawn.py)

  @property
  def cpus(self) -> tuple[int, ...]:
    """Cores the task is bound to (--pin_cpus); () = any."""
    return self.cpu.cpus if self.cpu else ()

  @property
  def name(self) -> str:
    return task_name(self.role, self.index)


@dataclasses.dataclass(frozen=True)
class Plan:
  approach: str
  run_dir: str
  run_id: str
  cluster: Mapping[str, tuple[str, ...]]
  tasks: tuple[Task, ...]
  program: bool = False  # the tasks run a user's program, not the suite's trainer

  def describe(self) -> str:
    """Human-readable plan, as --dry_run prints it."""
    lines = [f"approach {self.approach}, run_dir {self.run_dir}, {len(self.tasks)} task(s)",
             f"cluster {json.dumps({r: list(a) for r, a in self.cluster.items()})}"]
    for t in self.tasks:
      gpu = t.env.get("CUDA_VISIBLE_DEVICES", "")
      kind = "primary" if t.primary else "server" + (" (may fail)" if t.may_fail else "")
      lines.append(f"  {t.name:<10} {t.address:<16} {kind:<8}"
                   f" gpu={gpu or '-'} log={t.log_path}")
      lines.append(f"    TF_CONFIG={t.tf_config}")
      if t.cpu:
        lines.append(f"    cpu {t.cpu.describe()}")
      if t.netns:
        lines.append(f"    netns {t.netns}")
      if t.slowdown != 1.0:
        lines.append(f"    straggler: {t.slowdown:g}x slower (runs 1/{t.slowdown:g} of the time)")
      env = " ".join(f"{k}={t.env[k]}" for k in SHOWN_ENV if t.env.get(k))
      if env:
        lines.append(f"    env {env}")
      lines.append(f"    $ {' '.join(t.argv)}")
    return "\n".join(lines)


def assign_addresses(roles: Mapping[str, int], host: str,
                     port_fn: Callable[[], int]) -> dict[str, tuple[str, ...]]:
  """host:port for every task, in role order; ports come from `port_fn` (e.g. portpicker)."""
  return {role: tuple(f"{host}:{port_fn()}" for _ in range(n)) for role, n in roles.items()}


def assign_host_addresses(roles: Mapping[str, int], hosts: Sequence[str],
                          port_base: int) -> dict[str, tuple[str, ...]]:
  """Tasks over a host list: task k (in role order) goes to hosts[k % len(hosts)], and
  the tasks of one host take consecutive ports from `port_base`. Deterministic, so
  every host computes the same cluster from the same flags."""
  if not hosts or any(not h or ":" in h or "," in h for h in hosts):
    raise ValueError(f"--hosts must be a comma-separated list of host names or IPv4 "
                     f"addresses, got {','.join(hosts)!r}")
  if len(set(hosts)) != len(hosts):
    raise ValueError(f"--hosts lists a host twice: {','.join(hosts)}")
  total = sum(roles.values())
  per_host = -(-total // len(hosts))
  if not 1024 <= port_base <= 65535 - per_host:
    raise ValueError(f"--port_base must leave {per_host} port(s) in 1024..65535, got {port_base}")
  used = {h: 0 for h in hosts}
  out: dict[str, tuple[str, ...]] = {}
  k = 0
  for role, n in roles.items():
    addrs = []
    for _ in range(n):
      host = hosts[k % len(hosts)]
      addrs.append(f"{host}:{port_base + used[host]}")
      used[host] += 1
      k += 1
    out[role] = tuple(addrs)
  return out


def attempt_argv(approach: str, trainer_argv: Sequence[str], attempt: int,
                 fail_task: str | None = None, fail_at_step: int | None = None) -> tuple[str, ...]:
  """Trainer flags for attempt `attempt` (0 = first run) of a job with restarts.

  The launcher's fault injection applies to the first attempt only (a crash
  injected "once"); every later attempt resumes from the latest checkpoint.
  """
  argv = list(trainer_argv)
  if attempt == 0:
    if fail_task is not None:
      argv += [f"--fail_task={fail_task}", f"--fail_at_step={fail_at_step}"]
  elif approaches.get(approach).takes_resume_flag and not any(
      a in ("--resume", "--resume=true") for a in argv):
    argv.append("--resume")
  return tuple(argv)


def attempt_log_dir(run_dir: str, attempt: int, max_restarts: int) -> str:
  """logs/ for a job without restarts; logs/attempt_<n>/ (kept apart) with them."""
  logs = os.path.join(run_dir, "logs")
  return os.path.join(logs, f"attempt_{attempt}") if max_restarts > 0 else logs


def check_fail_task(approach: str, cluster: Mapping[str, Sequence[str]],
                    fail_task: str | None, fail_at_step: int | None) -> None:
  """--fail_task must name a task of the plan that can be made to crash, and comes
  with --fail_at_step >= 1. (FedAvg's workers are TFF's C++ executor services,
  which run none of our code: its faults are injected into the chief.)"""
  if (fail_task is None) != (fail_at_step is None):
    raise ValueError("--fail_task and --fail_at_step go together")
  if fail_task is None:
    return
  role, _, index = fail_task.partition(":")
  if role not in cluster or not index.isdigit() or int(index) >= len(cluster[role]):
    names = task_names({r: len(a) for r, a in cluster.items()})
    raise ValueError(f"--fail_task={fail_task} is not a task of this job ({', '.join(names)})")
  if fail_at_step < 1:
    raise ValueError(f"--fail_at_step must be >= 1, got {fail_at_step}")
  record = approaches.get(approach)
  if role not in record.fault_roles:
    raise ValueError(f"--fail_task={fail_task}: {approach} injects faults into "
                     f"{', '.join(record.fault_roles)} tasks only ({record.fault_note})")


def assign_gpus(task_names: Sequence[str], num_gpus: int, gpus_per_worker: int) -> dict[str, str]:
  """Round-robin CUDA_VISIBLE_DEVICES for compute tasks; '' (no GPU) when there are none.

  With 4 GPUs and 1 per worker: worker:0 -> "0", worker:1 -> "1", ... wrapping
  around when there are more tasks than GPUs.
  """
  if gpus_per_worker < 0:
    raise ValueError(f"--gpus_per_worker must be >= 0, got {gpus_per_worker}")
  if num_gpus == 0 or gpus_per_worker == 0:
    return {name: "" for name in task_names}
  if gpus_per_worker > num_gpus:
    raise ValueError(f"--gpus_per_worker={gpus_per_worker} but only {num_gpus} GPU(s) visible")
  out = {}
  for i, name in enumerate(task_names):
    first = i * gpus_per_worker
    out[name] = ",".join(str((first + k) % num_gpus) for k in range(gpus_per_worker))
  return out


def make_plan(config: LaunchConfig, port_fn: Callable[[], int], machine: Machine = Machine(),
              attempt: int = 0, cluster: Mapping[str, Sequence[str]] | None = None,
              netns: Mapping[str, str] | None = None) -> Plan:
  """Attempt `attempt` (0: the first) of the launch `config` on `machine`, as values.

  Addresses: `cluster` if given (a restart keeps its addresses, --link's namespaces
  have theirs), else the host list with ports from its port base, else config.host
  with ports from `port_fn`. Every task's TFDIST_BIND_ADDRESS is the host of its own
  address: where its servers listen, once the machine's preload (the task shim,
  launch/task_shim.c) is in its LD_PRELOAD; with the shim, TFDIST_TRAFFIC_DIR and
  TFDIST_TASK say where it counts the task's bytes. With a CPU budget every task gets
  its share of its host's cores (launch/cpu_budget.py). `netns` (task name ->
  namespace, --link) and the straggler are passed through to the spawner.
  """
  record, roles = config.record, config.roles
  if cluster is not None:
    cluster = {r: tuple(a) for r, a in cluster.items()}
  elif config.hosts:
    cluster = assign_host_addresses(roles, config.hosts, config.port_base)
  else:
    cluster = assign_addresses(roles, config.host, port_fn)
  names = task_names(roles)
  gpus = assign_gpus([n for n in names if role_of(n) in COMPUTE_ROLES], machine.num_gpus,
                     config.gpus_per_worker)
  shares = _cpu_shares(config, cluster, names, machine)
  log_dir = attempt_log_dir(config.run_dir, attempt, config.max_restarts)
  argv = (program_lib.program_argv(config.program, machine.python) if config.program else
          (machine.python, "-m", record.trainer, f"--run_dir={config.run_dir}",
           *attempt_argv(config.approach, config.trainer_argv, attempt, config.fail_task,
                         config.fail_at_step)))
  slowdown = dict([config.straggler]) if config.straggler else {}
  tasks = []
  for name in names:
    role, index = split_task_name(name)
    env = _task_env(config, machine, cluster, name, gpus.get(name, ""), shares.get(name))
    tasks.append(Task(
        role=role, index=index, address=cluster[role][index], tf_config=env["TF_CONFIG"],
        env=env, log_path=os.path.join(log_dir, f"{role}_{index}.log"), argv=argv,
        primary=role in record.primary_roles, may_fail=role in record.tolerated_roles,
        cpu=shares.get(name), netns=(netns or {}).get(name), slowdown=slowdown.get(name, 1.0)))
  return Plan(config.approach, config.run_dir, config.run_id, cluster, tuple(tasks),
              program=bool(config.program))


def _cpu_shares(config: LaunchConfig, cluster: Mapping[str, Sequence[str]],
                names: Sequence[str], machine: Machine) -> dict[str, cpu_budget.Share]:
  """Each task's share of its host's cores (none without a CPU budget)."""
  if not (config.cpu_budget and machine.cpu_ids):
    return {}
  by_host: dict[str, list[str]] = {}
  for name in names:
    role, index = split_task_name(name)
    by_host.setdefault(host_of(cluster[role][index]), []).append(name)
  return cpu_budget.assign_hosts(by_host, machine.cpu_ids, config.threads_per_task,
                                 config.pin_cpus)


def _task_env(config: LaunchConfig, machine: Machine, cluster: Mapping[str, Sequence[str]],
              name: str, gpus: str, share: cpu_budget.Share | None) -> dict[str, str]:
  """The variables one task gets on top of the launcher's environment."""
  role, index = split_task_name(name)
  env = {ENV_LAUNCH_TIME: repr(config.launched)} if config.launched is not None else {}
  env.update(config.record.env)
  env.update(config.env)  # the caller's (an experiment's kernel setting, say)
  if machine.preload:
    env["LD_PRELOAD"] = " ".join(machine.preload)
    # The shim counts this task's bytes on the wire into the run's traffic/ (see
    # cluster/traffic.py).
    env[traffic.ENV_DIR] = traffic.traffic_dir(config.run_dir)
    env[traffic.ENV_TASK] = name
  env.update({
      "TF_CONFIG": make_tf_config(cluster, role, index),
      "CUDA_VISIBLE_DEVICES": gpus,  # ps tasks: CPU only
      "PYTHONUNBUFFERED": "1",
      "TFDIST_RUN_ID": config.run_id,  # lets tests find every process of a run
      "TFDIST_RUN_DIR": config.run_dir,  # where a user's program may write
      "TFDIST_BIND_ADDRESS": host_of(cluster[role][index]),
  })
  if share:
    env.update(share.env())
  return env


def parse_straggler(text: str, names: Sequence[str]) -> tuple[str, float]:
  """'worker:1:3' -> ("worker:1", 3.0); the task must be one of `names`."""
  role, _, rest = text.partition(":")
  index, _, factor = rest.partition(":")
  try:
    value = float(factor)
  except ValueError:
    value = None
  if not role or not index.isdigit() or value is None:
    raise ValueError(f"--straggler must be ROLE:INDEX:FACTOR (e.g. worker:1:3), got {text!r}")
  if task_name(role, index) not in names:
    raise ValueError(f"--straggler={text}: {role}:{index} is not a task of this job "
                     f"({', '.join(names)})")
  if not 1.0 < value <= 100.0:
    raise ValueError(f"--straggler={text}: FACTOR must be in (1, 100], got {factor}")
  return task_name(role, index), value


def restarted_task(task: Task, log_dir: str, approach: str, attempt: int,
                   program: bool = False) -> Task:
  """`task` started again in place (same address and TF_CONFIG): a new log, and the
  flags of a later attempt (no injected fault); a user's program as it was."""
  argv = task.argv
  if not program:
    module_end = 3  # (python, "-m", module)
    run_dir_flag, trainer_argv = task.argv[module_end], task.argv[module_end + 1:]
    argv = (*task.argv[:module_end], run_dir_flag,
            *attempt_argv(approach, _without_fault(trainer_argv), attempt))
  return dataclasses.replace(task, argv=argv, log_path=os.path.join(
      log_dir, os.path.basename(task.log_path)))


def _without_fault(argv: Sequence[str]) -> list[str]:
  return [a for a in argv if not a.startswith(("--fail_task=", "--fail_at_step="))]


def host_plans(plan: Plan) -> dict[str, list[Task]]:
  """host -> its tasks, in plan order: what each machine of a host list starts."""
  out: dict[str, list[Task]] = {}
  for t in plan.tasks:
    out.setdefault(host_of(t.address), []).append(t)
  return out


def for_host(plan: Plan, host: str) -> Plan:
  """The part of `plan` one host starts (--this_host)."""
  tasks = tuple(t for t in plan.tasks if host_of(t.address) == host)
  if not tasks:
    hosts = ", ".join(host_plans(plan))
    raise ValueError(f"--this_host={host} runs no task of this job (hosts: {hosts})")
  return dataclasses.replace(plan, tasks=tasks)


def shell_command(task: Task, keys: Sequence[str] = ("TF_CONFIG",)) -> str:
  """The exact command line that starts `task` on its host, with its TF_CONFIG."""
  env = " ".join(f"{k}={shlex.quote(task.env[k])}" for k in keys if task.env.get(k))
  return f"{env} {' '.join(shlex.quote(a) for a in task.argv)}".strip()
