"""Restarts with injected faults, for every approach: the job finishes with the exact
step (round) count, resuming from checkpoints; and servers listen only on their own
address. Synthetic data, a few dozen steps each."""

import json
import os
import signal
import time

import pytest

from tests import helpers

pytestmark = pytest.mark.multiprocess

SYN = ["--dataset=synthetic", "--batch_size=32"]


def _launch(tmp_path, launcher_args, trainer_args, timeout_s=300):
  code, out, _ = helpers.run_launcher(
      [*launcher_args, f"--run_dir={tmp_path}", f"--timeout={timeout_s - 40}", "--",
       *trainer_args], timeout_s=timeout_s)
  return code, out


def _summary(tmp_path):
  return json.loads((tmp_path / "summary.json").read_text())


def _attempts(tmp_path):
  return json.loads((tmp_path / "launcher.json").read_text())


def test_allreduce_restarts_every_worker_and_resumes_from_the_last_epoch(tmp_path):
  code, out = _launch(
      tmp_path, ["--approach=allreduce", "--num_workers=2", "--max_restarts=2",
                 "--fail_task=worker:1", "--fail_at_step=40"],
      [*SYN, "--synthetic_examples=2048", "--epochs=3", "--log_every=8",
       "--steps_per_execution=4"])
  assert code == 0, out[-3000:]
  assert "restart 1 of 2: starting every task again" in out
  assert "fault injection: worker:1 exiting with code 3 at step 40" in (
      tmp_path / "logs" / "attempt_0" / "worker_1.log").read_text()
  resumed = (tmp_path / "logs" / "attempt_1" / "worker_0.log").read_text()
  assert "epoch 2/3" in resumed and "epoch 1/3" not in resumed  # BackupAndRestore: epoch 1 kept
  assert _summary(tmp_path)["steps"] == 3 * 32
  assert _attempts(tmp_path)["restarts"] == 1
  # The backup is deleted once training completes (an empty directory may stay).
  assert not [p for p in (tmp_path / "backup").rglob("*") if p.is_file()]


def _launch_ps(tmp_path, fail_task, fail_at_step, steps_per_epoch=100, epochs=2):
  """2 workers, 1 ps, one restart allowed, one injected crash."""
  return _launch(
      tmp_path, ["--approach=ps", "--num_workers=2", "--max_restarts=1",
                 f"--fail_task={fail_task}", f"--fail_at_step={fail_at_step}"],
      [*SYN, "--synthetic_examples=1024", f"--steps_per_epoch={steps_per_epoch}",
       f"--epochs={epochs}", "--log_every=20", "--steps_per_closure=2"])


def test_ps_restarts_only_the_dead_worker_in_place(tmp_path):
  # Long enough (~20 s of steps) for the restarted worker to start and rejoin.
  code, out = _launch_ps(tmp_path, "worker:1", 40, steps_per_epoch=400, epochs=6)
  assert code == 0, out[-3000:]
  assert "fault injection: crashing worker:1 at step 40" in out
  assert "task worker:1 exited with code -6; restarting it alone" in out
  assert "Worker /job:worker/replica:0/task:1 has been recovered" in out  # it rejoined
  assert sorted(os.listdir(tmp_path / "logs" / "attempt_1")) == ["worker_1.log"]
  assert _summary(tmp_path)["steps"] == 2400
  assert _attempts(tmp_path)["restarts"] == 1


def test_ps_restarts_the_job_from_its_checkpoint_when_a_ps_dies(tmp_path):
  code, out = _launch_ps(tmp_path, "ps:0", 120)
  assert code == 0, out[-3000:]
  assert "task ps:0 failed" in out
  assert "resumed from" in out and "at step 100" in out
  assert _summary(tmp_path)["steps"] == 200


def test_gossip_workers_resume_together_from_the_newest_common_step(tmp_path):
  code, out = _launch(
      tmp_path, ["--approach=gossip", "--num_workers=3", "--max_restarts=1",
                 "--fail_task=worker:1", "--fail_at_step=50"],
      [*SYN, "--synthetic_examples=2048", "--epochs=3", "--log_every=10"])
  assert code == 0, out[-3000:]
  for i in range(3):
    assert f"worker:{i}: resumed from" in out
  assert out.count("at step 42") == 3  # 21 steps/epoch: two epochs were saved
  assert _summary(tmp_path)["steps"] == 63


