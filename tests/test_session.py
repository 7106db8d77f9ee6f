"""The shared run path: validated configs, the one steps-per-epoch formula, the
progress cadence, and a run session that always closes its writer."""

import json

import numpy as np
import pytest

from cluster.errors import ConfigError
from trainers.allreduce import config as allreduce
from trainers.federated import config as federated
from trainers.gossip import config as gossip
from trainers.ps import config as parameter_server
from trainers.common import data, progress, session
from trainers.common.config import TrainConfig
from cluster.tf_config import SINGLE_PROCESS, TaskInfo


def _train(**kw):
  return TrainConfig(approach="allreduce", dataset="synthetic", run_dir="/tmp/unused", **kw)


@pytest.mark.parametrize("build,flag,value", [
    (lambda: parameter_server.Config(_train(), ps_mode="synch"), "--ps_mode", "synch"),
    (lambda: parameter_server.Config(_train(), sync_aggregation="avg"),
     "--sync_aggregation", "avg"),
    (lambda: gossip.Config(_train(), topology="star"), "--topology", "star"),
    (lambda: gossip.Config(_train(), mixing="max"), "--mixing", "max"),
    (lambda: gossip.Config(_train(), exchange="both"), "--exchange", "both"),
    (lambda: allreduce.Config(_train(), communication="mpi"), "--communication", "mpi"),
    (lambda: _train(partition="skew"), "--partition", "skew"),
    (lambda: federated.Config(_train(), server_optimizer="lamb"),
     "--server_optimizer", "lamb"),
    (lambda: _train(model="resnet"), "--model", "resnet"),
    (lambda: _train(optimizer="lamb"), "--optimizer", "lamb"),
    (lambda: _train(lr_schedule="step"), "--lr_schedule", "step"),
])
def test_a_bad_choice_names_the_field_the_value_and_the_valid_values(build, flag, value):
  with pytest.raises(ConfigError) as e:
    build()
  msg = str(e.value)
  assert flag in msg and repr(value) in msg and "must be one of" in msg and "\n" not in msg


def test_ps_sync_error_lists_the_modes():
  with pytest.raises(ConfigError, match=r"--ps_mode must be one of async, sync; got 'synch'"):
    parameter_server.Config(_train(), ps_mode="synch")


@pytest.mark.parametrize("examples,per_step,cap,want", [
    (60000, 128, None, 468), (60000, 64, None, 937), (100, 200, None, 1), (60000, 64, 7, 7)])
def test_one_steps_per_epoch_formula(examples, per_step, cap, want):
  assert data.steps_per_epoch(examples, per_step, cap) == want
  # Per-worker shards then last the same number of steps: floor(floor(a/n)/b) == floor(a/nb)
  # (when a step's examples fit in the set; else the formula's floor of one step stands).
  if cap is None and per_step % 2 == 0 and per_step <= examples:
    assert (examples // 2) // (per_step // 2) == want


def test_schedule_chunks_end_at_every_log_point_and_epoch_end():
  chunks = list(progress.schedule(start_step=0, steps_per_epoch=10, epochs=2, log_every=4))
  assert [(c.start, c.end) for c in chunks] == [(0, 4), (4, 8), (8, 10), (10, 12), (12, 16),
                                                (16, 20)]
  assert [c.opens_epoch for c in chunks] == [True, False, False, True, False, False]
  assert [c.closes_epoch for c in chunks] == [False, False, True, False, False, True]
  assert [c.step_in_epoch for c in chunks] == [4, 8, 10, 2, 6, 10]
  resumed = list(progress.schedule(start_step=10, steps_per_epoch=10, epochs=2, log_every=4))
  assert resumed == chunks[3:]
  assert list(progress.schedule(20, 10, 2, 4)) == []


def test_round_evaluation_cadence():
  assert [r for r in range(1, 8) if progress.round_due_for_eval(r, 7, 3)] == [3, 6, 7]


def test_the_session_writes_the_common_core_and_always_closes_its_writer(tmp_path):
  cfg = TrainConfig(approach="allreduce", dataset="synthetic", synthetic_examples=64,
                    run_dir=str(tmp_path))
  with pytest.raises(RuntimeError, match="boom"):
    with session.open_run(cfg, SINGLE_PROCESS, "allreduce", 1, {"a": 1}) as run:
      writer = run.writer
      raise RuntimeError("boom")
  assert writer._metrics is None  # pylint: disable=protected-access  # closed
  with session.open_run(cfg, SINGLE_PROCESS, "x/y", 1) as run:
    assert len(run.shard(0, 2)) + len(run.shard(1, 2)) == 64
    run.start_progress(run.steps_per_epoch(16), 16, epochs=1)
    summary = run.finish(steps=4)
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk == json.loads(json.dumps(summary))
  assert {"approach", "label", "dataset", "model", "num_workers", "test_accuracy",
          "test_loss", "train_time_s", "examples_processed", "examples_per_sec",
          "wall_time_s", "bytes_sent_per_worker", "notes", "run_dir", "steps"} <= set(summary)
  assert summary["label"] == "x/y" and summary["steps"] == 4
  assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1}


