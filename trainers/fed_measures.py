"""Client drift in TF, for the two places that measure it inside a TFF round: the
aggregator wrapped around TFF's processes (fed_algorithms.DriftMeasuringFactory) and
SCAFFOLD's own round (scaffold.py). fedavg_math.drift_from_moments is the numpy twin."""

import tensorflow as tf


def sq_norm(value) -> tf.Tensor:
  """||value||^2 over every tensor of a structure (a model update), in float32."""
  return tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float32)))
                   for t in tf.nest.flatten(value)])


def drift(mean_sq_norm, sq_norm_of_mean) -> tf.Tensor:
  """sqrt(E||u||^2 - ||E u||^2) = the RMS distance of the updates from their mean
  (clamped at 0 against rounding)."""
  return tf.sqrt(tf.maximum(mean_sq_norm - sq_norm_of_mean, 0.0))
