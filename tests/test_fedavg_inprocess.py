"""FedAvg through TFF on tiny clients: one round equals the hand-computed weighted average,
and the trainer's real run() on a private executor service."""

import json

import numpy as np
import pytest
import tensorflow as tf

from models import build_model
from trainers import fedavg_math, federated, tff_exec
from trainers.common import data
from trainers.common.config import TrainConfig


def _local_sgd(weights, arrays, lr, batch):
  """What one client should do: plain SGD on the batch-mean loss, in order, one epoch."""
  model = build_model("fedavg_2nn")
  model.set_weights(weights)
  xent = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  for x, y in federated.client_dataset(arrays, batch, 1, seed=None):
    with tf.GradientTape() as tape:
      loss = xent(y, model(x, training=True))
    for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)):
      v.assign_sub(lr * g)
  return [v.numpy() for v in model.trainable_variables]


def test_one_round_is_the_example_weighted_average_of_client_models():
  full = data.synthetic_split("train", 60)
  clients = [full.take(np.arange(0, 30)), full.take(np.arange(30, 40)),
             full.take(np.arange(40, 60))]
  spec = federated.client_dataset(clients[0], 10, 1, None).element_spec
  with tff_exec.private_executor_service() as address:
    tff_exec.install_context([address])
    process = federated.build_process(lambda: build_model("fedavg_2nn"), spec,
                                      federated.FedAvgConfig(TrainConfig(
                                          approach="fedavg", dataset="synthetic",
                                          run_dir="/tmp/unused"), client_learning_rate=0.1))
    state = process.initialize()
    start = [np.asarray(w) for w in process.get_model_weights(state).trainable]
    result = process.next(state, [federated.client_dataset(c, 10, 1, None) for c in clients])
    new = [np.asarray(w) for w in process.get_model_weights(result.state).trainable]
  assert int(result.metrics["client_work"]["train"]["num_examples"]) == 60

  local = [_local_sgd(start, c, lr=0.1, batch=10) for c in clients]
  sizes = np.array([30.0, 10.0, 20.0])
  expected = [sum(n * w[i] for n, w in zip(sizes, local)) / sizes.sum()
              for i in range(len(start))]
  for got, want, before in zip(new, expected, start):
    assert not np.allclose(want, before)  # the round really moved the model
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
  # The client drift TFF measured is the weighted RMS distance of the client updates
  # (start - local: TFF's update sign; the distance does not care) from their mean.
  updates = [np.concatenate([(a - b).ravel() for a, b in zip(start, w)]) for w in local]
  want_drift = fedavg_math.client_drift(updates, sizes)
  got_drift = float(result.metrics["aggregator"]["client_drift"])
  assert want_drift > 0 and got_drift == pytest.approx(want_drift, rel=1e-3)


def test_server_state_checkpoint_round_trips(tmp_path):
  import tensorflow_federated as tff  # noqa: F401  (state structures)
  state = {"a": np.arange(3.0), "b": [np.ones((2, 2)), np.int64(7)]}
  path = str(tmp_path / "s.npz")
  federated.save_state(path, state, round_num=4)
  restored, round_num = federated.load_state(path, state)
  assert round_num == 4
  np.testing.assert_array_equal(restored["b"][0], np.ones((2, 2)))
  assert not list(tmp_path.glob("*.tmp*"))


def test_fedavg_run_reports_rounds_through_the_shared_progress(tmp_path):
  from cluster.tf_config import SINGLE_PROCESS  # pylint: disable=g-import-not-at-top
  from trainers.common.config import TrainConfig  # pylint: disable=g-import-not-at-top
  cfg = TrainConfig(approach="fedavg", dataset="synthetic", synthetic_examples=300,
                    model="fedavg_2nn", run_dir=str(tmp_path))
  config = federated.FedAvgConfig(cfg, num_clients=6, clients_per_round=2, rounds=3,
                                  local_batch_size=10, eval_every=2)
  summary = federated.run(config, SINGLE_PROCESS, flag_values={"rounds": 3})
  assert summary["label"] == "fedavg" and summary["num_workers"] == 0
  assert summary["rounds_run"] == 3 and summary["examples_processed"] == 3 * 2 * 50
  assert summary["bytes_uploaded_per_client"] == 3 * 2 * (4 * 199_210 + 4) / 6
  # In-process: one (private) executor service trains every client.
  assert summary["bytes_analytic_per_worker"] == 3 * 2 * 4 * 199_210
  assert summary["bytes_sent_per_worker"] is None  # no launcher, no shim: not measured
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  rounds = [r for r in records if r["kind"] == "round"]
  assert [r["round"] for r in rounds] == [1, 2, 3]
  assert [r["examples_seen"] for r in rounds] == [100, 200, 300]
  # The cadence: every --eval_every rounds and after the last.
  assert ["test_accuracy" in r for r in rounds] == [False, True, True]
  assert [r["step"] for r in records if r["kind"] == "first_step"] == [1]
  assert summary["test_accuracy"] == rounds[-1]["test_accuracy"]
  assert "reached_target" not in summary  # no --target_accuracy


