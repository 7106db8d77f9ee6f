"""SCAFFOLD (Karimireddy et al. 2020, Algorithm 1 with option II) as a TFF learning
process of our own.

TFF's learning processes keep no per-client state, and SCAFFOLD needs a control
variate per client that lives across rounds. Here the chief holds the N variates
(TFF's stateful-clients pattern) and hands each sampled client its own as a
CLIENTS-placed input; the round returns the new ones beside the server state:

    server (x, c) --broadcast--> client i: K corrected steps y <- y - lr (g - c_i + c)
                                 c_i+ = c_i - c + (x - y) / (K lr)
    server <-- mean(y_i - x), mean(c_i+ - c_i):  x += lr_g mean dy,  c += |S|/N mean dc

The arithmetic is fedmath.scaffold_*, the same functions the exact tests check.
The round's mean is unweighted over the clients that reported, as in the paper (with
the paper's equal-size shards it equals FedAvg's example-weighted one). On the wire
SCAFFOLD moves two model-sized messages each way per client (x and c down, dy and dc
up); that the chief also ships c_i down and back is an artefact of TFF clients being
stateless, and is not counted. Measured on the paper's shards (E=1, 10 of 100 clients a round, BENCHMARKS.md): at client lr
0.05 it diverged in round 15, a client's variate being about 10 rounds stale and applied
at each of its 60 local steps; at 0.025 it reached 99 % in 154 rounds.
`ScaffoldProcess` is a process.FederatedProcess: the calls the rounds make of
every process, with the variates as its clients' state.
"""

import collections
import glob
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from cluster import posix
from trainers.common import model as model_lib
from trainers.federated import aggregators, fedmath

MESSAGES_PER_DIRECTION = 2  # (x, c) down, (dy, dc) up
_CONTROL_FILE = re.compile(r"client_(\d+)\.r(\d+)\.npz$")

Output = collections.namedtuple("Output", "state metrics")


def _assign(variables, values):
  tf.nest.map_structure(lambda v, t: v.assign(t), variables, values)


@tf.function
def local_training(model, dataset, server_weights, server_control, client_control, lr):
  """The client: K corrected SGD steps from the server's x, its new variate, and the
  sums the round's metrics are made of."""
  weights = tff.learning.models.ModelWeights.from_model(model)
  _assign(weights, server_weights)
  steps, examples = tf.constant(0), tf.constant(0)
  loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
  for batch in dataset:
    with tf.GradientTape() as tape:
      out = model.forward_pass(batch, training=True)
    grads = tape.gradient(out.loss, weights.trainable)
    for v, g, c_i, c in zip(weights.trainable, grads, client_control, server_control):
      v.assign(fedmath.scaffold_step(v, g, c_i, c, lr))
    n = tf.cast(out.num_examples, tf.float32)
    steps, examples = steps + 1, examples + out.num_examples
    loss_sum += out.loss * n
    correct += model_lib.correct(batch[1], out.predictions)
  k = tf.cast(tf.maximum(steps, 1), tf.float32)
  x, y = server_weights.trainable, weights.trainable
  new_control = [fedmath.scaffold_client_control(c_i, c, xa, ya, k, lr)
                 for c_i, c, xa, ya in zip(client_control, server_control, x, y)]
  delta_y = [ya - xa for xa, ya in zip(x, y)]
  return collections.OrderedDict(
      delta_y=delta_y, delta_c=[a - b for a, b in zip(new_control, client_control)],
      control=new_control, sums=collections.OrderedDict(
          loss=loss_sum, correct=correct, examples=tf.cast(examples, tf.float32),
          sq_norm=aggregators.sq_norm(delta_y), clients=1.0))


