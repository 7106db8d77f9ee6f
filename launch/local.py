"""Start a training job as N local processes, one per task, each with its own TF_CONFIG.

    python -m launch.local --approach=allreduce --num_workers=2 -- --model=mlp --epochs=1

Everything after `--` goes to the trainer of every task (checked before anything
starts). Each task's output is shown behind a `[worker:1]` prefix and saved to
`<run_dir>/logs/<role>_<index>.log`. If any task fails, the launcher stops all
the others, names the failed task with its exit code and the tail of its log,
and exits non-zero; `--timeout` and Ctrl-C do the same. `--dry_run` prints the
plan (cluster, TF_CONFIG, command, GPU and log of every task) and exits.

Fault tolerance: `--max_restarts=K` starts the job again (each attempt's logs in
`logs/attempt_<n>/`) after a task fails, up to K times, resuming from the latest
checkpoint: every task for all-reduce, gossip and FedAvg; only the dead worker
for the parameter server (its coordinator carries on without it meanwhile).
`--fail_task=worker:1 --fail_at_step=S` crashes that task at step S (FedAvg:
round) of the first attempt only, to see the restart happen.

Host lists: `--hosts=h1,h2 --port_base=P` plans the job over several machines
and prints, per host, its command; `--this_host=h1` starts that host's tasks.
Every server listens only on its own task's address (see launch/bind_shim.c).

Exit codes: 0 success; 2 usage error (nothing started); 124 timeout;
128+N killed by signal N; otherwise the exit code of the first failed task
(of the last attempt).
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid

from absl import flags

from cluster import approaches
from cluster.tf_config import parse_tf_config
from launch import bind
from launch import plan as planning
from launch import spawn
from trainers import flags as trainer_flags
from trainers.common.outputs import default_run_dir, write_json_atomic

USAGE_EXIT = 2


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum("approach", approaches.ALLREDUCE.name, list(approaches.APPROACHES),
                    "Distributed approach to run.", flag_values=fv)
  flags.DEFINE_integer("num_workers", 2, "Number of worker tasks.", flag_values=fv)
  flags.DEFINE_integer("num_ps", 1, "Parameter-server tasks (approach=ps).", flag_values=fv)
  flags.DEFINE_string("run_dir", None, "Run directory (default runs/<approach>-<time>).",
                      flag_values=fv)
  flags.DEFINE_float("timeout", None, "Stop every task and fail after this many seconds.",
                     flag_values=fv)
  flags.DEFINE_string("host", "127.0.0.1", "Address the tasks use for each other (and "
                      "listen on) on this machine.", flag_values=fv)
  flags.DEFINE_list("hosts", [], "Host list: plan the job over these machines (task k on "
                    "host k mod H, ports from --port_base) and print each host's command.",
                    flag_values=fv)
  flags.DEFINE_integer("port_base", 23456, "First port of each host's tasks (--hosts).",
                       flag_values=fv)
  flags.DEFINE_string("this_host", None, "With --hosts: start only the tasks planned on "
                      "this host.", flag_values=fv)
  flags.DEFINE_enum("bind", "task", ("task", "all"), "task: servers listen only on their "
                    "task's own address; all: on every interface (TF's default).",
                    flag_values=fv)
  flags.DEFINE_integer("max_restarts", 0, "Restart the job (PS: the dead worker) up to "
                       "this many times after a task fails, resuming from checkpoints.",
                       flag_values=fv)
  flags.DEFINE_string("fail_task", None, "Fault injection: task 'role:index' that crashes "
                      "at --fail_at_step, in the first attempt only.", flag_values=fv)
  flags.DEFINE_integer("fail_at_step", None, "Fault injection: global step (FedAvg: round) "
                       "at which --fail_task crashes.", flag_values=fv)
  flags.DEFINE_integer("gpus_per_worker", 1, "GPUs per compute task (0: CPU only).",
                       flag_values=fv)
  flags.DEFINE_bool("dry_run", False, "Print the plan and every TF_CONFIG, start nothing.",
                    flag_values=fv)


def visible_gpu_count() -> int:
  """GPUs on this host (nvidia-smi), limited by the launcher's CUDA_VISIBLE_DEVICES."""
  cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
  if cvd is not None:
    return len([d for d in cvd.split(",") if d.strip()])
  if not shutil.which("nvidia-smi"):
    return 0
  try:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
  except (OSError, subprocess.TimeoutExpired):
    return 0
  return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def _usage_error(msg: str) -> int:
  print(f"launch.local: error: {msg}", file=sys.stderr)
  return USAGE_EXIT


