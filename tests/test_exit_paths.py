"""Every way a job can end leaves nothing behind, and says why (real processes).

Launcher killed outright (PS: silent servers; FedAvg: TFF's worker_binary or TF servers), Ctrl-C
at random moments of start-up, SIGTERM honoured by the trainers, a peer that never
starts, a port already taken, a diverging loss, and a console that goes away. Each
test bounds its time and checks that no process of its run survives.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests import helpers

pytestmark = pytest.mark.multiprocess

SYN = ["--dataset=synthetic", "--batch_size=32", "--log_every=4"]
LONG = [*SYN, "--steps_per_epoch=100000"]


def _wait_for(launch: helpers.Launch, text: str, timeout_s: float = 120) -> None:
  deadline = time.monotonic() + timeout_s
  while launch.first_time(text) is None:
    assert time.monotonic() < deadline and launch.proc.poll() is None, \
        f"never saw {text!r}:\n{launch.output[-3000:]}"
    time.sleep(0.1)


def _seconds_to_clean_state(tag: str, limit_s: float) -> float:
  start = time.monotonic()
  while helpers.tagged_pids(tag) and time.monotonic() - start < limit_s:
    time.sleep(0.1)
  return time.monotonic() - start


FEDAVG_LONG = ["--dataset=synthetic", "--rounds=100000", "--num_clients=10",
               "--clients_per_round=2", "--model=fedavg_2nn"]


@pytest.mark.parametrize("approach,args,ready,tasks", [
    ("ps", LONG, "serving at", 4),                 # chief + 2 workers + ps, servers silent
    ("fedavg", [*FEDAVG_LONG, "--fedavg_backend=native"],  # chief + 2 worker_binary
     "executor service (worker_binary)", 3),
    ("fedavg", FEDAVG_LONG, "TF server(s) (MapReduceForm", 3)])  # the default: TF servers
def test_a_killed_launcher_takes_every_task_with_it(tmp_path, approach, args, ready, tasks):
  launch = helpers.Launch([f"--approach={approach}", "--num_workers=2",
                           f"--run_dir={tmp_path}", "--", *args], timeout_s=180)
  try:
    _wait_for(launch, ready)
    deadline = time.monotonic() + 60
    while len(helpers.tagged_pids(launch.tag)) < tasks + 1 and time.monotonic() < deadline:
      time.sleep(0.2)
    assert len(helpers.tagged_pids(launch.tag)) >= tasks + 1
    os.kill(launch.proc.pid, signal.SIGKILL)  # the launcher alone: no teardown runs
    launch.proc.wait(timeout=10)
    took = _seconds_to_clean_state(launch.tag, 15)
  finally:
    helpers.assert_no_survivors(launch.tag)
  assert took < 15


def test_ctrl_c_at_random_moments_of_start_up_orphans_nothing(tmp_path):
  rng = random.Random(2026)  # seeded: a failure names its delay, and a rerun repeats it
  for attempt in range(6):
    delay = rng.uniform(0.3, 2.5)  # while tasks are being started and are starting
    launch = helpers.Launch(["--approach=ps", "--num_workers=3", "--num_ps=2",
                             f"--run_dir={tmp_path / str(attempt)}", "--", *LONG],
                            timeout_s=60)
    try:
      time.sleep(delay)
      launch.proc.send_signal(signal.SIGINT)
      code, out, _ = launch.wait()
    finally:
      helpers.assert_no_survivors(launch.tag, wait_s=15)
    # A signal's code, never the usage code (2) or a traceback's.
    assert code == 128 + signal.SIGINT, f"after {delay:.2f}s: {out[-2000:]}"
    assert "Traceback" not in out, f"after {delay:.2f}s: {out[-2000:]}"


def test_ctrl_c_while_python_still_loads_a_launch_tool_is_one_line_and_130():
  """`python -m launch.local` imports the launch package while Python still locates and
  compiles the tool (no bytecode is written here: under load that takes a while); a
  Ctrl-C there gets launch/__init__.py's answer. Simulated exactly: the package imported
  with sys.argv[0] == "-m", as runpy leaves it then, and the signal sent at once."""
  code = ("import os, signal, sys, time\n"
          "sys.argv[0] = '-m'\n"
          "import launch\n"
          "os.kill(os.getpid(), signal.SIGINT)\n"
          "time.sleep(30)\n")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=60, cwd=helpers.REPO, check=False)
  assert done.returncode == 128 + signal.SIGINT, done.stderr[-2000:]
  assert done.stderr.strip() == ("launcher: interrupted (SIGINT) while starting; "
                                 "nothing started")


def test_sigterm_is_honoured_by_trainers_and_by_the_launcher(tmp_path):
  launch = helpers.Launch(["--approach=allreduce", "--num_workers=2", f"--run_dir={tmp_path}",
                           "--", *LONG], timeout_s=180)
  try:
    _wait_for(launch, "step 20/")
    # A trainer told to stop stops, with 143 (TF's notifier no longer swallows it) ...
    os.kill(helpers.task_pid(launch.tag, "worker", 1), signal.SIGTERM)
    code, out, _ = launch.wait()
  finally:
    helpers.assert_no_survivors(launch.tag)
  assert code == 143 and "task worker:1 failed with exit code 143" in out, out[-3000:]
  assert "received SIGTERM: stopping (exit 143)" in out
  launch = helpers.Launch(["--approach=allreduce", "--num_workers=2",
                           f"--run_dir={tmp_path / 'b'}", "--", *LONG], timeout_s=180)
  try:
    _wait_for(launch, "step 20/")
    sent = time.monotonic()
    launch.proc.send_signal(signal.SIGTERM)  # ... and so does the launcher, with every task
    code, out, _ = launch.wait()
    took = launch.ended - sent
  finally:
    helpers.assert_no_survivors(launch.tag)
  assert code == 128 + signal.SIGTERM and "received SIGTERM" in out
  assert took < 8, f"{took:.1f}s: the tasks waited for SIGKILL instead of stopping"


def test_a_peer_that_never_starts_is_named_after_the_startup_timeout(tmp_path):
  tag = os.urandom(8).hex()
  env = helpers.base_env(tag)
  silent = socket.socket()
  silent.bind(("127.0.0.1", 0))  # reserved, never listening: nobody answers there
  port = silent.getsockname()[1]
  env["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["127.0.0.1:0", f"127.0.0.1:{port}"]},
                                 "task": {"type": "worker", "index": 0}})
  env["TF_CONFIG"] = env["TF_CONFIG"].replace("127.0.0.1:0", f"127.0.0.1:{_free_port()}")
  try:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "trainers.allreduce", *SYN,
                           "--startup_timeout=5", f"--run_dir={tmp_path}"], cwd=helpers.REPO,
                          env=env, capture_output=True, text=True, timeout=90)
    took = time.monotonic() - start
  finally:
    silent.close()
    helpers.assert_no_survivors(tag)
  assert proc.returncode == 69, proc.stderr[-2000:]
  assert f"no answer from worker:1 at 127.0.0.1:{port} within --startup_timeout=5s" in \
      proc.stderr
  assert took < 60


def test_a_port_already_taken_is_one_line_before_anything_starts(tmp_path):
  taken = socket.socket()
  taken.bind(("127.0.0.1", 0))
  taken.listen()
  port = taken.getsockname()[1]
  try:
    code, out, _ = helpers.run_launcher(
        ["--num_workers=1", "--hosts=127.0.0.1", f"--port_base={port}",
         "--this_host=127.0.0.1", f"--run_dir={tmp_path}", "--", *SYN], timeout_s=60)
  finally:
    taken.close()
  assert code == 2
  assert out.strip().splitlines() == [
      f"launch.local: error: port {port} of worker:0 (127.0.0.1:{port}) is already in use; "
      "free it or choose another --port_base"]
  assert not (tmp_path / "logs").exists()


def test_a_diverging_loss_fails_the_job_with_its_own_code_and_valid_json(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--num_workers=2", f"--run_dir={tmp_path}", "--max_restarts=2", "--", *SYN,
       "--learning_rate=1e30", "--optimizer=sgd", "--lr_schedule=constant", "--model=cnn",
       "--steps_per_epoch=16"], timeout_s=180)
  assert code == 65, out[-3000:]
  assert "error: diverged: loss is nan at step 10; lower --learning_rate" in out
  assert "not restarting: exit 65 (divergence)" in out and "launcher: success" not in out

  def strict(text):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
  for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
    strict(line)
  strict((tmp_path / "config.json").read_text())
  # A strict summary.json that says how the run ended, and a report that shows it failed.
  summary = strict((tmp_path / "summary.json").read_text())
  assert summary["status"] == "diverged" and "loss is nan" in summary["error"]
  assert summary["test_accuracy"] is None
  from experiments import report  # pylint: disable=g-import-not-at-top
  row = report.row(report.load_run(str(tmp_path)))
  assert row["reached_target"] is False and row["notes"].startswith("FAILED (diverged)")


def test_a_closed_console_neither_hangs_nor_kills_the_job(tmp_path):
  tag = os.urandom(8).hex()
  proc = subprocess.Popen([sys.executable, "-m", "launch.local", "--num_workers=2",
                           f"--run_dir={tmp_path}", "--", *SYN, "--steps_per_epoch=300",
                           "--log_every=1", "--steps_per_execution=1"],
                          cwd=helpers.REPO, env=helpers.base_env(tag), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  try:
    for _ in range(3):  # what `| head -n 3` reads, then it goes away
      proc.stdout.readline()
    proc.stdout.close()
    code = proc.wait(timeout=240)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
    helpers.assert_no_survivors(tag)
  assert code == 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["steps"] == 300  # the tasks kept training, their logs complete
  assert "step 300/300" in (tmp_path / "logs" / "worker_0.log").read_text()


def _free_port() -> int:
  import portpicker  # pylint: disable=g-import-not-at-top
  return portpicker.pick_unused_port()