def test_schedule_adds_evaluation_points_inside_epochs():
  every = progress.eval_every_steps(eval_every_examples=100, examples_per_step=32)  # 4 steps
  assert every == 4 and progress.eval_every_steps(None, 32) is None
  chunks = list(progress.schedule(0, steps_per_epoch=10, epochs=2, log_every=6, eval_every=every))
  assert [(c.start, c.end) for c in chunks] == [(0, 4), (4, 6), (6, 8), (8, 10), (10, 12),
                                                (12, 16), (16, 18), (18, 20)]
  # An evaluation point is never the epoch's end, which evaluates anyway.
  assert [c.end for c in chunks if c.evaluates] == [4, 8, 12, 16]
  assert [c.end for c in chunks if c.closes_epoch] == [10, 20]


def test_mid_epoch_evaluation_is_recorded_and_kept_out_of_training_time(tmp_path):
  from trainers.common.outputs import RunWriter  # pylint: disable=g-import-not-at-top
  writer = RunWriter(str(tmp_path))
  p = progress.Progress(writer, "x", epochs=1, steps_per_epoch=10, examples_per_step=8,
                        verbose=False)
  p.start_epoch()
  import time  # pylint: disable=g-import-not-at-top

  def slow_eval():
    time.sleep(0.3)
    return 0.5, 0.75
  rec = p.evaluate(1, 4, 4, slow_eval)
  assert rec["kind"] == "eval" and rec["examples_seen"] == 32 and rec["test_accuracy"] == 0.75
  end = p.end_epoch(1, 10, 0.1, 0.9)
  writer.close()
  assert end["epoch_time_s"] < 0.3 and p.last_test == (0.5, 0.75)


def test_partition_splits_the_workers_shards_and_records_their_labels():
  """--partition for every approach: iid is the same seeded split as FedAvg's
  clients; shards gives each worker about two digits; the histograms say so."""
  from trainers.common import data, partition, session
  labels = np.repeat(np.arange(10), 100)
  arrays = data.Arrays(np.zeros((1000, 28, 28, 1), np.float32), labels.astype(np.int32))
  task = TaskInfo({"worker": ("a", "b", "c", "d")}, "worker", 0)

  def run_with(**kw):
    return session.Run(_train(**kw), task, "x", 4, None, arrays, arrays, 0.0)

  iid = run_with()
  np.testing.assert_array_equal(iid.partition(4)[1], partition.iid(labels, 4, 42)[1])
  np.testing.assert_array_equal(iid.shard(1, 4).y, labels[partition.iid(labels, 4, 42)[1]])
  skewed = run_with(partition="shards")
  hist = np.array(skewed.label_histograms(4))
  assert hist.sum() == 1000 and (hist.sum(axis=1) == 250).all()
  # 2 label-sorted shards of 125 (labels come in runs of 100): at most 4 digits each.
  assert ((hist > 0).sum(axis=1) <= 4).all()
  parts = skewed.partition(4)
  assert len(np.unique(np.concatenate(parts))) == 1000  # disjoint, all covered
  dirichlet = run_with(partition="dirichlet", dirichlet_alpha=0.1)
  assert np.array(dirichlet.label_histograms(4)).sum() == 1000
