"""Model-side pieces every approach shares: the loss, the optimizer, and the scorer
that evaluates any approach's weights the same way."""

from typing import Callable

import numpy as np
import tensorflow as tf

from trainers.common.data import Arrays, eval_dataset


def per_example_loss(labels, logits):
  """The one loss of the suite: cross-entropy of integer labels against logits, per
  example. Hand-written loops take `mean_loss`, the scorer sums it, and Keras and
  TFF get the same function as a Loss object (`keras_loss`)."""
  return tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def mean_loss(labels, logits):
  """The loss of one worker's batch (each worker's step is a whole update)."""
  return tf.reduce_mean(per_example_loss(labels, logits))


def correct(labels, logits) -> tf.Tensor:
  """How many of a batch's predictions (the argmax of the logits) match the integer
  labels, as float32: every hand-written loop's accuracy is made of this."""
  labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
  predicted = tf.reshape(tf.argmax(logits, -1), [-1])
  return tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))


class _KerasLoss(tf.keras.losses.Loss):
  def call(self, y_true, y_pred):
    return per_example_loss(y_true, y_pred)


def keras_loss() -> tf.keras.losses.Loss:
  """`per_example_loss` as a Keras Loss object (Keras takes the batch mean), for the
  APIs that require one: Model.compile and TFF's from_keras_model."""
  return _KerasLoss(name="loss")


# What each optimizer name means, for Keras (the workers' --optimizer) and TFF (FedAvg's
# --server_optimizer) alike: (family, hyperparameters). "momentum" is SGD with 0.9.
OPTIMIZER_SPECS = {"sgd": ("sgd", {}), "momentum": ("sgd", {"momentum": 0.9}),
                   "adam": ("adam", {}), "yogi": ("yogi", {}), "adagrad": ("adagrad", {})}


def optimizer_spec(name: str, flag: str = "optimizer") -> tuple[str, dict]:
  """(family, hyperparameters) of an optimizer name; ValueError naming `flag`."""
  if name not in OPTIMIZER_SPECS:
    raise ValueError(f"Unrecognized --{flag}: {name!r}")
  return OPTIMIZER_SPECS[name]


def make_optimizer(name: str, learning_rate: float, schedule: str = "constant",
                   total_steps: int = 1) -> tf.keras.optimizers.Optimizer:
  """Keras optimizer by name; `schedule="cosine"` decays the rate to 0 over `total_steps`."""
  if schedule == "cosine":
    learning_rate = tf.keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps))
  elif schedule != "constant":
    raise ValueError(f"Unrecognized --lr_schedule: {schedule!r}")
  family, kwargs = optimizer_spec(name)
  keras = {"sgd": tf.keras.optimizers.SGD, "adam": tf.keras.optimizers.Adam}
  if family not in keras:
    raise ValueError(f"Unrecognized --optimizer: {name!r}")
  return keras[family](learning_rate, **kwargs)


def make_scorer(model_fn: Callable[[], tf.keras.Model], batch_size: int = 1000
                ) -> Callable[[list[np.ndarray], Arrays], tuple[float, float]]:
  """Returns score(weights, arrays) -> (mean loss, accuracy) over every example given.

  It owns a plain (undistributed) copy of the model and a hand-written loop, so
  it can run inside any strategy's fit loop or after any approach's training
  without mixing strategies: every approach is scored by the same code.
  """
  model = model_fn()

  @tf.function
  def batch_stats(x, y):
    logits = model(x, training=False)
    return tf.reduce_sum(per_example_loss(y, logits)), correct(y, logits)

  def score(weights: list[np.ndarray], arrays: Arrays) -> tuple[float, float]:
    model.set_weights(weights)
    total_loss = total_correct = 0.0
    for x, y in eval_dataset(arrays, batch_size):
      loss, hits = batch_stats(x, y)
      total_loss += float(loss)
      total_correct += float(hits)
    return total_loss / len(arrays), total_correct / len(arrays)

  return score
