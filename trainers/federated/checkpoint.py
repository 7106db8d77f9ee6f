"""FedAvg's checkpoint: the server state each round, written then renamed, with the
clients' state around it (process.FederatedProcess: SCAFFOLD's variates; nothing
for TFF's stateless clients), so a resume never pairs a server state with client
state from a later round."""

import os

import numpy as np
import tensorflow as tf

from cluster import posix


def save_state(path: str, state, round_num: int) -> None:
  """Server state as flat arrays, never half-written."""
  leaves = tf.nest.flatten(state)
  with posix.atomic_path(path, ".npz") as tmp:
    np.savez(tmp, round=round_num, **{f"leaf_{i}": np.asarray(v) for i, v in enumerate(leaves)})


def load_state(path: str, template):
  """(state shaped like `template`, its round) from `save_state`'s file."""
  with np.load(path) as f:
    leaves = [f[f"leaf_{i}"] for i in range(len(tf.nest.flatten(template)))]
    return tf.nest.pack_sequence_as(template, leaves), int(f["round"])


def _clients_dir(path: str) -> str:
  return os.path.join(os.path.dirname(path), "client_state")


def save(process, path: str, state, round_num: int) -> None:
  """The clients' state of this round, then the server state, then the clients'
  older copies."""
  process.save_clients(_clients_dir(path), round_num)
  save_state(path, state, round_num)
  process.prune_clients(_clients_dir(path), round_num)


def restore(process, path: str, template) -> tuple[object, int] | None:
  """(server state, round) and the clients' state of that round; None when `path`
  holds no checkpoint."""
  if not os.path.exists(path):
    return None
  state, round_num = load_state(path, template)
  process.load_clients(_clients_dir(path), round_num)
  return state, round_num
