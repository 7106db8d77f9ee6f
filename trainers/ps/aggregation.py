"""Synchronous parameter-server aggregation: the math, apart from any orchestration.

Each global step, every worker adds its gradient into accumulators that live on
the parameter servers; once all N have arrived, one optimizer step is applied
with their sum (or mean) and the accumulators are cleared. These functions run
unchanged in a plain process (tests) or inside ParameterServerStrategy closures.
"""

import contextlib
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from trainers.ps.config import SYNC_AGGREGATIONS as AGGREGATIONS


def make_accumulators(variables: Sequence[tf.Variable],
                      colocate: Callable | None = None) -> list[tf.Variable]:
  """One zero-initialised, non-trainable accumulator per variable, created in the
  caller's scope and, with `colocate` (PSS: strategy.extended.colocate_vars_with),
  on the same ps task as its variable and never partitioned: the sum and the update
  then stay on that ps."""
  out = []
  for i, v in enumerate(variables):
    with colocate(v) if colocate else contextlib.nullcontext():
      out.append(tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"accum_{i}"))
  return out


def accumulate(accumulators: Sequence[tf.Variable], grads: Sequence[tf.Tensor]) -> list:
  """Adds one worker's gradients into the accumulators; the additions, for a caller
  that must order something after them."""
  return [acc.assign_add(tf.convert_to_tensor(g)) for acc, g in zip(accumulators, grads)]


def zero(accumulators: Sequence[tf.Variable]) -> None:
  for acc in accumulators:
    with tf.device(acc.device):
      acc.assign(tf.zeros(acc.shape, acc.dtype))


def aggregate(accumulators: Sequence[tf.Variable], num_grads, mode: str) -> list[tf.Tensor]:
  """The update direction: the sum of the accumulated gradients, or their mean, each
  computed where its accumulator lives (on the ps): the sum never crosses to the
  worker that runs the apply closure."""
  if mode not in AGGREGATIONS:
    raise ValueError(f"Unrecognized --sync_aggregation: {mode!r}")
  scale = 1.0 if mode == "sum" else 1.0 / tf.cast(num_grads, tf.float32)
  out = []
  for a in accumulators:
    with tf.device(a.device):
      out.append(tf.convert_to_tensor(a) * scale)
  return out


def apply_and_reset(optimizer: tf.keras.optimizers.Optimizer,
                    accumulators: Sequence[tf.Variable], variables: Sequence[tf.Variable],
                    num_grads, mode: str) -> None:
  """Exactly one optimizer step with the aggregated gradient, then zero the
  accumulators. PSS runs each variable's update colocated with the variable, and the
  aggregate and the zeros are made on the accumulators' ps, so the worker that runs
  this closure sends and receives no model-sized tensor (sync PS: a worker pushes its
  gradient and pulls the model, nothing else)."""
  # skip_gradients_aggregation: the N gradients are already combined; Keras' own
  # replica all-reduce would copy the aggregate to the worker and back.
  optimizer.apply_gradients(zip(aggregate(accumulators, num_grads, mode), variables),
                            skip_gradients_aggregation=True)
  zero(accumulators)


def closure_sizes(num_steps: int, per_closure: int) -> list[int]:
  """Async PS: `num_steps` split into closures of `per_closure` steps plus one
  remainder, so the run takes exactly the planned number of updates."""
  full, rest = divmod(num_steps, per_closure)
  return [per_closure] * full + ([rest] if rest else [])


def merge_shards(pieces: Sequence[np.ndarray], shapes: Sequence[tuple]) -> list[np.ndarray]:
  """Re-joins row-partitioned variables: `pieces` (a partitioned model's weights, in
  order) concatenated along axis 0 until each matches the next of `shapes`."""
  out, i = [], 0
  for shape in shapes:
    parts, rows = [], 0
    while rows < (shape[0] if shape else 1):
      if i >= len(pieces):
        raise ValueError(f"ran out of shards while rebuilding a {shape} weight")
      piece = np.asarray(pieces[i])
      i += 1
      if not shape:
        parts, rows = [piece], 1
        break
      parts.append(piece)
      rows += piece.shape[0]
    merged = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    if tuple(merged.shape) != tuple(shape):
      raise ValueError(f"shards rebuild to {merged.shape}, expected {shape}")
    out.append(merged)
  if i != len(pieces):
    raise ValueError(f"{len(pieces) - i} shard(s) left over")
  return out
