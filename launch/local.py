"""Start a training job as N local processes, one per task, each with its own TF_CONFIG.

    python -m launch.local --approach=allreduce --num_workers=2 -- --model=mlp --epochs=1
    tfdist-launch --num_workers=2 train.py --epochs=1          # any program (program.py)

Flags after `--` go to the suite's trainer of every task (checked before anything
starts); a program (a .py file or a command) instead runs once per task with that
task's TF_CONFIG, under the same supervision. Each task's output is shown behind a `[worker:1]` prefix and saved to
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
Every server listens only on its own task's address (see launch/task_shim.c).

Regimes: `--link=100mbit` runs every task in a network namespace of its own, joined
by a bridge through a tbf-capped veth pair (launch/links.py; root and iproute2);
`--straggler=worker:1:3` makes that task 3x slower (it runs 1/3 of the time).

Bad input (flags, data, ports, hosts, run dir, cores) is one line and exit 2
before anything starts (launch/preflight.py). No task outlives the launcher, on
any path (launch/spawn.py). Exit codes (cluster/exits.py): 0 success; 2 usage
error; 124 timeout; 128+N signal N; otherwise the first failed task's code (of
the last attempt): 65 diverged, 66 no data, 69 a peer never answered, 71 port
taken, 74 log not writable, 143 SIGTERM. --max_restarts never retries 2, 65, 66.
"""

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid

from absl import flags

from cluster import approaches, cli, exits, traffic
from cluster.tf_config import parse_tf_config, task_name
import launch
from launch import links as links_lib
from launch import shim
from launch import plan as planning
from launch import preflight, spawn
from launch import restarts as restarts_lib
from launch import program as program_lib
from launch.config import LaunchConfig, Machine
from trainers import flags as trainer_flags
from trainers.common.outputs import amend_summary, default_run_dir, write_json_atomic

USAGE_EXIT = exits.USAGE


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
  flags.DEFINE_float("startup_timeout", None, "Passed to every trainer: seconds to wait "
                     "for its peers at start-up before failing with a line naming them "
                     "(trainers' default: 120).", flag_values=fv)
  flags.DEFINE_bool("cpu_budget", True, "Give every task its share of its host's cores "
                    "(intra-op threads = cores / compute tasks on the host; light roles 1; "
                    "launch/cpu_budget.py) instead of letting each size its pools for the "
                    "whole machine.", flag_values=fv)
  flags.DEFINE_integer("threads_per_task", None, "Intra-op threads of every task (with "
                       "--cpu_budget), instead of the share.", flag_values=fv)
  flags.DEFINE_bool("pin_cpus", False, "Bind each compute task to its own cores (needs "
                    "as many cores as compute tasks on the host; light roles get the rest).",
                    flag_values=fv)
  flags.DEFINE_bool("allow_oversubscribe", False, "Start more than 4 tasks per core on one "
                    "host.", flag_values=fv)
  flags.DEFINE_string("link", None, "Cap every task's link at this rate each way "
                      "(e.g. 10mbit, 100mbit, 1gbit): each task gets a network namespace, "
                      "joined to the others by a bridge through a tbf-capped veth pair. "
                      "Local jobs, root and iproute2 only; delay cannot be added (no "
                      "netem).", flag_values=fv)
  flags.DEFINE_string("straggler", None, "ROLE:INDEX:FACTOR, e.g. worker:1:3: that task "
                      "runs FACTOR times slower (the launcher lets it run 1/FACTOR of the "
                      "time, SIGSTOP/SIGCONT every 50 ms).", flag_values=fv)
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
  print(f"{cli.prog('launch.local')}: error: {msg}", file=sys.stderr)
  return USAGE_EXIT


def _link_cluster(links: links_lib.Links, config: LaunchConfig) -> dict:
  """--link: every task at its namespace's address, all on the same port."""
  by_task = links.by_task()
  return {r: tuple(f"{by_task[task_name(r, i)].address}:{links_lib.PORT}" for i in range(n))
          for r, n in config.roles.items()}


def link_fields(links: links_lib.Links, counts: dict[str, dict[str, int]]) -> dict:
  """summary.json's second measure of the bytes on the wire: the veth counters (frames,
  headers included), mean over the worker tasks and per task, and the cap."""
  workers = [c for t, c in counts.items() if t.startswith("worker:")] or list(counts.values())
  mean = lambda key: sum(c[key] for c in workers) / len(workers) if workers else None
  return {"link_rate_bps": links.rate_bps, "link_bytes_by_task": counts,
          "link_bytes_sent_per_worker": mean("sent"),
          "link_bytes_received_per_worker": mean("received")}


