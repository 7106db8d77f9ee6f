"""Where FedAvg's clients live: each client's examples are a file on the host of the
executor service that trains it, written there by that service's own task from its
own copy of the training split. The chief sends client files' names, never examples.

Client k belongs to service k mod N (N executor services; N = 0 runs one private
service, which owns every client). Its file is
<run_dir>/federation/service_<i>/client_<k>.bin, fixed-length records of one label
byte and the 784 pixel bytes of a 28x28x1 image (what `federation.read_client` parses
inside TFF's worker_binary). The partition is `partition.partition` of the split's
labels with --partition, --seed and --dirichlet_alpha: the split every earlier run
used, computed where the labels are.

No TensorFlow here: a service task writes its clients before it becomes the executor
service, and the chief only names files.
"""

import os

import numpy as np

from cluster import posix
from trainers.common import partition as partition_lib
from trainers.common.config import TrainConfig
from trainers.common.data import IMAGE_SHAPE, Arrays

RECORD_BYTES = 1 + int(np.prod(IMAGE_SHAPE))  # label byte, then the pixels
DIR_NAME = "federation"


def client_dataset(arrays: Arrays, batch_size: int, epochs: int, seed: int | None):
  """One client's local data: E epochs of B-sized batches (reshuffled each epoch)."""
  from trainers.common import data  # pylint: disable=g-import-not-at-top  # TF: only here
  return data.train_dataset(arrays, batch_size, seed, repeat=epochs, drop_remainder=False,
                            shuffle=seed is not None)


def client_seed(seed: int, round_num: int, client: int) -> int:
  """The shuffle seed of `client`'s data in `round_num` (a seed per client and round)."""
  return seed * 1_000_003 + round_num * 1009 + int(client)


def owner(client: int, num_services: int) -> int:
  """The executor service that holds and trains `client` (0 without services)."""
  return int(client) % max(1, num_services)


def service_dir(run_dir: str, service: int) -> str:
  return os.path.join(run_dir, DIR_NAME, f"service_{service}")


def client_path(run_dir: str, client: int, num_services: int) -> str:
  """Client `client`'s file on its service's host (the same path on every host)."""
  return os.path.join(os.path.abspath(service_dir(run_dir, owner(client, num_services))),
                      f"client_{int(client)}.bin")


def by_service(clients, num_services: int) -> list[list[int]]:
  """`clients` grouped by the service that owns them, each group in the given order
  (one group without services)."""
  groups: list[list[int]] = [[] for _ in range(max(1, num_services))]
  for k in clients:
    groups[owner(k, num_services)].append(int(k))
  return groups


def records(arrays: Arrays) -> bytes:
  """Arrays as fixed-length records: label byte, then the image's pixels."""
  flat = arrays.x.reshape(len(arrays), -1).astype(np.uint8)
  return np.concatenate([arrays.y.astype(np.uint8)[:, None], flat], axis=1).tobytes()


def write_service_clients(train: Arrays, config: TrainConfig, num_clients: int,
                          service: int, num_services: int) -> list[int]:
  """Writes the clients of `service` (all of them without services) from `train`,
  partitioned as every run partitions; returns their ids. Raises ValueError when the
  partition cannot be made (too many clients, an impossible Dirichlet draw)."""
  parts = partition_lib.partition(config.partition, train.y, num_clients, config.seed,
                                  config.dirichlet_alpha)
  mine = [k for k in range(num_clients) if owner(k, num_services) == service]
  os.makedirs(service_dir(config.run_dir, service), exist_ok=True)
  for k in mine:
    path = client_path(config.run_dir, k, num_services)
    with posix.atomic_path(path, ".bin") as tmp:
      with open(tmp, "wb") as f:
        f.write(records(train.take(parts[k])))
  return mine
