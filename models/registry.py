"""The classifiers the suite trains, selected by `--model`."""

from typing import Callable, Sequence

import tensorflow as tf

layers = tf.keras.layers

InputShape = Sequence[int]


def mlp(input_shape: InputShape = (28, 28, 1), num_classes: int = 10) -> tf.keras.Model:
  """The seed's network: Dense 256-256-256 (tanh) - 128 - 10."""
  return tf.keras.Sequential([
      layers.Input(shape=tuple(input_shape)),
      layers.Flatten(),
      layers.Dense(256, activation="tanh"),
      layers.Dense(256, activation="tanh"),
      layers.Dense(256, activation="tanh"),
      layers.Dense(128, activation="tanh"),
      layers.Dense(num_classes),
  ], name="mlp")


def cnn(input_shape: InputShape = (28, 28, 1), num_classes: int = 10) -> tf.keras.Model:
  """The seed's PyTorch MNIST example net (conv10-pool-conv20-dropout-pool-fc50-fc10)."""
  return tf.keras.Sequential([
      layers.Input(shape=tuple(input_shape)),
      layers.Conv2D(10, 5),
      layers.MaxPool2D(2),
      layers.ReLU(),
      layers.Conv2D(20, 5),
      layers.SpatialDropout2D(0.5),  # torch.nn.Dropout2d
      layers.MaxPool2D(2),
      layers.ReLU(),
      layers.Flatten(),
      layers.Dense(50, activation="relu"),
      layers.Dropout(0.5),
      layers.Dense(num_classes),
  ], name="cnn")


def fedavg_2nn(input_shape: InputShape = (28, 28, 1), num_classes: int = 10) -> tf.keras.Model:
  """McMahan et al. 2017 "2NN": two hidden layers of 200 ReLU (199,210 params)."""
  return tf.keras.Sequential([
      layers.Input(shape=tuple(input_shape)),
      layers.Flatten(),
      layers.Dense(200, activation="relu"),
      layers.Dense(200, activation="relu"),
      layers.Dense(num_classes),
  ], name="fedavg_2nn")


def fedavg_cnn(input_shape: InputShape = (28, 28, 1), num_classes: int = 10) -> tf.keras.Model:
  """McMahan et al. 2017 "CNN": conv32@5x5, pool, conv64@5x5, pool, fc512, 10 (1,663,370 params)."""
  return tf.keras.Sequential([
      layers.Input(shape=tuple(input_shape)),
      layers.Conv2D(32, 5, padding="same", activation="relu"),
      layers.MaxPool2D(2),
      layers.Conv2D(64, 5, padding="same", activation="relu"),
      layers.MaxPool2D(2),
      layers.Flatten(),
      layers.Dense(512, activation="relu"),
      layers.Dense(num_classes),
  ], name="fedavg_cnn")


def small_cnn(input_shape: InputShape = (28, 28, 1), num_classes: int = 10) -> tf.keras.Model:
  """The time-to-accuracy recipe's net (184,586 params): conv32@5x5, pool, conv64@5x5,
  pool, fc128, 10, ReLU, no dropout. With Adam and a cosine decay it passes 99 % test
  accuracy on MNIST in about 1.25 epochs on one process (README, "The recipe")."""
  return tf.keras.Sequential([
      layers.Input(shape=tuple(input_shape)),
      layers.Conv2D(32, 5, activation="relu"),
      layers.MaxPool2D(2),
      layers.Conv2D(64, 5, activation="relu"),
      layers.MaxPool2D(2),
      layers.Flatten(),
      layers.Dense(128, activation="relu"),
      layers.Dense(num_classes),
  ], name="small_cnn")


_REGISTRY: dict[str, Callable[..., tf.keras.Model]] = {
    "mlp": mlp,
    "cnn": cnn,
    "fedavg_2nn": fedavg_2nn,
    "fedavg_cnn": fedavg_cnn,
    "small_cnn": small_cnn,
}


def model_names() -> list[str]:
  return sorted(_REGISTRY)


def build_model(name: str, input_shape: InputShape = (28, 28, 1),
                num_classes: int = 10) -> tf.keras.Model:
  """Returns a fresh, uncompiled model; raises ValueError naming the valid models."""
  if name not in _REGISTRY:
    raise ValueError(f"Unrecognized --model: {name!r}; valid models: {', '.join(model_names())}")
  return _REGISTRY[name](input_shape, num_classes)