def _print_summary(run_dir: str) -> None:
  path = os.path.join(run_dir, "summary.json")
  if not os.path.exists(path):
    print(f"launcher: no summary.json in {run_dir}")
    return
  with open(path) as f:
    summary = json.load(f)
  keys = ("approach", "dataset", "model", "num_workers", "test_accuracy", "test_loss",
          "wall_time_s", "train_time_s", "examples_per_sec")
  print("summary: " + ", ".join(
      f"{k}={summary[k]:.4g}" if isinstance(summary[k], float) else f"{k}={summary[k]}"
      for k in keys if k in summary))


def main(argv: list[str] | None = None, console=sys.stdout) -> int:
  """Parses argv, plans, and (unless --dry_run) runs the job. Returns the exit code."""
  argv = sys.argv if argv is None else argv
  fv = flags.FlagValues()
  define_flags(fv)
  try:
    rest = fv(argv)[1:]  # absl stops at `--`; what follows is for the trainer
  except flags.Error as e:
    return _usage_error(str(e))
  if any(a.startswith("--run_dir") for a in rest):
    return _usage_error("pass --run_dir to the launcher (before `--`), not to the trainer")
  try:
    trainer_flags.check_trainer_argv(fv.approach, rest)
  except flags.Error as e:
    return _usage_error(f"trainer flags: {e}")
  if fv.max_restarts < 0:
    return _usage_error(f"--max_restarts must be >= 0, got {fv.max_restarts}")
  if fv.this_host and not fv.hosts:
    return _usage_error("--this_host needs --hosts")
  if any(a.startswith(("--fail_task", "--fail_at_step")) for a in rest) and fv.max_restarts:
    return _usage_error("with --max_restarts, give --fail_task/--fail_at_step to the "
                        "launcher (injected once), not to the trainer")
  run_dir = os.path.abspath(fv.run_dir or default_run_dir(fv.approach))
  run_id = uuid.uuid4().hex
  num_gpus = visible_gpu_count() if fv.gpus_per_worker else 0
  preload: tuple[str, ...] = ()
  if fv.bind == "task":
    shim = bind.shim_path()
    if shim is None:
      print("launcher: warning: no C compiler to build the bind shim; servers listen on "
            "all interfaces (TF's default)", file=console, flush=True)
    else:  # the shim first, then whatever the launcher itself was started with
      preload = tuple(p for p in (shim, os.environ.get("LD_PRELOAD", "")) if p)

  def plan_attempt(attempt: int, cluster=None) -> planning.Plan:
    return planning.make_plan(
        fv.approach, fv.num_workers, run_dir, run_id=run_id,
        trainer_argv=planning.attempt_argv(fv.approach, rest, attempt, fv.fail_task,
                                           fv.fail_at_step),
        port_fn=_pick_port, num_ps=fv.num_ps, host=fv.host,
        num_gpus=num_gpus, gpus_per_worker=fv.gpus_per_worker,
        log_dir=planning.attempt_log_dir(run_dir, attempt, fv.max_restarts),
        hosts=fv.hosts, port_base=fv.port_base, cluster=cluster, preload=preload)

  try:
    plan = plan_attempt(0)
    planning.check_fail_task(fv.approach, plan.cluster, fv.fail_task, fv.fail_at_step)
    if fv.this_host:
      plan = planning.for_host(plan, fv.this_host)
  except ValueError as e:
    return _usage_error(str(e))
  if fv.hosts and not fv.this_host and not fv.dry_run:
    print(_host_commands(plan, argv), file=console)
    return 0
  if fv.dry_run:
    print(plan.describe(), file=console)
    return 0
  def replan(attempt: int, previous: planning.Plan) -> planning.Plan:
    # Same addresses for a host list; fresh ports for a local job (old ones may linger).
    new = plan_attempt(attempt, cluster=previous.cluster if fv.hosts else None)
    return planning.for_host(new, fv.this_host) if fv.this_host else new

  outcome, attempts, restarts = run_attempts(plan, replan, fv.max_restarts, fv.timeout,
                                             console)
  if fv.max_restarts:
    write_json_atomic(os.path.join(run_dir, "launcher.json"),
                      {"restarts": restarts, "attempts": attempts})
  if outcome.ok:
    print(f"launcher: success{f' after {restarts} restart(s)' if restarts else ''}; "
          f"run directory {run_dir}", file=console, flush=True)
    if any(parse_tf_config(t.tf_config).is_chief for t in plan.tasks):
      _print_summary(run_dir)  # written by the chief: absent on the other hosts
  else:
    print(f"launcher: FAILED ({outcome.reason}); logs in {os.path.join(run_dir, 'logs')}",
          file=console, flush=True)
  return outcome.exit_code


