"""FedAvg's mapreduce backend (issue 32): TFF's MapReduceForm of the round on TF's own
runtime gives the native backend's model, its services' failures fail the job, and it
refuses what it cannot run with one line."""

import json
import signal
import time
import os

import numpy as np
import pytest

from cluster.errors import ConfigError
from tests import helpers
from trainers.common import config as config_lib
from trainers.federated import config as fed_config

FAST = ["--dataset=synthetic", "--synthetic_examples=600", "--num_clients=12",
        "--clients_per_round=4", "--client_learning_rate=0.02"]


def _run(run_dir, backend: str, model: str = "small_cnn", extra=()) -> tuple[int, str]:
  """Three rounds on 2 services; returns (exit code, output)."""
  code, out, _ = helpers.run_launcher(
      ["--approach=fedavg", "--num_workers=2", f"--run_dir={run_dir}", "--timeout=300", "--",
       *FAST, f"--model={model}", "--rounds=3", f"--fedavg_backend={backend}", *extra],
      timeout_s=360)
  return code, out


@pytest.mark.multiprocess
def test_both_backends_give_the_same_model_after_three_rounds(tmp_path):
  for backend in ("native", "mapreduce"):
    code, out = _run(tmp_path / backend, backend)
    assert code == 0, out[-3000:]
  assert "2 TF server(s) (MapReduceForm on TF's runtime)" in out
  native = np.load(tmp_path / "native" / "server_state.npz")
  mapreduce = np.load(tmp_path / "mapreduce" / "server_state.npz")
  assert int(native["round"]) == int(mapreduce["round"]) == 3
  assert native.files == mapreduce.files
  diff = max(float(np.max(np.abs(native[k] - mapreduce[k]))) for k in native.files)
  assert diff <= 1e-5, diff
  summaries = [json.loads((tmp_path / b / "summary.json").read_text())
               for b in ("native", "mapreduce")]
  assert summaries[0]["examples_processed"] == summaries[1]["examples_processed"] == 3 * 4 * 50
  # The services send one partial aggregate per round they served, and receive the
  # model once (plus, once per job, the round graph: 10-25 % of three small rounds).
  mr = summaries[1]
  for task in ("worker:0", "worker:1"):
    sent = mr["bytes_by_task"][task]["sent"] / mr["bytes_analytic_by_task"][task]["sent"]
    received = (mr["bytes_by_task"][task]["received"] /
                mr["bytes_analytic_by_task"][task]["received"])
    assert 0.95 <= sent <= 1.15 and 0.95 <= received <= 1.8, (task, sent, received)