def _complete_summary(run_dir: str, extra: dict | None = None) -> None:
  """Once every task has exited, its shim has written its final counts: the chief's
  summary.json gets the final bytes on the wire (it wrote them up to 0.5 s stale),
  and what only the launcher knows (`extra`: the veth counters, the straggler)."""
  totals = traffic.read(traffic.traffic_dir(run_dir))
  if not (totals or extra):
    return
  amend_summary(run_dir, lambda summary: {
      **(traffic.summary_fields(totals, summary.get("bytes_analytic_by_task"))
         if totals else {}), **(extra or {})})


def _print_summary(run_dir: str, out) -> None:
  path = os.path.join(run_dir, "summary.json")
  if not os.path.exists(path):
    print(f"launcher: no summary.json in {run_dir}", file=out)
    return
  with open(path) as f:
    summary = json.load(f)
  keys = ("approach", "dataset", "model", "num_workers", "test_accuracy", "test_loss",
          "wall_time_s", "train_time_s", "examples_per_sec", "time_to_target_s",
          "bytes_sent_per_worker", "bytes_received_per_worker", "link_bytes_sent_per_worker")
  print("summary: " + ", ".join(
      f"{k}={summary[k]:.4g}" if isinstance(summary[k], float) else f"{k}={summary[k]}"
      for k in keys if k in summary), file=out)


def config_from_argv(argv: list[str], launched: float | None = None) -> LaunchConfig:
  """The launch from the command line, parsed and checked once (the trainer flags
  after `--` against the approach's own); ValueError, one line naming the flag, for
  any usage error."""
  fv = flags.FlagValues()
  define_flags(fv)
  head, program, rest = program_lib.split_argv(argv, fv)
  try:
    fv(head)
  except flags.UnrecognizedFlagError as e:
    if trainer_flags.trainer_flag_owner(e.flagname):  # a forgotten `--`
      raise ValueError(f"--{e.flagname} is a trainer flag: give it after `--` "
                       f"(launch.local [launcher flags] -- --{e.flagname}=...)") from e
    raise ValueError(str(e)) from e
  except flags.Error as e:
    raise ValueError(str(e)) from e
  if program:
    return _program_config(fv, program, launched)
  rest = rest or []
  if any(a.startswith("--run_dir") for a in rest):
    raise ValueError("pass --run_dir to the launcher (before `--`), not to the trainer")
  if fv.startup_timeout is not None:
    rest.append(f"--startup_timeout={fv.startup_timeout:g}")
  try:
    tfv = trainer_flags.check_trainer_argv(fv.approach, rest)
  except flags.Error as e:
    raise ValueError(f"trainer flags: {e}") from e
  _check_launcher_flags(fv, rest)
  config = _base_config(fv, launched, trainer_argv=tuple(rest))
  if not fv.dry_run:  # a plan needs no data
    preflight.check_dataset(tfv.dataset, tfv.data_dir)
  # What the trainers would refuse, refused here, before anything starts.
  trainer_flags.check_values(tfv, fv.approach).check_cluster(fv.num_workers)
  return config


def _base_config(fv: flags.FlagValues, launched: float | None, **fields) -> LaunchConfig:
  """The LaunchConfig of the launcher's flags (`fields`: a trainer's argv or a program)."""
  config = LaunchConfig(
      approach=fv.approach, num_workers=fv.num_workers,
      run_dir=os.path.abspath(fv.run_dir or default_run_dir(fv.approach)),
      run_id=uuid.uuid4().hex, num_ps=fv.num_ps, host=fv.host,
      hosts=tuple(fv.hosts), port_base=fv.port_base, this_host=fv.this_host, bind=fv.bind,
      timeout=fv.timeout, max_restarts=fv.max_restarts, fail_task=fv.fail_task,
      fail_at_step=fv.fail_at_step, gpus_per_worker=fv.gpus_per_worker,
      cpu_budget=fv.cpu_budget, threads_per_task=fv.threads_per_task, pin_cpus=fv.pin_cpus,
      allow_oversubscribe=fv.allow_oversubscribe,
      link_rate_bps=links_lib.parse_rate(fv.link) if fv.link is not None else None,
      dry_run=fv.dry_run, launched=launched, **fields)
  if fv.straggler is not None:  # (the task names need a valid --num_workers first)
    config = dataclasses.replace(config, straggler=planning.parse_straggler(
        fv.straggler, config.task_names))
  return config


def _program_config(fv: flags.FlagValues, program: list[str],
                    launched: float | None) -> LaunchConfig:
  """A user's program in every task: --approach is the cluster's shape (allreduce,
  gossip: workers; ps: chief, workers, ps; fedavg: chief and workers)."""
  _check_launcher_flags(fv, [])
  for name in ("fail_task", "fail_at_step", "startup_timeout"):
    if fv[name].present:
      raise ValueError(f"--{name} applies to the suite's trainers, not to a program "
                       f"({' '.join(program[:2])})")
  if not fv.dry_run:
    program_lib.check(program)
  return _base_config(fv, launched, program=tuple(program))