def run_attempts(plan: planning.Plan, replan, max_restarts: int, timeout_s: float | None,
                 console) -> tuple[spawn.Outcome, list[dict], int]:
  """Runs `plan`; after a task failure, runs `replan(attempt, plan)` instead, up to
  `max_restarts` times in all. A PS worker that dies is restarted alone, in place
  (spawn's restart_task), from the same budget. Returns (last outcome, attempt
  records for launcher.json, restarts used)."""
  run_dir, approach = plan.run_dir, plan.approach
  deadline = time.monotonic() + timeout_s if timeout_s else None
  attempts: list[dict] = []
  used = 0

  def restart_task(task: planning.Task) -> planning.Task | None:
    nonlocal used
    if used >= max_restarts:
      return None
    used += 1
    attempts.append({"attempt": used, "restarted": task.name, "scope": "task",
                     "time": time.time()})
    return planning.restarted_task(task, planning.attempt_log_dir(run_dir, used, 1),
                                   approach, used)

  attempt = 0
  while True:
    print(f"launcher: starting {len(plan.tasks)} task(s) for {approach} in {run_dir}"
          + (f" (attempt {attempt})" if max_restarts else ""), file=console, flush=True)
    started = time.time()
    outcome = spawn.run_plan(plan, timeout_s=timeout_s, console=console, deadline=deadline,
                             restart_task=restart_task)  # only tolerated (PS worker) tasks
    attempts.append({"attempt": attempt, "scope": "job", "start_time": started,
                     "end_time": time.time(), "ok": outcome.ok, "reason": outcome.reason,
                     "failed_task": outcome.failed_task, "exit_code": outcome.exit_code})
    if outcome.ok or outcome.failed_task is None or used >= max_restarts:
      return outcome, attempts, used
    used += 1
    attempt = used
    print(f"launcher: attempt failed ({outcome.reason}); restart {attempt} of "
          f"{max_restarts}: starting every task again from the latest checkpoint",
          file=console, flush=True)
    plan = replan(attempt, plan)


def _host_commands(plan: planning.Plan, argv: list[str]) -> str:
  """Per host: the launcher line that starts its tasks, then each task's own command."""
  launcher_args = [a for a in argv[1:] if not a.startswith("--this_host")]
  lines = [f"job {plan.approach}: {len(plan.tasks)} task(s) on "
           f"{len(planning.host_plans(plan))} host(s); run on each host:"]
  for host, tasks in planning.host_plans(plan).items():
    cmd = " ".join(shlex.quote(a) for a in
                   ["python", "-m", "launch.local", *launcher_args[:_dashdash(launcher_args)],
                    f"--this_host={host}", *launcher_args[_dashdash(launcher_args):]])
    lines.append(f"\n# host {host}: {', '.join(t.name for t in tasks)}\n{cmd}")
    lines.append("#   which starts, per task:")
    lines.extend(f"#   {planning.shell_command(t)}" for t in tasks)
  return "\n".join(lines)


def _dashdash(args: list[str]) -> int:
  return args.index("--") if "--" in args else len(args)


def _pick_port() -> int:
  import portpicker  # pylint: disable=g-import-not-at-top
  return portpicker.pick_unused_port()


def run_main() -> None:
  sys.exit(main())


if __name__ == "__main__":
  run_main()
