"""FedAvg through TFF on tiny clients: one round equals the hand-computed weighted average,
and the trainer's real run() on a private executor service."""

import json

import numpy as np
import pytest
import tensorflow as tf

from models import build_model
from trainers.federated import checkpoint, executors, fedmath
from trainers.federated import clients as clients_lib
from trainers.federated import trainer as federated
from trainers.common import data
from trainers.common.config import TrainConfig


def _local_sgd(weights, arrays, lr, batch, mu=0.0, correction=None):
  """What one client should do: SGD on the batch-mean loss, in order, one epoch. mu:
  FedProx's proximal term mu/2 ||w - w0||^2, whose gradient mu (w - w0) joins each
  step; correction: SCAFFOLD's (c_i, c), each step's gradient g becoming g - c_i + c."""
  model = build_model("fedavg_2nn")
  model.set_weights(weights)
  xent = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  for x, y in clients_lib.client_dataset(arrays, batch, 1, seed=None):
    with tf.GradientTape() as tape:
      loss = xent(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    for i, (v, g) in enumerate(zip(model.trainable_variables, grads)):
      g = fedmath.proximal_gradient(g, v, weights[i], mu)
      if correction is not None:
        g = g - correction[0][i] + correction[1][i]
      v.assign_sub(lr * g)
  return [v.numpy() for v in model.trainable_variables]


def _tiny_federation():
  full = data.synthetic_split("train", 60)
  clients = [full.take(np.arange(0, 30)), full.take(np.arange(30, 40)),
             full.take(np.arange(40, 60))]
  return clients, clients_lib.client_dataset(clients[0], 10, 1, None).element_spec


def _process(spec, **kwargs):
  return federated.build_process(lambda: build_model("fedavg_2nn"), spec,
                                 federated.FedAvgConfig(TrainConfig(
                                     approach="fedavg", dataset="synthetic",
                                     run_dir="/tmp/unused"), client_learning_rate=0.1,
                                     **kwargs))


@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_one_round_is_the_example_weighted_average_of_client_models(mu):
  """FedAvg, and FedProx (mu > 0) whose every local step adds mu (w - w_server)."""
  clients, spec = _tiny_federation()
  with executors.private_executor_service() as address:
    executors.install_context([address])
    process = _process(spec, **(dict(algorithm="fedprox", proximal_strength=mu) if mu else {}))
    state = process.initialize()
    start = [np.asarray(w) for w in process.get_model_weights(state).trainable]
    result = process.next(state, [clients_lib.client_dataset(c, 10, 1, None) for c in clients],
                          [0, 1, 2])
    new = [np.asarray(w) for w in process.get_model_weights(result.state).trainable]
  assert int(result.metrics["client_work"]["train"]["num_examples"]) == 60

  local = [_local_sgd(start, c, lr=0.1, batch=10, mu=mu) for c in clients]
  sizes = np.array([30.0, 10.0, 20.0])
  expected = [sum(n * w[i] for n, w in zip(sizes, local)) / sizes.sum()
              for i in range(len(start))]
  for got, want, before in zip(new, expected, start):
    assert not np.allclose(want, before)  # the round really moved the model
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
  # The client drift TFF measured is the weighted RMS distance of the client updates
  # (start - local: TFF's update sign; the distance does not care) from their mean.
  updates = [np.concatenate([(a - b).ravel() for a, b in zip(start, w)]) for w in local]
  want_drift = fedmath.client_drift(updates, sizes)
  got_drift = float(result.metrics["aggregator"]["client_drift"])
  assert want_drift > 0 and got_drift == pytest.approx(want_drift, rel=1e-3)


def test_two_scaffold_rounds_match_the_corrected_steps_by_hand(tmp_path):
  """Round 1 starts from zero variates (plain SGD); round 2's steps are corrected by
  the variates round 1 left (option II), on the server (c) and on each client (c_i)."""
  clients, spec = _tiny_federation()
  ids, num_clients, lr = np.array([0, 1, 2]), 6, 0.1
  with executors.private_executor_service() as address:
    executors.install_context([address])
    process = _process(spec, algorithm="scaffold", num_clients=num_clients, clients_per_round=3)
    state = process.initialize()
    x = [np.asarray(w) for w in process.get_model_weights(state).trainable]
    got = []
    for round_num in (1, 2):
      result = process.next(state, [clients_lib.client_dataset(c, 10, 1, None) for c in clients],
                            ids)
      state = result.state
      got.append(([np.asarray(w) for w in state["model"].trainable],
                  [np.asarray(w) for w in state["control"]],
                  {k: [a.copy() for a in v] for k, v in process.controls.items()}))
      checkpoint.save(process, str(tmp_path / "server_state.npz"), state, round_num)

  c = [np.zeros_like(w) for w in x]
  c_i = {k: [np.zeros_like(w) for w in x] for k in ids}
  steps = [3, 1, 2]  # batches of 10 in clients of 30, 10, 20
  for round_num in (0, 1):
    ys = [_local_sgd(x, clients[k], lr, 10, correction=(c_i[k], c)) for k in ids]
    new_c = {k: [fedmath.scaffold_client_control(a, b, xa, ya, steps[k], lr)
                 for a, b, xa, ya in zip(c_i[k], c, x, ys[k])] for k in ids}
    mean_dy = [np.mean([y[j] - x[j] for y in ys], axis=0) for j in range(len(x))]
    mean_dc = [np.mean([new_c[k][j] - c_i[k][j] for k in ids], axis=0) for j in range(len(x))]
    x, c = map(list, zip(*[fedmath.scaffold_server(x[j], c[j], mean_dy[j], mean_dc[j],
                                                       1.0, len(ids) / num_clients)
                           for j in range(len(x))]))
    c_i = new_c
    got_x, got_c, got_ci = got[round_num]
    for a, b in zip(got_x + got_c, x + c):
      np.testing.assert_allclose(a, b, rtol=0, atol=5e-5)
    for k in ids:
      for a, b in zip(got_ci[k], c_i[k]):
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-4)
  assert any(np.abs(w).max() > 1e-3 for w in c)  # the variates really moved

  # The checkpoint: each client's newest variates, no older copy, nothing half-written.
  files = sorted(p.name for p in (tmp_path / "client_state").iterdir())
  assert files == ["client_0.r2.npz", "client_1.r2.npz", "client_2.r2.npz"]
  resumed = _process(spec, algorithm="scaffold", num_clients=num_clients, clients_per_round=3)
  resumed.load_clients(str(tmp_path / "client_state"), 2)
  for k in ids:
    for a, b in zip(resumed.controls[k], got[1][2][k]):
      np.testing.assert_array_equal(a, b)
  # A round-1 server state (a crash between round 2's two writes) takes no variate
  # of round 2: round 1's copies are gone, so every client starts from zero.
  at_round_1 = _process(spec, algorithm="scaffold", num_clients=num_clients,
                        clients_per_round=3)
  at_round_1.load_clients(str(tmp_path / "client_state"), 1)
  assert at_round_1.controls == {}


