"""Real multi-process runs through the launcher on synthetic data (few steps, bounded time)."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests import helpers

pytestmark = pytest.mark.multiprocess

FAST = ["--dataset=synthetic", "--synthetic_examples=1024", "--batch_size=32", "--log_every=4"]


def test_two_workers_train_and_write_one_summary(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--approach=allreduce", "--num_workers=2", f"--run_dir={tmp_path}", "--timeout=240",
       "--", *FAST, "--steps_per_epoch=8", "--epochs=2"], timeout_s=300)
  assert code == 0, out[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["num_workers"] == 2 and summary["global_batch_size"] == 64
  assert summary["steps"] == 16 and summary["examples_processed"] == 16 * 64
  assert "[worker:0]" in out and "[worker:1]" in out and "launcher: success" in out
  assert "test_accuracy=" in out  # the launcher prints the summary
  for i in (0, 1):
    log = (tmp_path / "logs" / f"worker_{i}.log").read_text()
    assert f"worker:{i}: 2 worker(s)" in log


def test_crashing_worker_fails_the_job_fast_and_names_it(tmp_path):
  launch = helpers.Launch(["--num_workers=2", f"--run_dir={tmp_path}", "--timeout=240", "--",
                           *FAST, "--epochs=50", "--fail_task=worker:1", "--fail_at_step=5"],
                          timeout_s=120)
  try:
    code, out, _ = launch.wait()
  finally:
    helpers.assert_no_survivors(launch.tag)
  assert code == 3, out[-3000:]
  assert "task worker:1 failed with exit code 3" in out
  assert "  | fault injection: worker:1" in out  # the tail of its log is shown
  crashed_at = launch.first_time("fault injection: worker:1")
  assert launch.ended - crashed_at < 30, "the launcher took too long to notice the crash"
  assert not (tmp_path / "summary.json").exists()


def test_timeout_stops_every_task(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--num_workers=2", f"--run_dir={tmp_path}", "--timeout=6", "--", *FAST, "--epochs=1000"],
      timeout_s=90)
  assert code == 124 and "timeout after 6s" in out


def test_sigint_to_the_launcher_stops_every_task(tmp_path):
  launch = helpers.Launch(["--num_workers=2", f"--run_dir={tmp_path}", "--timeout=200", "--",
                           *FAST, "--epochs=1000"], timeout_s=90)
  try:
    deadline = time.monotonic() + 60
    while launch.first_time(" step ") is None and time.monotonic() < deadline:
      time.sleep(0.2)
    assert launch.first_time(" step ") is not None, launch.output[-2000:]  # training
    assert len(helpers.tagged_pids(launch.tag)) >= 3  # the launcher and both workers
    launch.proc.send_signal(signal.SIGINT)
    code, out, _ = launch.wait()
  finally:
    helpers.assert_no_survivors(launch.tag)
  assert code == 128 + signal.SIGINT and "received SIGINT" in out


def test_bad_tf_config_is_one_line_and_exit_2(tmp_path):
  env = helpers.base_env("tfconfig")
  env["TF_CONFIG"] = '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps"}}'
  proc = subprocess.run([sys.executable, "-m", "trainers.allreduce", "--dataset=synthetic",
                         f"--run_dir={tmp_path}"], cwd=helpers.REPO, env=env,
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2
  assert [l for l in proc.stderr.splitlines() if l.strip()] == [
      "error: TF_CONFIG task type 'ps' is not a role of the cluster ['worker']"]