def _check_launcher_flags(fv: flags.FlagValues, rest: list[str]) -> None:
  """The launcher's own flags, alone and together; ValueError naming the flag."""
  if fv["num_ps"].present and not approaches.get(fv.approach).has_ps:
    raise ValueError(f"--num_ps={fv.num_ps} applies to --approach=ps only, not "
                     f"{fv.approach}; drop it")
  if fv.startup_timeout is not None and not fv.startup_timeout > 0:
    raise ValueError(f"--startup_timeout must be > 0 seconds, got {fv.startup_timeout:g}")
  if fv.run_dir and os.path.exists(fv.run_dir) and not os.path.isdir(fv.run_dir):
    raise ValueError(f"--run_dir={fv.run_dir} is a file, not a directory")
  if not fv.hosts and fv.num_workers > 0:  # before any port is picked or directory made
    roles = approaches.get(fv.approach).roles(fv.num_workers, fv.num_ps)
    preflight.check_oversubscription({fv.host: sum(roles.values())}, os.cpu_count() or 1,
                                     fv.allow_oversubscribe)
  if fv.max_restarts < 0:
    raise ValueError(f"--max_restarts must be >= 0, got {fv.max_restarts}")
  if fv.this_host and not fv.hosts:
    raise ValueError("--this_host needs --hosts")
  if fv["port_base"].present and not fv.hosts:
    raise ValueError(f"--port_base={fv.port_base} applies to --hosts only (a local job "
                     "picks free ports); add --hosts or drop --port_base")
  if any(a.startswith(("--fail_task", "--fail_at_step")) for a in rest) and fv.max_restarts:
    raise ValueError("with --max_restarts, give --fail_task/--fail_at_step to the "
                     "launcher (injected once), not to the trainer")
  if fv.link is not None:
    links_lib.parse_rate(fv.link)
    if fv.hosts:
      raise ValueError("--link caps the links of a local job; drop --hosts or --link")
    if not fv.dry_run and (why := links_lib.missing()):
      raise ValueError(why)
  preflight.check_timeout(fv.timeout)
  for host in fv.hosts:
    preflight.check_host_name(host)
  if fv.this_host:
    preflight.check_host_name(fv.this_host, "--this_host")


def _preflight_machine(plan: planning.Plan, config: LaunchConfig) -> None:
  """What this machine must offer the tasks it starts: its address, free ports, a
  writable run directory, and cores enough."""
  if config.this_host:
    preflight.check_ours(config.this_host)
  if not config.link_rate_bps:  # with --link every task has a namespace (and ports) of its own
    preflight.check_ports_free((t.name, t.address) for t in plan.tasks)
  preflight.check_writable(plan.run_dir)
  per_host = {h: len(ts) for h, ts in planning.host_plans(plan).items()}
  preflight.check_oversubscription(per_host, os.cpu_count() or 1, config.allow_oversubscribe)


def main(argv: list[str] | None = None, console=sys.stdout,
         env: dict[str, str] | None = None) -> int:
  """Parses argv, checks, plans, and (unless --dry_run) runs the job. Returns the exit
  code. `env`: variables every task gets on top of the launcher's environment (which
  stays untouched): how an experiment sets, say, the kernel library of one run."""
  launch.started()  # from here a Ctrl-C is this function's to answer
  argv = sys.argv if argv is None else argv
  launched = time.time()  # time to accuracy counts from here, start-up included
  fv = flags.FlagValues()
  define_flags(fv)
  head, _, _ = program_lib.split_argv(argv, fv)  # a program's own --help is the program's
  if cli.answered(head, fv, cli.prog("launch.local"), __doc__, console):
    return 0
  try:
    config = dataclasses.replace(config_from_argv(argv, launched),
                                 env=tuple((env or {}).items()))
  except ValueError as e:
    return _usage_error(str(e))
  except KeyboardInterrupt:  # Ctrl-C while checking: nothing started, a signal's code
    return _interrupted(console)
  out = spawn.Console(console)  # never blocks, never raises on a closed console
  try:
    return _launch(config, argv, out)
  except KeyboardInterrupt:  # Ctrl-C while planning, before spawn's handlers took over
    return _interrupted(out)
  finally:
    out.close()


def _interrupted(out) -> int:
  print("launcher: interrupted (SIGINT) before any task started", file=out, flush=True)
  return 128 + signal.SIGINT


