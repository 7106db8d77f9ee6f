"""The parameter-server trainer's real run(), in one process with an in-process cluster
(TF's own test cluster: 2 workers and 1 ps as in-process gRPC servers, this process
the chief), on tiny synthetic data. In-process servers cannot be shut down, so the
test body runs in a fresh interpreter that exits when it is done."""

import json
import multiprocessing
import os

import pytest

from tests import helpers

SYN_TRAIN = 512


def _train(queue, run_dir: str, ps_mode: str, steps_per_closure: int | None = 3) -> None:
  """Child: an in-process PS cluster and the trainer's run(), with the strategy passed in."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow.python.distribute import multi_worker_test_base  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
    from cluster.tf_config import TaskInfo  # pylint: disable=g-import-not-at-top
    from trainers.ps import trainer as parameter_server  # pylint: disable=g-import-not-at-top
    from trainers.common.config import TrainConfig  # pylint: disable=g-import-not-at-top

    spec = multi_worker_test_base.create_in_process_cluster(num_workers=2, num_ps=1)
    spec["chief"] = [f"localhost:{multi_worker_test_base.pick_unused_port()}"]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), rpc_layer="grpc")
    strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
    task = TaskInfo({r: tuple(a) for r, a in spec.items()}, "chief", 0)
    cfg = TrainConfig(approach="ps", dataset="synthetic", synthetic_examples=SYN_TRAIN,
                      batch_size=16, epochs=2, log_every=8, eval_every_examples=256,
                      run_dir=run_dir)
    config = parameter_server.PSConfig(cfg, ps_mode=ps_mode,
                                       steps_per_closure=steps_per_closure)
    summary = parameter_server.run(config, task, strategy=strategy,
                                   flag_values={"ps_mode": ps_mode})
    queue.put(("ok", summary))
  except BaseException as e:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    queue.put(("error", traceback.format_exc()))
    del e
  finally:
    queue.close()
    queue.join_thread()
    os._exit(0)  # pylint: disable=protected-access  # in-process servers never stop


def _run_in_child(run_dir: str, ps_mode: str, steps_per_closure: int | None = 3) -> dict:
  ctx = multiprocessing.get_context("spawn")
  queue = ctx.Queue()
  tag = os.urandom(8).hex()
  os.environ[helpers.TAG_VAR] = tag  # the child inherits it: survivors can be found
  try:
    child = ctx.Process(target=_train, args=(queue, run_dir, ps_mode, steps_per_closure))
    child.start()
    try:
      status, value = queue.get(timeout=240)
    finally:
      child.join(timeout=30)
      if child.is_alive():
        child.kill()
  finally:
    del os.environ[helpers.TAG_VAR]
    helpers.assert_no_survivors(tag)
  assert status == "ok", value
  return value


@pytest.mark.parametrize("ps_mode,examples_per_step", [("async", 16), ("sync", 32)])
def test_ps_run_in_one_process_takes_the_planned_steps_and_writes_the_contract(
    tmp_path, ps_mode, examples_per_step):
  # Each mode's default steps per closure (sync: one, and the two phases timed).
  summary = _run_in_child(str(tmp_path), ps_mode, None)
  steps_per_epoch = SYN_TRAIN // examples_per_step  # the shared formula
  assert summary["label"] == f"ps/{ps_mode}" and summary["num_workers"] == 2
  assert summary["steps"] == 2 * steps_per_epoch == summary["steps_per_epoch"] * 2
  assert summary["examples_processed"] == 2 * steps_per_epoch * examples_per_step
  assert summary["test_accuracy"] > 0.9  # learns the separable synthetic classes
  assert ("grad_phase_s" in summary) == (ps_mode == "sync")
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["steps"] == summary["steps"]
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
  # One mid-epoch evaluation per epoch (256 of its 512 examples).
  assert [r["examples_seen"] for r in records if r["kind"] == "eval"] == [256, 768]
  assert [r["step"] for r in records if r["kind"] == "first_step"] == [1]
  assert list((tmp_path / "ckpt").glob("ckpt-*.index"))


@pytest.mark.parametrize("ps_mode,examples_per_step", [("async", 16), ("sync", 32)])
def test_several_steps_per_closure_keep_the_examples_and_the_evaluation_points(
    tmp_path, ps_mode, examples_per_step):
  """A closure of 5 steps (async: one dispatch for five updates; sync: N closures that
  meet at the barrier five times) trains the same examples and evaluates at the same
  steps as one step per closure."""
  points = {}
  for per in (1, 5):
    run_dir = tmp_path / f"per_{per}"
    summary = _run_in_child(str(run_dir), ps_mode, per)
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    points[per] = ([(r["step"], r["examples_seen"]) for r in records
                    if r.get("test_accuracy") is not None],
                   summary["steps"], summary["examples_processed"])
    if ps_mode == "sync":  # the barrier's run says so, and times no phases
      assert ("barrier" in summary["notes"]) == (per > 1), summary["notes"]
      assert ("grad_phase_s" in summary) == (per == 1)
  assert points[1] == points[5]
  evals, steps, examples = points[5]
  per_epoch = SYN_TRAIN // examples_per_step
  assert steps == 2 * per_epoch and examples == steps * examples_per_step
  # Every 256 examples, and the epochs' ends.
  assert [s for s, _ in evals] == [k * per_epoch // 2 for k in (1, 2, 3, 4)]
