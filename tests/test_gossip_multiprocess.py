"""Gossip runs through the launcher: consensus by gossip alone, identical replicas for full+gradients."""

import json

import pytest

from tests import helpers

pytestmark = pytest.mark.multiprocess

FAST = ["--dataset=synthetic", "--synthetic_examples=1024", "--batch_size=16"]


def _records(run_dir):
  lines = (run_dir / "metrics.jsonl").read_text().splitlines()
  return [json.loads(l) for l in lines]


def test_ring_gossip_alone_drives_different_replicas_to_consensus(tmp_path):
  # Different initial replicas and a learning rate too small to matter: any drop in the
  # consensus distance is the exchange's doing. Ring of 4, Metropolis: lambda_2 = 1/3.
  code, out, _ = helpers.run_launcher(
      ["--approach=gossip", "--num_workers=4", f"--run_dir={tmp_path}", "--timeout=240", "--",
       *FAST, "--topology=ring", "--independent_init", "--optimizer=sgd",
       "--learning_rate=1e-9", "--steps_per_epoch=10", "--log_every=2"], timeout_s=300)
  assert code == 0, out[-3000:]
  dist = {r["step"]: r["consensus_distance"] for r in _records(tmp_path)
          if r["kind"] == "step" and "consensus_distance" in r}
  assert dist[0] > 0.1  # independent inits really differ
  assert dist[2] < dist[0] * (1 / 3) ** 2 * 1.01  # at least as fast as lambda_2^t
  assert dist[10] < 1e-3 * dist[0]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["topology"] == "ring" and summary["degree"] == 2
  assert summary["exchanges"] == 10
  # degree x model bytes per exchange (the payload also carries each worker's id).
  assert summary["bytes_analytic_per_worker"] == 10 * (
      summary["bytes_per_exchange_per_worker"] - 2 * 4)
  # Measured on the wire (the launcher's shim): at least the payload, each way.
  assert summary["bytes_sent_per_worker"] >= summary["bytes_analytic_per_worker"]
  assert summary["bytes_received_per_worker"] >= summary["bytes_analytic_per_worker"]
  assert set(summary["bytes_by_task"]) == {f"worker:{i}" for i in range(4)}
  assert len(summary["worker_test_accuracy"]) == 4


def test_full_topology_gradient_exchange_keeps_replicas_identical(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--approach=gossip", "--num_workers=3", f"--run_dir={tmp_path}", "--timeout=240", "--",
       *FAST, "--topology=full", "--exchange=gradients", "--steps_per_epoch=20",
       "--log_every=5"], timeout_s=300)
  assert code == 0, out[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["consensus_distance"] < 1e-6
  assert all(r["consensus_distance"] < 1e-6 for r in _records(tmp_path)
             if "consensus_distance" in r)
  assert len(set(summary["worker_test_accuracy"])) == 1  # the same model everywhere
  assert summary["test_accuracy"] > 0.5


def test_params_gossip_with_training_keeps_replicas_close_and_learns(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--approach=gossip", "--num_workers=4", f"--run_dir={tmp_path}", "--timeout=240", "--",
       *FAST, "--topology=ring", "--steps_per_epoch=16", "--epochs=2",
       "--log_every=8", "--gossip_every=2"], timeout_s=300)
  assert code == 0, out[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["steps"] == 32 and summary["exchanges"] == 16
  assert 0 < summary["consensus_distance"] < 0.1
  assert summary["test_accuracy"] > 0.5
  assert len(list((tmp_path / "ckpt").glob("worker_*"))) == 4


def test_one_peer_exponential_gossip_averages_exactly_every_log2_n_steps(tmp_path):
  # Different initial replicas, no learning to speak of: with 4 workers the one-peer
  # graph sends each vector to one peer per step, and after 2 steps (a period) every
  # replica is the exact average: the consensus distance collapses to rounding.
  code, out, _ = helpers.run_launcher(
      ["--approach=gossip", "--num_workers=4", f"--run_dir={tmp_path}", "--timeout=240", "--",
       *FAST, "--topology=one_peer_exp", "--independent_init", "--optimizer=sgd",
       "--learning_rate=1e-9", "--steps_per_epoch=8", "--log_every=2"], timeout_s=300)
  assert code == 0, out[-3000:]
  dist = {r["step"]: r["consensus_distance"] for r in _records(tmp_path)
          if r["kind"] == "step" and "consensus_distance" in r}
  assert dist[0] > 0.1 and dist[2] < 1e-5 and dist[8] < 1e-5, dist
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["degree"] == 1 and summary["exchanges"] == 8
  # One peer per exchange: the measured bytes are the analytic volume plus framing and
  # the measurement gathers (which the analytic figure leaves out).
  assert summary["bytes_analytic_per_worker"] == 8 * summary["bytes_per_exchange_per_worker"]
  assert summary["bytes_sent_per_worker"] >= summary["bytes_analytic_per_worker"]