def _launch(config: LaunchConfig, argv: list[str], out) -> int:
  """Plans the first attempt, prints it (--dry_run, a host list) or checks the machine
  and runs the job with its links; returns the exit code."""
  machine = Machine(
      num_gpus=visible_gpu_count() if config.gpus_per_worker else 0,
      cpu_ids=tuple(sorted(os.sched_getaffinity(0))) if config.cpu_budget else (),
      preload=_preload(config.bind, out))
  links = (links_lib.plan(config.task_names, config.link_rate_bps, os.getpid())
           if config.link_rate_bps else None)

  def plan_attempt(attempt: int, cluster=None) -> planning.Plan:
    new = planning.make_plan(config, _pick_port, machine, attempt, cluster,
                             netns={l.task: l.netns for l in links.links} if links else None)
    return planning.for_host(new, config.this_host) if config.this_host else new

  try:
    plan = plan_attempt(0, _link_cluster(links, config) if links else None)
    planning.check_fail_task(config.approach, plan.cluster, config.fail_task,
                             config.fail_at_step)
    if config.hosts and not config.this_host or config.dry_run:
      text = plan.describe() if config.dry_run else _host_commands(plan, argv)
      print(text + (f"\n{links.describe()}" if links and config.dry_run else ""), file=out)
      return 0
    _preflight_machine(plan, config)
  except ValueError as e:
    return _usage_error(str(e))
  if machine.preload:
    # Counts from an earlier launch into this run directory (a --resume, a rerun) would
    # add to this one's; its restarts (--max_restarts) do add up: they are this job.
    traffic.start_fresh(traffic.traffic_dir(config.run_dir))

  def replan(attempt: int, previous: planning.Plan) -> planning.Plan:
    # Same addresses for a host list (and in the --link namespaces); fresh ports for
    # a local job (old ones may linger).
    keep = config.hosts or links
    return plan_attempt(attempt, cluster=previous.cluster if keep else None)

  return _run_linked(config, plan, replan, links, out)


def _run_linked(config: LaunchConfig, plan: planning.Plan, replan, links, out) -> int:
  """Runs the attempts inside --link's namespaces (created here, always removed),
  then reports; returns the exit code."""
  if links_lib.missing() is None:
    for name in links_lib.remove_stale():  # left by a launcher killed with SIGKILL
      print(f"launcher: removed stale network namespace {name}", file=out)
  straggler = config.straggler
  extra = ({"straggler": {"task": straggler[0], "factor": straggler[1], "how": (
      f"runs {spawn.RUN_SLICE_S * 1000:.0f} ms, then stands still (SIGSTOP) for "
      "(factor - 1) times that")}} if straggler else {})
  try:
    if links:
      try:
        links_lib.create(links)
      except links_lib.LinkError as e:
        return _usage_error(str(e))
      print(f"launcher: {links.describe()}", file=out, flush=True)
    outcome, attempts, restarts = restarts_lib.run_attempts(plan, replan, config.max_restarts,
                                               config.timeout, out)
    if links:  # every task has exited: the veth counters are final
      extra.update(link_fields(links, links_lib.counters(links)))
  finally:
    if links:
      links_lib.destroy(links)
  _report(outcome, attempts, restarts, plan, config.max_restarts, out, extra)
  return outcome.exit_code


def _preload(bind_mode: str, out) -> tuple[str, ...]:
  """LD_PRELOAD for every task: the task shim first, then the launcher's own."""
  if bind_mode != "task":
    return ()
  lib = shim.shim_path()
  if lib is None:
    print("launcher: warning: no C compiler to build the task shim; servers listen on "
          "all interfaces (TF's default) and bytes on the wire are not measured", file=out)
    return ()
  return tuple(p for p in (lib, os.environ.get("LD_PRELOAD", "")) if p)


def _report(outcome: spawn.Outcome, attempts: list[dict], restarts: int,
            plan: planning.Plan, max_restarts: int, out, extra: dict | None = None) -> None:
  run_dir = plan.run_dir
  if max_restarts:
    write_json_atomic(os.path.join(run_dir, "launcher.json"),
                      {"restarts": restarts, "attempts": attempts})
  if outcome.ok:
    print(f"launcher: success{f' after {restarts} restart(s)' if restarts else ''}; "
          f"run directory {run_dir}", file=out)
    # Written by the chief (a program's too, if it writes one: the peers do), absent on
    # the other hosts.
    wrote = os.path.exists(os.path.join(run_dir, "summary.json"))
    if (wrote or not plan.program) and any(parse_tf_config(t.tf_config).is_chief
                                           for t in plan.tasks):
      _complete_summary(run_dir, extra)
      _print_summary(run_dir, out)
  else:
    print(f"launcher: FAILED ({outcome.reason}); logs in {os.path.join(run_dir, 'logs')}",
          file=out)


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
  code = main()
  try:
    sys.stdout.flush()
  except BrokenPipeError:  # the console was closed (`| head`): nothing left to say
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  sys.exit(code)


if __name__ == "__main__":
  run_main()
