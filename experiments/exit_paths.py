"""Measures every exit path of the launcher: exit code, seconds until no process of the
job is left, and survivors (must be 0). Not a test: it prints the table recorded in
BENCHMARKS.md ("Exit paths").

    python -m experiments.exit_paths [--run_dir=DIR]
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

from absl import flags

from cluster import approaches, cli

TAG = "TFDIST_EXIT_PATH_TAG"
SYN = ["--dataset=synthetic", "--batch_size=32", "--log_every=4"]
LONG = [*SYN, "--steps_per_epoch=100000"]


def _tagged(tag: str) -> list[int]:
  needle = f"{TAG}={tag}".encode()
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/environ", "rb") as f:
        if needle in f.read().split(b"\0"):
          found.append(int(pid))
    except OSError:
      continue
  return found


class Job:
  """A launcher (or trainer) process whose every descendant carries a tag."""

  def __init__(self, argv: list[str], env: dict | None = None, stdout=subprocess.PIPE):
    self.tag = uuid.uuid4().hex
    full = dict(os.environ, **{TAG: self.tag, "PYTHONUNBUFFERED": "1"}, **(env or {}))
    self.proc = subprocess.Popen([sys.executable, *argv], env=full, stdout=stdout,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
    self.out = ""

  def wait_for(self, text: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in self.out and time.monotonic() < deadline:
      line = self.proc.stdout.readline()
      if not line:
        break
      self.out += line

  def finish(self, since: float, limit_s: float = 60) -> tuple[int, float, int]:
    """(exit code, seconds from `since` until no tagged process is left, survivors)."""
    try:
      code = self.proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
      code = None
    while _tagged(self.tag) and time.monotonic() - since < limit_s:
      time.sleep(0.05)
    took, left = time.monotonic() - since, _tagged(self.tag)
    for pid in left:
      os.kill(pid, signal.SIGKILL)
    if self.proc.poll() is None:
      self.proc.kill()
    return code, took, len(left)


def launcher(*args: str) -> list[str]:
  return ["-m", "launch.local", *args]


def _stopped_launchers(root: str):
  """(name, job, since) of each launcher stopped from outside: SIGKILL with silent
  servers, SIGHUP/SIGTERM, Ctrl-C at start-up and twice mid-training."""
  for approach, ready, trainer in (
      (approaches.PS.name, "serving at", LONG),
      (approaches.FEDAVG.name, "executor service (worker_binary)",
       ["--dataset=synthetic", "--rounds=100000", "--model=fedavg_2nn", "--num_clients=10",
        "--clients_per_round=2"])):
    job = Job(launcher(f"--approach={approach}", "--num_workers=2",
                       f"--run_dir={root}/kill-{approach}", "--", *trainer))
    job.wait_for(ready)
    time.sleep(3)
    t = time.monotonic()
    os.kill(job.proc.pid, signal.SIGKILL)
    yield f"launcher SIGKILLed, {approach} job (silent servers)", job, t
  for sig, name in ((signal.SIGHUP, "SIGHUP"), (signal.SIGTERM, "SIGTERM")):
    job = Job(launcher("--num_workers=2", f"--run_dir={root}/{name}", "--", *LONG))
    job.wait_for("step 20/")
    t = time.monotonic()
    job.proc.send_signal(sig)
    yield f"{name} to the launcher mid-training (all-reduce)", job, t
  job = Job(launcher("--approach=ps", "--num_workers=3", "--num_ps=2",
                     f"--run_dir={root}/ctrlc", "--", *LONG))
  time.sleep(1.0)
  t = time.monotonic()
  job.proc.send_signal(signal.SIGINT)
  yield "Ctrl-C 1 s into start-up (PS, 6 tasks)", job, t
  job = Job(launcher("--num_workers=2", f"--run_dir={root}/ctrlc2", "--", *LONG))
  job.wait_for("step 20/")
  t = time.monotonic()
  job.proc.send_signal(signal.SIGINT)
  time.sleep(0.3)
  job.proc.send_signal(signal.SIGINT)
  yield "Ctrl-C twice mid-training (SIGKILL at once)", job, t


def _failing_jobs(root: str):
  """(name, job, since) of each job that fails on its own: a trainer SIGTERMed, a peer
  that never starts, a port taken, a diverging loss, a closed console."""
  job = Job(launcher("--num_workers=2", f"--run_dir={root}/term1", "--", *LONG))
  job.wait_for("step 20/")
  victim = next(p for p in _tagged(job.tag) if p != job.proc.pid)
  t = time.monotonic()
  os.kill(victim, signal.SIGTERM)
  yield "SIGTERM to one trainer (its code ends the job)", job, t
  with socket.socket() as silent, socket.socket() as me:
    silent.bind(("127.0.0.1", 0))
    me.bind(("127.0.0.1", 0))
    cfg = json.dumps({"cluster": {"worker": [f"127.0.0.1:{me.getsockname()[1]}",
                                             f"127.0.0.1:{silent.getsockname()[1]}"]},
                      "task": {"type": "worker", "index": 0}})
    me.close()
    t = time.monotonic()
    yield "peer never starts (--startup_timeout=10)", Job(
        ["-m", "trainers.allreduce", *SYN, "--startup_timeout=10", f"--run_dir={root}/p"],
        env={"TF_CONFIG": cfg}), t
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    t = time.monotonic()
    yield "port already taken (preflight)", Job(launcher(
        "--num_workers=1", "--hosts=127.0.0.1", "--this_host=127.0.0.1",
        f"--port_base={taken.getsockname()[1]}", f"--run_dir={root}/port", "--", *SYN)), t
  t = time.monotonic()
  yield "diverging loss (lr 1e30)", Job(launcher(
      "--num_workers=2", f"--run_dir={root}/nan", "--", *SYN, "--model=cnn",
      "--learning_rate=1e30", "--optimizer=sgd", "--lr_schedule=constant",
      "--steps_per_epoch=16")), t
  t = time.monotonic()
  job = Job(launcher("--num_workers=2", f"--run_dir={root}/head", "--", *SYN,
                     "--steps_per_epoch=300", "--log_every=1", "--steps_per_execution=1"))
  for _ in range(3):
    job.proc.stdout.readline()
  job.proc.stdout.close()
  yield "console closed after 3 lines (`| head -3`)", job, t


def measure(root: str) -> list[tuple[str, int | None, float, int]]:
  """Every exit path in turn: (name, exit code, seconds to a clean state, survivors).
  Each job is finished (and its survivors counted) before the next one starts."""
  rows = []
  for scenarios in (_stopped_launchers, _failing_jobs):
    for name, job, since in scenarios(root):
      rows.append((name, *job.finish(since)))
      print(f"{name}: exit {rows[-1][1]}, clean in {rows[-1][2]:.1f}s, "
            f"survivors {rows[-1][3]}", flush=True)
  return rows


def main(argv=None) -> int:
  fv = flags.FlagValues()
  flags.DEFINE_string("run_dir", "runs/exit-paths", "Where the jobs write.", flag_values=fv)
  argv = sys.argv if argv is None else argv
  cli.exit_if_answered(argv, fv, cli.prog("experiments.exit_paths"), __doc__)
  fv(argv)
  rows = measure(os.path.abspath(fv.run_dir))
  print("\n| path tried | exit code | seconds to clean state | survivors |\n|---|---|---|---|")
  for name, code, took, left in rows:
    print(f"| {name} | {code} | {took:.1f} | {left} |")
  return 0 if all(left == 0 for *_, left in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
