"""How the client updates are combined: the plain weighted mean, TFF's uniform-
quantization compression, or TFF's Gaussian DP aggregator with fixed or adaptive
clipping (`model_aggregator`).

Every weighted aggregator is wrapped in `DriftMeasuringFactory`, which also reports
each round's client drift: sqrt(E_w||u_i||^2 - ||E_w u_i||^2), the weighted RMS
distance of the client updates from their average (fedmath.client_drift, from two
federated means). Under DP the updates are not inspected (that would leak what the
noise protects), so no drift is reported there. `sq_norm` and `drift` are the same
measure in TF for SCAFFOLD's own round (scaffold.py); fedmath.drift_from_moments is
their numpy twin.
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff

from trainers.federated.config import Config


def sq_norm(value) -> tf.Tensor:
  """||value||^2 over every tensor of a structure (a model update), in float32."""
  return tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float32)))
                   for t in tf.nest.flatten(value)])


def drift(mean_sq_norm, sq_norm_of_mean) -> tf.Tensor:
  """sqrt(E||u||^2 - ||E u||^2) = the RMS distance of the updates from their mean
  (clamped at 0 against rounding)."""
  return tf.sqrt(tf.maximum(mean_sq_norm - sq_norm_of_mean, 0.0))


def model_aggregator(config: Config):
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


class DriftMeasuringFactory(tff.aggregators.WeightedAggregationFactory):
  """`inner`'s weighted aggregation, plus the measurement `client_drift`."""

  def __init__(self, inner: tff.aggregators.WeightedAggregationFactory):
    self._inner = inner

  def create(self, value_type, weight_type):
    inner = self._inner.create(value_type, weight_type)
    weight_spec = weight_type

    @tff.tensorflow.computation(value_type)
    def sq_norm_of(value):
      return sq_norm(value)

    @tff.tensorflow.computation(value_type, weight_spec)
    def weighted_sq_norm(value, weight):
      return sq_norm(value) * tf.cast(weight, tf.float32)

    @tff.tensorflow.computation(tf.float32, tf.float32, tf.float32)
    def drift_of(sum_weighted_sq, sum_weight, sq_of_mean):
      return drift(sum_weighted_sq / tf.maximum(sum_weight, 1e-12), sq_of_mean)

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
      drift_value = tff.federated_map(drift_of, (total_sq, total_w,
                                                 tff.federated_map(sq_norm_of, out.result)))
      measurements = tff.federated_zip(collections.OrderedDict(
          inner=out.measurements, client_drift=drift_value))
      return tff.templates.MeasuredProcessOutput(state=out.state, result=out.result,
                                                 measurements=measurements)

    return tff.templates.AggregationProcess(inner.initialize, next_fn)