def test_fedavg_restarts_and_resumes_after_the_last_saved_round(tmp_path):
  code, out = _launch(
      tmp_path, ["--approach=fedavg", "--num_workers=1", "--max_restarts=1",
                 "--fail_task=chief:0", "--fail_at_step=2"],
      ["--dataset=synthetic", "--synthetic_examples=600", "--num_clients=12",
       "--clients_per_round=3", "--rounds=4", "--model=fedavg_2nn",
       "--client_learning_rate=0.02"], timeout_s=400)
  assert code == 0, out[-3000:]
  assert "resumed from" in out and "after round 2" in out
  summary = _summary(tmp_path)
  assert summary["rounds_run"] == 4
  rounds = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()
            if json.loads(l)["kind"] == "round"]
  assert rounds == [1, 2, 3, 4]  # each round once, none repeated after the restart


def test_a_data_error_is_not_retried_and_the_launcher_fails_with_its_code(tmp_path):
  # Prepared-looking to the launcher's preflight, unusable to TFDS: the trainer's
  # DataError (exit 66) would recur on every attempt, so there is none.
  data = tmp_path / "data" / "not_a_tfds_set" / "1.0.0"
  data.mkdir(parents=True)
  (data / "dataset_info.json").write_text("{}")
  run_dir = tmp_path / "run"
  code, out = _launch(run_dir, ["--approach=allreduce", "--num_workers=1", "--max_restarts=2"],
                      ["--dataset=not_a_tfds_set", f"--data_dir={tmp_path / 'data'}"],
                      timeout_s=200)
  assert code == 66, out[-3000:]
  assert "not restarting: exit 66 (missing data) would fail again" in out
  assert "restart 1 of" not in out and "launcher: FAILED" in out
  assert sorted(os.listdir(run_dir / "logs")) == ["attempt_0"]
  assert [a["ok"] for a in _attempts(run_dir)["attempts"]] == [False]


@pytest.mark.parametrize("bind,expect_wildcard", [("task", False), ("all", True)])
def test_servers_listen_only_on_their_own_address(tmp_path, bind, expect_wildcard):
  launch = helpers.Launch(
      ["--approach=allreduce", "--num_workers=2", f"--bind={bind}", f"--run_dir={tmp_path}",
       "--timeout=200", "--", *SYN, "--steps_per_epoch=100000", "--log_every=10",
       "--steps_per_execution=1"], timeout_s=240)
  try:
    deadline = time.monotonic() + 150
    while launch.first_time("step 10/") is None and time.monotonic() < deadline:
      time.sleep(0.2)
    assert launch.first_time("step 10/") is not None, launch.output[-2000:]
    addrs = {}
    for i in range(2):
      pid = helpers.task_pid(launch.tag, "worker", i)
      addrs[i] = helpers.listening_addresses(pid)
    os.killpg(launch.proc.pid, signal.SIGTERM)
    launch.wait()
  finally:
    helpers.assert_no_survivors(launch.tag)
  for i, listening in addrs.items():
    assert listening, f"worker:{i} listens on nothing?"
    wildcard = {a for a in listening if a.rpartition(":")[0] in ("0.0.0.0", "::")}
    if expect_wildcard:
      assert wildcard, listening
    else:
      assert all(a.startswith("127.0.0.1:") for a in listening), listening


@pytest.mark.parametrize("approach,workers,extra", [
    ("allreduce", 2, ["--steps_per_execution=2"]), ("gossip", 2, [])])
def test_a_worker_killed_at_a_random_moment_changes_nothing_but_the_time(tmp_path, approach,
                                                                          workers, extra):
  import random  # pylint: disable=g-import-not-at-top
  # After the first step line, early or mid-run; seeded per approach, so a failure's
  # delay (in its message) comes back on a rerun.
  delay = random.Random(f"kill {approach}").uniform(0.0, 2.0)
  launch = helpers.Launch(
      [f"--approach={approach}", f"--num_workers={workers}", "--max_restarts=1",
       f"--run_dir={tmp_path}", "--timeout=250", "--", *SYN, "--synthetic_examples=4096",
       "--epochs=6", "--log_every=4", *extra], timeout_s=300)
  try:
    deadline = time.monotonic() + 150
    while launch.first_time("step 4/") is None and time.monotonic() < deadline:
      time.sleep(0.1)
    time.sleep(delay)
    victim = helpers.task_pid(launch.tag, "worker", workers - 1)
    assert victim is not None, "the run ended before the kill: make it longer"
    os.kill(victim, signal.SIGKILL)
    code, out, _ = launch.wait()
  finally:
    helpers.assert_no_survivors(launch.tag)
  assert code == 0, f"killed after {delay:.2f}s:\n{out[-3000:]}"
  assert f"task worker:{workers - 1} failed with exit code -9" in out  # the kill landed
  assert "restart 1 of 1: starting every task again" in out
  steps_per_epoch = 4096 // workers // 32
  assert _summary(tmp_path)["steps"] == 6 * steps_per_epoch, f"killed after {delay:.2f}s"