@pytest.mark.multiprocess
def test_compression_quantizes_what_leaves_each_service(tmp_path):
  code, out = _run(tmp_path, "mapreduce", "fedavg_2nn", ["--aggregator=compression"])
  assert code == 0, out[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["rounds_run"] == 3 and np.isfinite(summary["test_loss"])
  # fedavg_2nn's two large kernels (196,800 of its 199,210 parameters) cross as 8-bit
  # codes: a service sends about a quarter of the float32 partial aggregate.
  for task in ("worker:0", "worker:1"):
    ratio = (summary["bytes_by_task"][task]["sent"] /
             summary["bytes_analytic_by_task"][task]["sent"])
    assert 0.22 <= ratio <= 0.4, (task, ratio)


def test_quantization_is_unbiased_and_within_one_level():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainers.federated import mapreduce  # pylint: disable=g-import-not-at-top
  x = tf.random.stateless_normal([50_000], seed=[1, 2])
  codes, lo, hi = mapreduce.quantize(x, 8, tf.constant([3, 4], tf.int64))
  back = mapreduce.dequantize(codes, lo, hi, 8)
  assert codes.dtype == tf.uint8
  level = float(hi - lo) / 255
  assert float(tf.reduce_max(tf.abs(back - x))) <= level * 1.0001
  assert abs(float(tf.reduce_mean(back - x))) < 0.01 * level  # stochastic rounding


@pytest.mark.multiprocess
def test_a_killed_service_fails_the_job_and_nothing_survives(tmp_path):
  launch = helpers.Launch(["--approach=fedavg", "--num_workers=2", f"--run_dir={tmp_path}",
                           "--", *FAST, "--model=fedavg_2nn", "--rounds=100000",
                           "--fedavg_backend=mapreduce"], timeout_s=240)
  try:
    deadline = time.monotonic() + 180
    while "round 2/" not in launch.output:
      assert time.monotonic() < deadline and launch.proc.poll() is None, launch.output[-3000:]
      time.sleep(0.2)
    os.kill(helpers.task_pid(launch.tag, "worker", 1), signal.SIGKILL)
    code, out, _ = launch.wait()
  finally:
    helpers.assert_no_survivors(launch.tag, wait_s=15)
  assert code != 0 and "task worker:1 failed" in out, out[-3000:]
  assert "launcher: FAILED" in out


def test_what_the_backend_cannot_run_is_one_line():
  train = config_lib.TrainConfig(approach="fedavg")
  with pytest.raises(ConfigError, match="SCAFFOLD keeps each client's control variate"):
    fed_config.Config(train=train, algorithm="scaffold", fedavg_backend="mapreduce")
  with pytest.raises(ConfigError, match="does not score clients"):
    fed_config.Config(train=train, client_scores=True, fedavg_backend="mapreduce")
  fed_config.Config(train=train, algorithm="fedprox", proximal_strength=0.1,
                    server_optimizer="adam", fedavg_backend="mapreduce")


def test_auto_takes_mapreduce_wherever_it_can_run_and_every_task_agrees():
  train = config_lib.TrainConfig(approach="fedavg")
  assert fed_config.Config(train=train).backend == "mapreduce"  # the default
  assert fed_config.Config(train=train, algorithm="scaffold").backend == "native"
  assert fed_config.Config(train=train, client_scores=True).backend == "native"
  assert fed_config.Config(train=train, fedavg_backend="native").backend == "native"
  # What a run spec's arguments resolve to (the bench's kernels column) is the same rule.
  assert fed_config.backend_of_args(()) == "mapreduce"
  assert fed_config.backend_of_args(("--algorithm=scaffold",)) == "native"
  assert fed_config.backend_of_args(("--client_scores", "--noclient_scores")) == "mapreduce"
  assert fed_config.backend_of_args(("--client_scores",)) == "native"
  assert fed_config.backend_of_args(("--fedavg_backend=native",)) == "native"


@pytest.mark.parametrize("extra", [
    {}, {"algorithm": "fedprox", "proximal_strength": 0.1}, {"algorithm": "fedsgd"},
    {"server_optimizer": "yogi"}, {"aggregator": "compression"},
    {"dp_noise_multiplier": 0.1, "dp_clip": 1.0}])
def test_every_recipe_but_scaffold_has_a_map_reduce_form_of_plain_tf_graphs(extra):
  from models.registry import build_model  # pylint: disable=g-import-not-at-top
  from trainers.federated import federation, mapreduce, trainer  # pylint: disable=g-import-not-at-top
  config = fed_config.Config(train=config_lib.TrainConfig(approach="fedavg", model="mlp"),
                             clients_per_round=4, fedavg_backend="mapreduce", **extra)
  process = trainer.build_process(lambda: build_model("mlp"), federation.element_spec(),
                                  config)._process  # pylint: disable=protected-access
  form = mapreduce.form_of(process)
  # The client's dataset is the work graph's first input; the rest is what prepare
  # broadcasts; accumulate folds work's outputs into zero's; update takes the state
  # and report's outputs.
  assert len(form.work.inputs) == 1 + len(form.prepare.outputs)
  assert len(form.accumulate.inputs) == len(form.zero.outputs) + len(form.work.outputs)
  assert len(form.update.inputs) == len(form.prepare.inputs) + len(form.report.outputs)
  state = mapreduce.packed(mapreduce._run_graph(form.initialize),  # pylint: disable=protected-access
                           process.initialize.type_signature.result.member)
  assert [w.shape for w in state.global_model_weights.trainable] == [
      w.shape for w in build_model("mlp").trainable_weights]


def test_a_service_trains_a_client_per_core_of_its_share():
  from trainers.federated import mapreduce  # pylint: disable=g-import-not-at-top
  assert mapreduce.lanes(1, cores=2) == 2
  assert mapreduce.lanes(2, cores=2) == 1
  assert mapreduce.lanes(4, cores=2) == 1   # never none
  assert mapreduce.lanes(2, cores=16) == 8
