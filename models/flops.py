"""Floating-point work of a model, counted from its layers (pure; no profiler).

Forward FLOPs per example: a Dense layer is 2 x inputs x units, a Conv2D is
2 x kernel_h x kernel_w x in_channels x filters per output position (bias,
activations and pooling, one op per element, are left out: under 2 % here). One
training step costs about 3x the forward pass (forward, and the backward pass's
two products per layer), the usual rule of thumb.
"""

import tensorflow as tf

TRAIN_FACTOR = 3


def forward_flops(model: tf.keras.Model) -> int:
  total = 0
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.Dense):
      total += 2 * int(layer.kernel.shape[0]) * int(layer.units)
    elif isinstance(layer, tf.keras.layers.Conv2D):
      kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
      _, oh, ow, _ = layer.output.shape
      total += 2 * kh * kw * cin * cout * int(oh) * int(ow)
  return total


def train_flops_per_example(model: tf.keras.Model) -> int:
  return TRAIN_FACTOR * forward_flops(model)
