"""The all-reduce trainer run in-process (single worker) on synthetic data."""

import json

from cluster.tf_config import SINGLE_PROCESS
from trainers.allreduce import trainer as allreduce
from trainers.common.config import TrainConfig
from trainers.common.outputs import REQUIRED_SUMMARY_KEYS


def test_single_process_run_learns_and_writes_the_output_contract(tmp_path):
  cfg = TrainConfig(approach="allreduce", dataset="synthetic", synthetic_examples=2000,
                    batch_size=32, epochs=2, log_every=20, run_dir=str(tmp_path))
  summary = allreduce.run(allreduce.AllReduceConfig(cfg), SINGLE_PROCESS,
                          flag_values={"epochs": 2})
  for key in REQUIRED_SUMMARY_KEYS:
    assert key in summary
  assert summary["num_workers"] == 1 and summary["epochs"] == 2
  assert summary["steps"] == 2 * (2000 // 32)
  assert summary["test_accuracy"] > 0.9  # synthetic classes are separable
  assert json.loads((tmp_path / "summary.json").read_text())["test_accuracy"] == \
      summary["test_accuracy"]
  assert json.loads((tmp_path / "config.json").read_text()) == {"epochs": 2}
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  epochs = [r for r in records if r["kind"] == "epoch"]
  assert [r["epoch"] for r in epochs] == [1, 2]
  assert all({"time", "loss", "accuracy", "examples_per_sec", "test_accuracy"} <= set(r)
             for r in epochs)
  assert any(r["kind"] == "step" for r in records)
  assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_all_reduce_evaluates_every_eval_every_examples(tmp_path):
  cfg = TrainConfig(approach="allreduce", dataset="synthetic", synthetic_examples=640,
                    batch_size=32, epochs=1, log_every=5, eval_every_examples=160,
                    run_dir=str(tmp_path))
  allreduce.run(allreduce.AllReduceConfig(cfg, steps_per_execution=1), SINGLE_PROCESS)
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in records if r["kind"] == "eval"]
  # 20 steps of 32: evaluations after 5, 10 and 15 steps; the epoch's end evaluates itself.
  assert [r["examples_seen"] for r in evals] == [160, 320, 480]
  assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in evals)