def test_server_state_checkpoint_round_trips(tmp_path):
  import tensorflow_federated as tff  # noqa: F401  (state structures)
  state = {"a": np.arange(3.0), "b": [np.ones((2, 2)), np.int64(7)]}
  path = str(tmp_path / "s.npz")
  checkpoint.save_state(path, state, round_num=4)
  restored, round_num = checkpoint.load_state(path, state)
  assert round_num == 4
  np.testing.assert_array_equal(restored["b"][0], np.ones((2, 2)))
  assert not list(tmp_path.glob("*.tmp*"))


def test_fedavg_run_reports_rounds_through_the_shared_progress(tmp_path):
  from cluster.tf_config import SINGLE_PROCESS  # pylint: disable=g-import-not-at-top
  from trainers.common.config import TrainConfig  # pylint: disable=g-import-not-at-top
  cfg = TrainConfig(approach="fedavg", dataset="synthetic", synthetic_examples=300,
                    model="fedavg_2nn", run_dir=str(tmp_path))
  config = federated.FedAvgConfig(cfg, num_clients=6, clients_per_round=2, rounds=3,
                                  local_batch_size=10, eval_every=2, client_scores=True)
  summary = federated.run(config, SINGLE_PROCESS, flag_values={"rounds": 3})
  assert summary["label"] == "fedavg" and summary["num_workers"] == 0
  assert summary["rounds_run"] == 3 and summary["examples_processed"] == 3 * 2 * 50
  assert summary["bytes_uploaded_per_client"] == 3 * 2 * (4 * 199_210 + 4) / 6
  # In-process: one (private) executor service trains every client; it takes the model
  # and returns one aggregate a round.
  assert summary["bytes_analytic_per_worker"] == 3 * 4 * 199_210

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
  # The clients' files, written by their host (here the chief: no services), and each
  # round's per-client scores, made where the clients are.
  assert len(list((tmp_path / "federation" / "service_0").glob("client_*.bin"))) == 6
  assert [len(r["clients"]) for r in rounds] == [2, 2, 2]
  assert sum(c["examples"] for c in rounds[0]["clients"]) == 2 * 50


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


