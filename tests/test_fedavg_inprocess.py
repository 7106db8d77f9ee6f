"""FedAvg through TFF on tiny clients: one round equals the hand-computed weighted average."""

import numpy as np
import tensorflow as tf

from models import build_model
from trainers import data, federated, tff_exec


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
                                      client_lr=0.1, server_optimizer="sgd", server_lr=1.0)
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


def test_server_state_checkpoint_round_trips(tmp_path):
  import tensorflow_federated as tff  # noqa: F401  (state structures)
  state = {"a": np.arange(3.0), "b": [np.ones((2, 2)), np.int64(7)]}
  path = str(tmp_path / "s.npz")
  federated.save_state(path, state, round_num=4)
  restored, round_num = federated.load_state(path, state)
  assert round_num == 4
  np.testing.assert_array_equal(restored["b"][0], np.ones((2, 2)))
  assert not list(tmp_path.glob("*.tmp*"))
