"""Asynchronous gossip's wire layout, defined once: each message a frozen record whose
fields, in order, are its float32 vector (pure; no TF).

A slot holds one vector (trainers/gossip/mailbox.py). `encode` and `decode` take the
order from the record's own field list, so writer and reader cannot disagree on it.
  Status   a worker's clock, to its mixers and the chief (the job clock)
  Final    after the parameters: a worker's last figures, to the chief once
  Control  the chief's flags to every worker (they only rise: written by max)
"""

import dataclasses
from typing import Type, TypeVar

import numpy as np

R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class Status:
  step: float
  mixes: float
  staleness_sum: float
  staleness_max: float
  loss: float
  accuracy: float


@dataclasses.dataclass(frozen=True)
class Final:
  test_loss: float
  test_accuracy: float
  step: float
  mixes: float
  staleness_sum: float
  staleness_max: float
  status_pushes: float
  control_pushes: float
  train_seconds: float


@dataclasses.dataclass(frozen=True)
class Control:
  stop: float = 0.0
  release: float = 0.0
  go: float = 0.0


def names(cls: Type) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(cls))


def size(cls: Type) -> int:
  return len(dataclasses.fields(cls))


def index(cls: Type, name: str) -> int:
  return names(cls).index(name)


def encode(record) -> np.ndarray:
  return np.array([float(getattr(record, n)) for n in names(type(record))], np.float32)


def decode(cls: Type[R], vector) -> R:
  """The record of `vector`'s first size(cls) floats."""
  if len(vector) < size(cls):
    raise ValueError(f"a {cls.__name__} vector needs {size(cls)} floats, got {len(vector)}")
  return cls(*map(float, vector[:size(cls)]))


def pick(cls: Type[R], source) -> R:
  """The record of the like-named attributes of `source` (a Clock, say)."""
  return cls(**{n: float(getattr(source, n)) for n in names(cls)})
