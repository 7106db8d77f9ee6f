"""Time to accuracy through the launcher: every approach stops at its target with all
workers at the same step, and the bytes on the wire are measured for every task."""

import json

import pytest

from tests import helpers

pytestmark = pytest.mark.multiprocess

FAST = ["--dataset=synthetic", "--synthetic_examples=2048", "--batch_size=32", "--log_every=4",
        "--model=mlp", "--epochs=4", "--steps_per_epoch=16", "--eval_every_examples=128",
        "--target_accuracy=0.5", "--stop_at_target"]


@pytest.mark.parametrize("approach,extra", [
    ("allreduce", ["--steps_per_execution=2"]), ("ps", ["--ps_mode=async"]),
    ("gossip", [])])
def test_every_worker_stops_at_the_target_together(tmp_path, approach, extra):
  code, out, _ = helpers.run_launcher(
      [f"--approach={approach}", "--num_workers=2", f"--run_dir={tmp_path}", "--timeout=240",
       "--", *FAST, *extra], timeout_s=300)
  assert code == 0, out[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  (target,) = [r for r in records if r["kind"] == "target"]
  evals = [r for r in records if r.get("test_accuracy") is not None
           and r["kind"] in ("eval", "epoch")]
  # The first evaluation at or above the target is the last: the run stopped there.
  assert evals[-1]["test_accuracy"] >= 0.5 > max(r["test_accuracy"] for r in evals[:-1] or
                                                 [{"test_accuracy": 0.0}])
  assert summary["reached_target"] and summary["steps_to_target"] == target["step"]
  assert summary["steps"] == target["step"] < 4 * 16
  assert summary["examples_to_target"] == target["examples_to_target"] == evals[-1]["examples_seen"]
  # From the launcher's start, which came before the first step.
  assert summary["time_to_target_s"] >= summary["first_step_since_launch_s"] > 0
  assert "stopping" in out
  # Measured for every task, at least the algorithm's own volume.
  assert set(summary["bytes_by_task"]) >= {"worker:0", "worker:1"}
  assert summary["bytes_sent_per_worker"] >= summary["bytes_analytic_per_worker"] > 0
  if approach in ("allreduce", "gossip"):
    # Every worker stopped at the chief's step, not only the chief: each task's own log
    # says where its training loop ended (PS workers run no loop: the chief's coordinator
    # is the only one).
    for i in range(2):
      log = (tmp_path / "logs" / f"worker_{i}.log").read_text()
      assert f"worker:{i}: finished at step {summary['steps']}" in log, log[-1500:]
  if approach == "allreduce":
    # Ring all-reduce on the wire: the gradients plus gRPC framing (a few per cent),
    # and once per run the initial broadcast of the variables and the coordination
    # service; a run that stops after 4 steps pays that once-only model in full.
    model = summary["bytes_analytic_per_worker"] / summary["steps"]  # N=2: one a step
    ratio = summary["bytes_sent_per_worker"] / (summary["bytes_analytic_per_worker"] + model)
    assert 1.0 / 1.3 <= ratio < 1.3, ratio
