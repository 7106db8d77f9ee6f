"""Parameter-server runs through the launcher: both modes, one and two ps tasks, a killed worker."""

import json
import os
import signal
import time

import pytest

from tests import helpers

pytestmark = pytest.mark.multiprocess

FAST = ["--dataset=synthetic", "--synthetic_examples=1024", "--batch_size=32", "--log_every=8"]


@pytest.mark.parametrize("mode,num_ps", [("async", 1), ("async", 2), ("sync", 1), ("sync", 2)])
def test_ps_modes_train_and_stop_every_server(tmp_path, mode, num_ps):
  code, out, _ = helpers.run_launcher(
      ["--approach=ps", "--num_workers=2", f"--num_ps={num_ps}", f"--run_dir={tmp_path}",
       "--timeout=240", "--", *FAST, f"--ps_mode={mode}", "--steps_per_epoch=16",
       "--epochs=2", "--steps_per_closure=4"], timeout_s=300)
  assert code == 0, out[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["ps_mode"] == mode and summary["num_ps"] == num_ps
  # Where TF placed the variables: over both ps tasks when there are two, the large
  # ones split into shards (the first kernel, 800 KB, over --min_shard_bytes=256 KB).
  held = summary["params_by_task"]
  assert set(held) == {f"ps:{i}" for i in range(num_ps)} and min(held.values()) > 0
  assert (summary["extra_shards"] > 0) == (num_ps > 1)
  assert sum(held.values()) >= 100_000  # the mlp's weights, at least
  # ...and both served the workers' traffic (each pushes its shard's gradients).
  for i in range(num_ps):
    assert summary["bytes_by_task"][f"ps:{i}"]["received"] > 32 * 4 * min(held.values())
  assert summary["steps"] == 32  # optimizer updates: sync counts one per global step
  assert summary["examples_processed"] == 32 * 32 * (2 if mode == "sync" else 1)
  assert summary["test_accuracy"] > 0.5
  if mode == "sync":  # 4 steps a closure: N closures at the barrier, no phases timed
    assert "4 steps a closure at a barrier" in summary["notes"]
    assert "grad_phase_s" not in summary
  assert len(list((tmp_path / "ckpt").glob("ckpt-*.index"))) >= 1
  for name in ["worker:0", "worker:1"] + [f"ps:{i}" for i in range(num_ps)]:
    log = (tmp_path / "logs" / f"{name.replace(':', '_')}.log").read_text()
    assert f"[ps] {name} serving at" in log, log[-1000:]


def test_resume_continues_from_the_checkpoint(tmp_path):
  args = ["--approach=ps", "--num_workers=1", f"--run_dir={tmp_path}", "--timeout=200", "--",
          *FAST, "--steps_per_epoch=8", "--steps_per_closure=4"]
  code, out, _ = helpers.run_launcher(args + ["--epochs=1"], timeout_s=240)
  assert code == 0, out[-3000:]
  code, out, _ = helpers.run_launcher(args + ["--epochs=2", "--resume"], timeout_s=240)
  assert code == 0, out[-3000:]
  assert "resumed from" in out and "at step 8" in out
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["steps"] == 16


@pytest.mark.parametrize("mode", ["async", "sync_barrier"])
def test_killed_worker_is_tolerated_and_the_run_finishes(tmp_path, mode):
  """Async: the lost worker's closures re-run on the other. Sync with 5 steps a closure:
  the survivor waits at the barrier for the lost worker's gradient until the chief's
  watchdog breaks it (--sync_stall_s), then the run goes on one step a closure."""
  extra = (["--steps_per_closure=2"] if mode == "async" else
           ["--ps_mode=sync", "--steps_per_closure=5", "--sync_stall_s=5"])
  launch = helpers.Launch(
      ["--approach=ps", "--num_workers=2", f"--run_dir={tmp_path}", "--timeout=240", "--",
       *FAST, "--steps_per_epoch=300", "--epochs=1", "--log_every=20", *extra],
      timeout_s=300)
  try:
    deadline = time.monotonic() + 120
    while launch.first_time("step 20/300") is None and time.monotonic() < deadline:
      time.sleep(0.2)
    assert launch.first_time("step 20/300") is not None, launch.output[-2000:]
    victim = helpers.task_pid(launch.tag, "worker", 1)
    assert victim is not None, f"no live worker:1 process\n{launch.output[-2000:]}"
    os.kill(victim, signal.SIGKILL)
    code, out, _ = launch.wait()
  finally:
    helpers.assert_no_survivors(launch.tag)
  assert "task worker:1 exited with code -9; the job tolerates losing it" in out
  assert code == 0, out[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["steps"] == 300
  if mode == "sync_barrier":
    assert "sync: no global step for 5 s" in out and "barrier broken" in summary["notes"]
    assert summary["examples_processed"] == 300 * 2 * 32  # every step N gradients still


def test_dead_ps_ends_the_run_naming_it(tmp_path):
  launch = helpers.Launch(
      ["--approach=ps", "--num_workers=2", f"--run_dir={tmp_path}", "--timeout=240", "--",
       *FAST, "--steps_per_epoch=3000", "--epochs=1", "--log_every=20"], timeout_s=300)
  try:
    deadline = time.monotonic() + 120
    while launch.first_time("step 20/3000") is None and time.monotonic() < deadline:
      time.sleep(0.2)
    assert launch.first_time("step 20/3000") is not None, launch.output[-2000:]
    victim = helpers.task_pid(launch.tag, "ps", 0)
    assert victim is not None, f"no live ps:0 process\n{launch.output[-2000:]}"
    os.kill(victim, signal.SIGKILL)
    code, out, _ = launch.wait()
  finally:
    helpers.assert_no_survivors(launch.tag)
  assert code == 128 + signal.SIGKILL, out[-3000:]  # the dead ps's own end, not the chief's
  assert "task ps:0 failed with exit code -9" in out
  summary = tmp_path / "summary.json"
  assert not summary.exists()  # the run ended with the ps, well before its 3000 steps
