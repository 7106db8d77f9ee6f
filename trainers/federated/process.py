"""The federated learning process, built from TFF's own pieces by flag: the algorithm
(FedAvg, FedProx, FedSGD; SCAFFOLD is a process of ours, scaffold.py), the server
optimizer (FedAvgM, FedAdam, FedYogi, FedAdagrad) and the model-update aggregator
(aggregators.py).

Every process is returned behind one interface, `FederatedProcess`: initialize,
get_model_weights, next(state, datasets, client_ids), the model-sized messages each
client gets and sends per round, and the clients' state to checkpoint (none for
TFF's own processes, whose clients are stateless; SCAFFOLD's control variates).
`read_clients(wrap, scored)` swaps the round for `wrap(round, weights)` (federation.
reading_clients): from then on `datasets` are the clients' file names, read where
the clients are, and (scored) the round's metrics carry the per-client score table.

FedProx is TFF's FedAvg with a client optimizer of ours, `ProximalSGD`: TFF 0.87's
build_weighted_fed_prox adds mu (w_server - w) to each gradient, the proximal
term's gradient with its sign flipped (it pushes clients away from the server's
model; the exact test in test_fedavg_inprocess.py matched TFF's round to 2e-5 only
with the flipped sign).
"""

import collections
from typing import Protocol, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from trainers.common import model
from trainers.federated import aggregators, fedmath, scaffold
from trainers.federated.config import Config


class FederatedProcess(Protocol):
  """What the rounds (rounds.py) and the checkpoint (checkpoint.py) ask of a process."""
  messages_per_direction: int  # model-sized messages each sampled client gets and sends
  client_state_messages: int   # model-sized client state the server keeps, each way

  def initialize(self): ...
  def get_model_weights(self, state): ...
  def next(self, state, datasets: Sequence, client_ids: Sequence[int]): ...
  def read_clients(self, wrap, scored: bool = True) -> None: ...
  def save_clients(self, directory: str, round_num: int) -> None: ...
  def prune_clients(self, directory: str, round_num: int) -> None: ...
  def load_clients(self, directory: str, round_num: int) -> None: ...


class StatelessClients:
  """A TFF learning process as a FederatedProcess: its clients keep nothing between
  rounds, so there is no client state to save or load."""
  messages_per_direction = 1
  client_state_messages = 0

  def __init__(self, process: tff.learning.templates.LearningProcess):
    self._process = process
    self._next, self._scored = process.next, False

  def initialize(self):
    return self._process.initialize()

  def get_model_weights(self, state):
    # The state is back on the chief as Python values: no TFF call (which would ship
    # the state to an executor and back) is needed to read its model.
    weights = getattr(state, "global_model_weights", None)
    return self._process.get_model_weights(state) if weights is None else weights

  def read_clients(self, wrap, scored: bool = True) -> None:
    self._next = wrap(self._process.next, self._process.get_model_weights)
    self._scored = scored

  def next(self, state, datasets, client_ids):
    del client_ids  # TFF's clients are anonymous: only their data matters
    if not self._scored:
      return self._next(state, datasets)
    result, scores = self._next(state, datasets)
    result.metrics["client_scores"] = np.asarray(scores)
    return result

  def save_clients(self, directory: str, round_num: int) -> None:
    del directory, round_num

  prune_clients = load_clients = save_clients


# A client's local steps as a loop over the dataset's iterator, not TFF's default
# `dataset.reduce`: the step then runs in the graph's own while loop, where the runtime
# schedules its ops like any other (inside ReduceDataset it is a tf.data function call
# per batch). Measured side by side (experiments.bench, BENCHMARKS.md "FedAvg on TF's
# own runtime"), both backends' rounds got faster. SCAFFOLD's own client loop
# (scaffold.py) iterates the same way.
LOOP = tff.learning.LoopImplementation.DATASET_ITERATOR


def server_optimizer(name: str, learning_rate: float) -> tff.learning.optimizers.Optimizer:
  """The TFF optimizer of --server_optimizer (the names mean what model.OPTIMIZER_SPECS says)."""
  family, kwargs = model.optimizer_spec(name, "server_optimizer")
  builders = {"sgd": tff.learning.optimizers.build_sgdm,
              "adam": tff.learning.optimizers.build_adam,
              "yogi": tff.learning.optimizers.build_yogi,
              "adagrad": tff.learning.optimizers.build_adagrad}
  return builders[family](learning_rate, **kwargs)


def build(config: Config, tff_model_fn) -> FederatedProcess:
  """The learning process `config` asks for."""
  if config.algorithm == "scaffold":
    return scaffold.ScaffoldProcess(tff_model_fn, config.client_learning_rate,
                                    config.server_learning_rate, config.num_clients)
  server = server_optimizer(config.server_optimizer, config.server_learning_rate)
  agg = aggregators.model_aggregator(config)
  if config.algorithm == "fedsgd":
    return StatelessClients(tff.learning.algorithms.build_fed_sgd(
        tff_model_fn, server_optimizer_fn=server, model_aggregator=agg, loop_implementation=LOOP))
  client = (ProximalSGD(config.client_learning_rate, config.proximal_strength)
            if config.algorithm == "fedprox" else
            tff.learning.optimizers.build_sgdm(config.client_learning_rate))
  builder = (tff.learning.algorithms.build_unweighted_fed_avg if config.private else
             tff.learning.algorithms.build_weighted_fed_avg)
  return StatelessClients(builder(tff_model_fn, client_optimizer_fn=client,
                                  server_optimizer_fn=server, model_aggregator=agg,
                                  loop_implementation=LOOP))


class ProximalSGD(tff.learning.optimizers.Optimizer):
  """FedProx's local solver: SGD on loss + mu/2 ||w - w_server||^2. TFF starts a
  client optimizer's state afresh for every client and round, so the weights at the
  first step are the server's model: they become the anchor."""

  def __init__(self, learning_rate: float, mu: float):
    self._lr, self._mu = learning_rate, mu

  def initialize(self, specs):
    return collections.OrderedDict(started=tf.constant(False), anchor=tf.nest.map_structure(
        lambda s: tf.zeros(s.shape, s.dtype), specs))

  def next(self, state, weights, gradients):
    anchor = tf.nest.map_structure(lambda a, w: tf.where(state["started"], a, w),
                                   state["anchor"], weights)
    new = tf.nest.map_structure(
        lambda w, g, a: w - self._lr * fedmath.proximal_gradient(g, w, a, self._mu),
        weights, gradients, anchor)
    return collections.OrderedDict(started=tf.constant(True), anchor=anchor), new