def test_fedavg_stops_at_the_round_that_reaches_the_target(tmp_path):
  from cluster.tf_config import SINGLE_PROCESS  # pylint: disable=g-import-not-at-top
  from trainers.common.config import TrainConfig  # pylint: disable=g-import-not-at-top
  cfg = TrainConfig(approach="fedavg", dataset="synthetic", synthetic_examples=300,
                    model="fedavg_2nn", run_dir=str(tmp_path), target_accuracy=0.3,
                    stop_at_target=True)
  config = federated.FedAvgConfig(cfg, num_clients=6, clients_per_round=2, rounds=20,
                                  local_batch_size=10, eval_every=5)
  summary = federated.run(config, SINGLE_PROCESS)
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  rounds = [r for r in records if r["kind"] == "round"]
  # With a target every round is evaluated (not every 5th), and the first to reach
  # it is the last.
  assert all("test_accuracy" in r for r in rounds)
  assert [r["test_accuracy"] >= 0.3 for r in rounds] == [False] * (len(rounds) - 1) + [True]
  assert summary["reached_target"] and summary["rounds_run"] == len(rounds) < 20
  assert summary["rounds_to_target"] == summary["steps_to_target"] == len(rounds)
  assert summary["examples_to_target"] == rounds[-1]["examples_seen"]
  assert summary["time_to_target_from"] == "process"  # no launcher start to count from
  target = [r for r in records if r["kind"] == "target"]
  assert len(target) == 1 and target[0]["step"] == len(rounds)


@pytest.mark.parametrize("extra,checks", [
    (dict(algorithm="fedprox", proximal_strength=0.1, server_optimizer="momentum",
          client_dropout=0.4), {"client_drift": True, "dropout": True}),
    (dict(algorithm="fedsgd", server_optimizer="adam", aggregator="compression"),
     {"client_drift": True, "compression": True}),
    (dict(dp_noise_multiplier=0.3, server_optimizer="yogi"), {"dp": True}),
    (dict(dp_noise_multiplier=0.5, dp_clip=1.0, algorithm="fedprox", proximal_strength=0.01,
          server_optimizer="adagrad"), {"dp": True}),
])
def test_each_federated_recipe_trains_and_reports_what_it_measures(tmp_path, extra, checks):
  """A short in-process run of each algorithm, server optimizer and aggregator on
  synthetic data: the loss goes down, and each recipe reports its own measures."""
  from cluster.tf_config import SINGLE_PROCESS  # pylint: disable=g-import-not-at-top
  from trainers.common.config import TrainConfig  # pylint: disable=g-import-not-at-top
  cfg = TrainConfig(approach="fedavg", dataset="synthetic", synthetic_examples=400,
                    model="fedavg_2nn", run_dir=str(tmp_path))
  config = federated.FedAvgConfig(cfg, num_clients=8, clients_per_round=4, rounds=3,
                                  local_batch_size=10, **extra)
  summary = federated.run(config, SINGLE_PROCESS)
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  rounds = [r for r in records if r["kind"] == "round"]
  assert summary["algorithm"] == config.algorithm and rounds
  assert np.isfinite([r["loss"] for r in rounds]).all()
  if checks.get("client_drift"):
    assert all(r["client_drift"] > 0 for r in rounds) and summary["client_drift"] > 0
  if checks.get("dropout"):
    # Seeded: exactly the sampled clients that survive the draw report; a round whose
    # every client dropped out is skipped (and recorded).
    want = {k: len(fedavg_math.surviving_clients(fedavg_math.sample_clients(8, 4, k, 42),
                                                 0.4, k, 42)) for k in (1, 2, 3)}
    assert {r["round"]: r["reporting_clients"] for r in rounds} == {
        k: n for k, n in want.items() if n}
    assert min(want.values()) < 4  # the draw really dropped someone
    assert len([r for r in records if r["kind"] == "round_skipped"]) == list(
        want.values()).count(0)
  if checks.get("compression"):
    assert summary["bytes_uploaded_compressed_per_round"] * 4 == \
        summary["bytes_uploaded_uncompressed_per_round"]
  if checks.get("dp"):
    eps = [r["dp_epsilon"] for r in rounds]
    assert eps == sorted(eps) and eps[0] > 0 and summary["dp_epsilon"] == eps[-1]
    assert "client_drift" not in rounds[0]  # DP: client updates are not inspected
