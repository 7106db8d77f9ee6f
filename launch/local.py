"""Start a training job as N local processes, one per task, each with its own TF_CONFIG.

    python -m launch.local --approach=allreduce --num_workers=2 -- --model=mlp --epochs=1

Everything after `--` goes to the trainer of every task (checked before anything
starts). Each task's output is shown behind a `[worker:1]` prefix and saved to
`<run_dir>/logs/<role>_<index>.log`. If any task fails, the launcher stops all
the others, names the failed task with its exit code and the tail of its log,
and exits non-zero; `--timeout` and Ctrl-C do the same. `--dry_run` prints the
plan (cluster, TF_CONFIG, command, GPU and log of every task) and exits.

Exit codes: 0 success; 2 usage error (nothing started); 124 timeout;
128+N killed by signal N; otherwise the exit code of the first failed task.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid

from absl import flags

from launch import plan as planning
from launch import spawn
from trainers import flags as trainer_flags
from trainers.outputs import default_run_dir

USAGE_EXIT = 2


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum("approach", "allreduce", list(planning.TRAINER_MODULES),
                    "Distributed approach to run.", flag_values=fv)
  flags.DEFINE_integer("num_workers", 2, "Number of worker tasks.", flag_values=fv)
  flags.DEFINE_integer("num_ps", 1, "Parameter-server tasks (approach=ps).", flag_values=fv)
  flags.DEFINE_string("run_dir", None, "Run directory (default runs/<approach>-<time>).",
                      flag_values=fv)
  flags.DEFINE_float("timeout", None, "Stop every task and fail after this many seconds.",
                     flag_values=fv)
  flags.DEFINE_string("host", "localhost", "Address the tasks use for each other.",
                      flag_values=fv)
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
  if fv.approach not in trainer_flags.implemented_approaches():
    return _usage_error(f"approach {fv.approach!r} is not implemented yet; available: "
                        f"{', '.join(trainer_flags.implemented_approaches())}")
  if any(a.startswith("--run_dir") for a in rest):
    return _usage_error("pass --run_dir to the launcher (before `--`), not to the trainer")
  try:
    trainer_flags.check_trainer_argv(fv.approach, rest)
  except flags.Error as e:
    return _usage_error(f"trainer flags: {e}")
  run_dir = os.path.abspath(fv.run_dir or default_run_dir(fv.approach))
  try:
    plan = planning.make_plan(
        fv.approach, fv.num_workers, run_dir, run_id=uuid.uuid4().hex, trainer_argv=rest,
        port_fn=_pick_port, num_ps=fv.num_ps if fv.approach == "ps" else 0, host=fv.host,
        num_gpus=visible_gpu_count() if fv.gpus_per_worker else 0,
        gpus_per_worker=fv.gpus_per_worker)
  except ValueError as e:
    return _usage_error(str(e))
  if fv.dry_run:
    print(plan.describe(), file=console)
    return 0
  print(f"launcher: starting {len(plan.tasks)} task(s) for {plan.approach} in {run_dir}",
        file=console, flush=True)
  outcome = spawn.run_plan(plan, timeout_s=fv.timeout, console=console)
  if outcome.ok:
    print(f"launcher: success; run directory {run_dir}", file=console, flush=True)
    _print_summary(run_dir)
  else:
    print(f"launcher: FAILED ({outcome.reason}); logs in {os.path.join(run_dir, 'logs')}",
          file=console, flush=True)
  return outcome.exit_code


def _pick_port() -> int:
  import portpicker  # pylint: disable=g-import-not-at-top
  return portpicker.pick_unused_port()


def run_main() -> None:
  sys.exit(main())


if __name__ == "__main__":
  run_main()
