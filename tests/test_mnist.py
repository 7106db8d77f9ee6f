"""Real-MNIST accuracy, one test per approach (the slow ones; a few tens of seconds each)."""

import json
import pathlib
import shutil

import pytest

from tests import helpers

pytestmark = [pytest.mark.mnist, pytest.mark.multiprocess]


def test_allreduce_two_workers_mlp_reaches_97_percent(tmp_path, mnist_dir):
  # One epoch of the seed's tanh MLP lands at 96.7-97.1 % (see BENCHMARKS.md);
  # two epochs give the 97 % bar a margin instead of a coin flip.
  code, out, _ = helpers.run_launcher(
      ["--approach=allreduce", "--num_workers=2", f"--run_dir={tmp_path}", "--timeout=500",
       "--", "--model=mlp", "--epochs=2", f"--data_dir={mnist_dir}"], timeout_s=600)
  assert code == 0, out[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["dataset"] == "mnist" and summary["num_workers"] == 2
  assert summary["examples_processed"] == 2 * 468 * 128  # disjoint halves, every epoch
  assert summary["test_accuracy"] >= 0.97, summary


def test_ps_async_two_workers_one_ps_mlp_reaches_97_percent(tmp_path, mnist_dir):
  # As for all-reduce: one epoch measures 96.8 %, two give the bar a margin.
  code, out, _ = helpers.run_launcher(
      ["--approach=ps", "--num_workers=2", "--num_ps=1", f"--run_dir={tmp_path}",
       "--timeout=500", "--", "--model=mlp", "--ps_mode=async", "--epochs=2",
       f"--data_dir={mnist_dir}"], timeout_s=600)
  assert code == 0, out[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["ps_mode"] == "async" and summary["num_ps"] == 1
  assert summary["steps"] == 2 * 937
  assert summary["test_accuracy"] >= 0.97, summary


def test_gossip_four_workers_ring_mlp_averaged_model_reaches_97_percent(tmp_path, mnist_dir):
  # Same data budget as the all-reduce test (2 epochs at a global batch of 128).
  code, out, _ = helpers.run_launcher(
      ["--approach=gossip", "--num_workers=4", f"--run_dir={tmp_path}", "--timeout=500",
       "--", "--model=mlp", "--topology=ring", "--epochs=2", "--batch_size=32",
       "--log_every=200", f"--data_dir={mnist_dir}"], timeout_s=600)
  assert code == 0, out[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["topology"] == "ring" and summary["num_workers"] == 4
  assert summary["test_accuracy"] >= 0.97, summary
  assert len(summary["worker_test_accuracy"]) == 4


def test_fedavg_iid_2nn_ten_rounds_reaches_95_percent_with_the_data_on_the_clients(
    tmp_path, mnist_dir):
  """The issue's setting: IID, 100 clients, 10 per round, E=1, B=10, 2NN, 10 rounds
  (measured 95.4 % with client lr 0.1), over two executor services. The chief's
  --data_dir holds the test split only: had it read the training split, the run would
  fail. Each service writes and trains its own clients only (k mod 2)."""
  chief_dir = tmp_path / "test_split_only"
  version = pathlib.Path(mnist_dir) / "mnist" / "3.0.1"
  (chief_dir / "mnist" / "3.0.1").mkdir(parents=True)
  for f in version.iterdir():
    if "train" not in f.name:
      shutil.copy(f, chief_dir / "mnist" / "3.0.1" / f.name)
  run_dir = tmp_path / "run"
  code, out, _ = helpers.run_launcher(
      ["--approach=fedavg", "--num_workers=2", f"--run_dir={run_dir}", "--timeout=500",
       "--", "--model=fedavg_2nn", "--partition=iid", "--num_clients=100",
       "--clients_per_round=10", "--local_epochs=1", "--local_batch_size=10", "--rounds=10",
       f"--data_dir={chief_dir}", f"--client_data_dir={mnist_dir}", "--client_scores"],
      timeout_s=600)
  assert code == 0, out[-3000:]
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["rounds"] == 10 and summary["partition"] == "iid"
  assert summary["examples_processed"] == 10 * 10 * 600
  assert summary["test_accuracy"] >= 0.95, summary
  for i in (0, 1):
    held = {int(p.stem.split("_")[1])
            for p in (run_dir / "federation" / f"service_{i}").glob("client_*.bin")}
    assert held == set(range(i, 100, 2))
  records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  for r in (r for r in records if r["kind"] == "round"):
    assert [k % 2 for k in r["clients_by_service"][0]] == [0] * len(r["clients_by_service"][0])
    assert [k % 2 for k in r["clients_by_service"][1]] == [1] * len(r["clients_by_service"][1])
    assert sum(c["examples"] for c in r["clients"]) == 10 * 600  # scored where they live
  # No examples cross: each service's bytes are the model in and an aggregate out.
  by_task, analytic = summary["bytes_by_task"], summary["bytes_analytic_by_task"]
  for task in ("worker:0", "worker:1", "chief:0"):
    for way in ("sent", "received"):
      assert 0.9 <= by_task[task][way] / analytic[task][way] <= 1.3, (task, way, by_task)
