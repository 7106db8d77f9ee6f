"""The federated learning process, built from TFF's own pieces by flag: the algorithm
(FedAvg, FedProx, FedSGD; SCAFFOLD is a process of ours, scaffold.py), the server optimizer (FedAvgM, FedAdam, FedYogi, FedAdagrad),
and the model-update aggregator (plain weighted mean, TFF's uniform-quantization
compression, or TFF's Gaussian DP aggregator with fixed or adaptive clipping).

Every weighted aggregator is wrapped in `DriftMeasuringFactory`, which also reports
each round's client drift: sqrt(E_w||u_i||^2 - ||E_w u_i||^2), the weighted RMS
distance of the client updates from their average (fedavg_math.client_drift, from
two federated means). Under DP the updates are not inspected (that would leak what
the noise protects), so no drift is reported there.

FedProx is TFF's FedAvg with a client optimizer of ours, `ProximalSGD`: TFF 0.87's
build_weighted_fed_prox adds mu (w_server - w) to each gradient, the proximal
term's gradient with its sign flipped (it pushes clients away from the server's
model; the exact test in test_fedavg_inprocess.py matched TFF's round to 2e-5 only
with the flipped sign).

SCAFFOLD needs a control variate per client that persists across rounds, which
TFF's learning processes (their ClientWorkProcess is stateless) cannot hold; it is
a learning process of our own, with the variates held by the chief (scaffold.py).
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff

from trainers import fed_measures, fedavg_math, scaffold
from trainers.fed_config import FedAvgConfig


def server_optimizer(name: str, learning_rate: float):
  return {"sgd": lambda: tff.learning.optimizers.build_sgdm(learning_rate),
          "momentum": lambda: tff.learning.optimizers.build_sgdm(learning_rate, momentum=0.9),
          "adam": lambda: tff.learning.optimizers.build_adam(learning_rate),
          "yogi": lambda: tff.learning.optimizers.build_yogi(learning_rate),
          "adagrad": lambda: tff.learning.optimizers.build_adagrad(learning_rate)}[name]()


def model_aggregator(config: FedAvgConfig):
  """The update aggregator: DP (unweighted), compression or the weighted mean, the
  weighted ones measuring the client drift."""
  if config.private:
    if config.dp_clip is None:  # adaptive clipping (and zeroing of outliers)
      return tff.learning.dp_aggregator(config.dp_noise_multiplier, config.clients_per_round)
    return tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
        config.dp_noise_multiplier, config.clients_per_round, config.dp_clip)
  inner = (tff.learning.compression_aggregator() if config.aggregator == "compression"
           else tff.aggregators.MeanFactory())
  return DriftMeasuringFactory(inner)


def build(config: FedAvgConfig, tff_model_fn):
  """The learning process `config` asks for."""
  if config.algorithm == "scaffold":
    return scaffold.ScaffoldProcess(tff_model_fn, config.client_learning_rate,
                                    config.server_learning_rate, config.num_clients)
  server = server_optimizer(config.server_optimizer, config.server_learning_rate)
  agg = model_aggregator(config)
  if config.algorithm == "fedsgd":
    return tff.learning.algorithms.build_fed_sgd(tff_model_fn, server_optimizer_fn=server,
                                                 model_aggregator=agg)
  client = (ProximalSGD(config.client_learning_rate, config.proximal_strength)
            if config.algorithm == "fedprox" else
            tff.learning.optimizers.build_sgdm(config.client_learning_rate))
  builder = (tff.learning.algorithms.build_unweighted_fed_avg if config.private else
             tff.learning.algorithms.build_weighted_fed_avg)
  return builder(tff_model_fn, client_optimizer_fn=client, server_optimizer_fn=server,
                 model_aggregator=agg)


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
        lambda w, g, a: w - self._lr * fedavg_math.proximal_gradient(g, w, a, self._mu),
        weights, gradients, anchor)
    return collections.OrderedDict(started=tf.constant(True), anchor=anchor), new


def messages_per_direction(config: FedAvgConfig) -> int:
  """Model-sized messages each sampled client gets and sends per round."""
  return scaffold.MESSAGES_PER_DIRECTION if config.algorithm == "scaffold" else 1


def run_round(process, state, datasets, client_ids):
  """One round of any of them: SCAFFOLD also needs to know whose data is whose."""
  if getattr(process, "stateful_clients", False):
    return process.next(state, datasets, client_ids)
  return process.next(state, datasets)


class DriftMeasuringFactory(tff.aggregators.WeightedAggregationFactory):
  """`inner`'s weighted aggregation, plus the measurement `client_drift`."""

  def __init__(self, inner: tff.aggregators.WeightedAggregationFactory):
    self._inner = inner

  def create(self, value_type, weight_type):
    inner = self._inner.create(value_type, weight_type)
    weight_spec = weight_type

    @tff.tensorflow.computation(value_type)
    def sq_norm(value):
      return fed_measures.sq_norm(value)

    @tff.tensorflow.computation(value_type, weight_spec)
    def weighted_sq_norm(value, weight):
      return fed_measures.sq_norm(value) * tf.cast(weight, tf.float32)

    @tff.tensorflow.computation(tf.float32, tf.float32, tf.float32)
    def drift(sum_weighted_sq, sum_weight, sq_of_mean):
      return fed_measures.drift(sum_weighted_sq / tf.maximum(sum_weight, 1e-12), sq_of_mean)

    @tff.tensorflow.computation(weight_spec)
    def as_float(weight):
      return tf.cast(weight, tf.float32)

    @tff.federated_computation(inner.next.type_signature.parameter[0],
                               tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      out = inner.next(state, value, weight)
      total_sq = tff.federated_sum(tff.federated_map(weighted_sq_norm, (value, weight)))
      total_w = tff.federated_sum(tff.federated_map(as_float, weight))
      drift_value = tff.federated_map(drift, (total_sq, total_w,
                                              tff.federated_map(sq_norm, out.result)))
      measurements = tff.federated_zip(collections.OrderedDict(
          inner=out.measurements, client_drift=drift_value))
      return tff.templates.MeasuredProcessOutput(state=out.state, result=out.result,
                                                 measurements=measurements)

    return tff.templates.AggregationProcess(inner.initialize, next_fn)
