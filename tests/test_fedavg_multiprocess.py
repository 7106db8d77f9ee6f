"""FedAvg through the launcher: executor services as worker tasks, in-process, resume."""

import json

import pytest

from tests import helpers

pytestmark = pytest.mark.multiprocess

FAST = ["--dataset=synthetic", "--synthetic_examples=600", "--num_clients=12",
        "--clients_per_round=4", "--model=fedavg_2nn", "--client_learning_rate=0.02"]


def test_two_executor_services_run_the_rounds_and_none_survives(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--approach=fedavg", "--num_workers=2", f"--run_dir={tmp_path}", "--timeout=400", "--",
       *FAST, "--rounds=3", "--target_accuracy=0.3", "--client_scores"], timeout_s=480)
  assert code == 0, out[-3000:]
  assert "[worker:0] [fedavg] executor service (worker_binary)" in out
  assert "2 executor service(s)" in out
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["num_workers"] == 2 and summary["rounds_run"] == 3
  assert summary["examples_processed"] == 3 * 4 * 50  # 4 clients of 50 examples per round
  # Each service trains its own clients (k mod 2) and exchanges with the chief the
  # model and one partial aggregate per round it served, each way within 15 % of that
  # (the rest: gRPC framing, the round's computation once per client count, names).
  by_task, analytic = summary["bytes_by_task"], summary["bytes_analytic_by_task"]
  for task in ("worker:0", "worker:1", "chief:0"):
    for way in ("sent", "received"):
      ratio = by_task[task][way] / analytic[task][way]
      assert 0.9 <= ratio <= 1.3, (task, way, ratio, by_task, analytic)
  assert summary["test_accuracy"] > 0.3 and summary["rounds_to_target"] is not None
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  rounds = [r for r in records if r["kind"] == "round"]
  assert [r["round"] for r in rounds] == [1, 2, 3]
  assert [r["kind"] for r in records].count("first_step") == 1  # the shared Progress
  assert all(len(r["clients"]) == 4 and r["bytes_broadcast"] == 4 * 4 * 199_210
             for r in rounds)


@pytest.mark.parametrize("backend,where", [
    ("native", "in-process (private executor service)"),
    ("mapreduce", "in-process (MapReduceForm on TF's runtime)")])
def test_in_process_run_resumes_from_the_server_checkpoint(tmp_path, backend, where):
  args = ["--approach=fedavg", "--num_workers=0", f"--run_dir={tmp_path}", "--timeout=300",
          "--", *FAST, f"--fedavg_backend={backend}"]
  code, out, _ = helpers.run_launcher(args + ["--rounds=2"], timeout_s=360)
  assert code == 0, out[-3000:]
  assert where in out
  first = json.loads((tmp_path / "summary.json").read_text())
  code, out, _ = helpers.run_launcher(args + ["--rounds=3", "--resume"], timeout_s=360)
  assert code == 0, out[-3000:]
  assert "resumed from" in out and "after round 2" in out and "round 3/3" in out
  assert "round 1/3" not in out
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert first["rounds_run"] == 2 and first["examples_processed"] == 2 * 4 * 50
  # The resumed run trained round 3 alone: one round's examples, one round record more.
  assert summary["rounds_run"] == 3 and summary["examples_processed"] == 4 * 50
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["round"] for r in records if r["kind"] == "round"] == [1, 2, 3]