def test_every_server_optimizer_is_a_tff_optimizer_at_its_learning_rate():
  """The server optimizers not trained below are the same one-line TFF builders."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from trainers.federated import config, process  # pylint: disable=g-import-not-at-top
  for name in config.SERVER_OPTIMIZERS:
    opt = process.server_optimizer(name, 0.25)
    assert isinstance(opt, tff.learning.optimizers.Optimizer)
    state = opt.initialize(tf.TensorSpec([2], tf.float32))
    assert float(opt.get_hparams(state)["learning_rate"]) == 0.25, name


@pytest.mark.parametrize("extra,checks", [
    (dict(algorithm="scaffold", client_dropout=0.4), {"client_drift": True, "dropout": True,
                                                      "client_state": True}),
    (dict(algorithm="fedsgd", server_optimizer="adam", server_learning_rate=1e-3,
          aggregator="compression"),
     {"client_drift": True, "compression": True}),
    # Noise small enough to learn from 4 clients a round (the accounting is the same).
    (dict(dp_noise_multiplier=0.01, server_optimizer="yogi"), {"dp": True}),
    (dict(dp_noise_multiplier=0.01, dp_clip=1.0, algorithm="fedprox", proximal_strength=0.01,
          server_optimizer="momentum"), {"dp": True}),
])
def test_each_federated_recipe_trains_and_reports_what_it_measures(tmp_path, extra, checks):
  """A short in-process run of each algorithm, server optimizer and aggregator on
  synthetic data: the loss goes down, and each recipe reports its own measures."""
  from cluster.tf_config import SINGLE_PROCESS  # pylint: disable=g-import-not-at-top
  from trainers.common.config import TrainConfig  # pylint: disable=g-import-not-at-top
  cfg = TrainConfig(approach="fedavg", dataset="synthetic", synthetic_examples=400,
                    model="fedavg_2nn", run_dir=str(tmp_path))
  # (The suite's client lr of 0.1 diverges on the synthetic set's unnormalised pixels.)
  config = federated.FedAvgConfig(cfg, num_clients=8, clients_per_round=4, rounds=3,
                                  local_batch_size=10, client_learning_rate=0.02,
                                  client_scores=True, **extra)
  summary = federated.run(config, SINGLE_PROCESS)
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  rounds = [r for r in records if r["kind"] == "round"]
  assert summary["algorithm"] == config.algorithm and rounds
  # The loss goes down: the last round's clients end below where round 1's began
  # (the broadcast model scored on each client's data before it trained).
  first = np.mean([c["loss"] for c in rounds[0]["clients"]])
  assert np.isfinite([r["loss"] for r in rounds]).all() and rounds[-1]["loss"] < first
  if checks.get("client_drift"):
    assert all(r["client_drift"] > 0 for r in rounds) and summary["client_drift"] > 0
  if checks.get("dropout"):
    # Seeded: exactly the sampled clients that survive the draw report; a round whose
    # every client dropped out is skipped (and recorded).
    want = {k: len(fedmath.surviving_clients(fedmath.sample_clients(8, 4, k, 42),
                                                 0.4, k, 42)) for k in (1, 2, 3)}
    assert {r["round"]: r["reporting_clients"] for r in rounds} == {
        k: n for k, n in want.items() if n}
    assert min(want.values()) < 4  # the draw really dropped someone
    assert len([r for r in records if r["kind"] == "round_skipped"]) == list(
        want.values()).count(0)
  if checks.get("client_state"):  # SCAFFOLD: two model-sized messages each way
    assert summary["bytes_broadcast_per_round"] == 4 * 2 * 4 * 199_210
    assert {p.name.split(".")[0] for p in (tmp_path / "client_state").iterdir()} == {
        f"client_{k}" for r in (1, 2, 3) for k in fedmath.surviving_clients(
            fedmath.sample_clients(8, 4, r, 42), 0.4, r, 42)}
  if checks.get("compression"):
    assert summary["bytes_uploaded_compressed_per_round"] * 4 == \
        summary["bytes_uploaded_uncompressed_per_round"]
  if checks.get("dp"):
    eps = [r["dp_epsilon"] for r in rounds]
    assert eps == sorted(eps) and eps[0] > 0 and summary["dp_epsilon"] == eps[-1]
    assert "client_drift" not in rounds[0]  # DP: client updates are not inspected


def test_service_pool_sends_each_service_its_own_clients_and_merges_on_the_chief(tmp_path):
  """Three worker_binary processes, each in a directory whose `whoami` file names it
  (services 10 and 100, the chief's own 1000). Each client reports the name of the
  service that ran it; the server adds the name of the one that ran after_merge. With
  groups [1, 2] the clients' sum is 1*10 + 2*100 (TFF's own split of three clients
  would be [2, 1]: 120), and the merge is the chief's: + 1000."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from trainers.federated import executors  # pylint: disable=g-import-not-at-top

  def whoami():
    return tf.strings.to_number(tf.io.read_file("whoami"), tf.int32)

  @tff.tensorflow.computation(np.int32)
  def at_client(x):
    return x * 0 + whoami()

  @tff.tensorflow.computation(np.int32)
  def at_server(total):
    return total + whoami()

  @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
  def round_(values):
    return tff.federated_map(at_server, tff.federated_sum(tff.federated_map(at_client, values)))

  dirs = []
  for name in ("10", "100", "1000"):
    d = tmp_path / name
    d.mkdir()
    (d / "whoami").write_text(name)
    dirs.append(str(d))
  with contextlib.ExitStack() as stack:
    addresses = [stack.enter_context(executors.private_executor_service(cwd=d)) for d in dirs]
    pool = executors.install_context(addresses[:2], merge_address=addresses[2])
    with pool.groups([1, 2]):
      assert round_([7, 8, 9]) == 1 * 10 + 2 * 100 + 1000
    with pool.groups([0, 3]):  # a service without clients is not called
      assert round_([7, 8, 9]) == 3 * 100 + 1000