def build_computations(tff_model_fn, client_lr: float, server_lr: float, num_clients: int):
  """(initialize, next): TFF computations; next(state@SERVER, datasets@CLIENTS,
  controls@CLIENTS) -> (state, new controls@CLIENTS, metrics@SERVER)."""

  @tff.tensorflow.computation
  def initial_state():
    weights = tff.learning.models.ModelWeights.from_model(tff_model_fn())
    return collections.OrderedDict(model=weights,
                                   control=[tf.zeros_like(v) for v in weights.trainable])

  state_type = initial_state.type_signature.result
  control_type = state_type.control
  dataset_type = tff.SequenceType(tff.types.tensorflow_to_type(tff_model_fn().input_spec))

  @tff.tensorflow.computation(dataset_type, state_type, control_type)
  def client_update(dataset, state, client_control):
    return local_training(tff_model_fn(), dataset, state["model"], state["control"],
                          client_control, tf.constant(client_lr))

  sums_type = client_update.type_signature.result.sums

  @tff.tensorflow.computation(state_type, control_type, control_type, tf.float32)
  def server_update(state, mean_delta_y, mean_delta_c, reporting):
    pairs = [fedmath.scaffold_server(x, c, dy, dc, server_lr, reporting / num_clients)
             for x, c, dy, dc in zip(state["model"].trainable, state["control"],
                                     mean_delta_y, mean_delta_c)]
    return collections.OrderedDict(
        model=tff.learning.models.ModelWeights(trainable=[p[0] for p in pairs],
                                               non_trainable=state["model"].non_trainable),
        control=[p[1] for p in pairs])

  @tff.tensorflow.computation(sums_type, control_type)
  def round_metrics(sums, mean_delta_y):
    return collections.OrderedDict(
        loss=sums["loss"] / sums["examples"], accuracy=sums["correct"] / sums["examples"],
        num_examples=sums["examples"], client_drift=aggregators.drift(
            sums["sq_norm"] / sums["clients"], aggregators.sq_norm(mean_delta_y)))

  @tff.federated_computation(tff.FederatedType(state_type, tff.SERVER),
                             tff.FederatedType(dataset_type, tff.CLIENTS),
                             tff.FederatedType(control_type, tff.CLIENTS))
  def next_fn(state, datasets, controls):
    out = tff.federated_map(client_update, (datasets, tff.federated_broadcast(state),
                                            controls))
    mean_dy = tff.federated_mean(out.delta_y)
    sums = tff.federated_sum(out.sums)
    new_state = tff.federated_map(server_update, (state, mean_dy,
                                                  tff.federated_mean(out.delta_c),
                                                  sums.clients))
    return new_state, out.control, tff.federated_map(round_metrics, (sums, mean_dy))

  @tff.federated_computation
  def initialize():  # placed, like TFF's own processes (a remote context needs that)
    return tff.federated_eval(initial_state, tff.SERVER)

  @tff.tensorflow.computation(state_type)
  def model_weights(state):
    return state["model"]

  return initialize, next_fn, model_weights


class ScaffoldProcess:
  """SCAFFOLD as a process.FederatedProcess, with the clients' variates held here
  (zeros until a client first trains)."""

  messages_per_direction = MESSAGES_PER_DIRECTION
  client_state_messages = 1  # each client's variate, kept here, goes out and back

  def __init__(self, tff_model_fn, client_lr: float, server_lr: float, num_clients: int):
    self._initialize, self._next, self._weights = build_computations(
        tff_model_fn, client_lr, server_lr, num_clients)
    self._scored = False
    self.controls: dict[int, list[np.ndarray]] = {}
    self._updated: list[int] = []

  def initialize(self):
    state = self._initialize()
    self._zeros = [np.zeros_like(c) for c in state["control"]]
    return state

  @staticmethod
  def get_model_weights(state):
    return state["model"]

  def read_clients(self, wrap, scored: bool = True) -> None:
    self._next, self._scored = wrap(self._next, self._weights), scored

  def next(self, state, datasets, client_ids) -> Output:
    controls = [self.controls.get(int(k), self._zeros) for k in client_ids]
    out = self._next(state, datasets, controls)
    (state, new_controls, metrics), scores = out if self._scored else (out, None)
    for k, c in zip(client_ids, new_controls):
      self.controls[int(k)] = [np.asarray(t) for t in c]
    self._updated = [int(k) for k in client_ids]
    train = {k: metrics[k] for k in ("loss", "accuracy", "num_examples")}
    out = {"client_work": {"train": train},
           "aggregator": {"client_drift": metrics["client_drift"]}}
    if scores is not None:
      out["client_scores"] = np.asarray(scores)
    return Output(state, out)

  # Checkpoint: the variates the round changed go to files tagged with the round,
  # written before the server state; older copies go after it. A resume at round R
  # takes each client's newest file at or before R, so a crash in between never pairs
  # a server state with variates from a round it has not seen.
  def save_clients(self, directory: str, round_num: int) -> None:
    os.makedirs(directory, exist_ok=True)
    for k in self._updated:
      path = os.path.join(directory, f"client_{k}.r{round_num}.npz")
      with posix.atomic_path(path, ".npz") as tmp:
        np.savez(tmp, *self.controls[k])

  def prune_clients(self, directory: str, round_num: int) -> None:
    for k, r, path in _control_files(directory):
      if k in self._updated and r < round_num:
        os.remove(path)

  def load_clients(self, directory: str, round_num: int) -> None:
    newest: dict[int, tuple[int, str]] = {}
    for k, r, path in _control_files(directory):
      if r <= round_num and r > newest.get(k, (-1, ""))[0]:
        newest[k] = (r, path)
    for k, (_, path) in newest.items():
      with np.load(path) as f:
        self.controls[k] = [f[f"arr_{i}"] for i in range(len(f.files))]


def _control_files(directory: str):
  for path in glob.glob(os.path.join(directory, "client_*.npz")):
    m = _CONTROL_FILE.search(path)
    if m:
      yield int(m.group(1)), int(m.group(2)), path
