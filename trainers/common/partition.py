"""How the training set is split among workers or clients: iid, McMahan et al.'s
label shards, or Dirichlet label skew. Pure numpy, deterministic given the seed; every
approach splits through `partition` (all-reduce, PS and gossip workers, FedAvg's
clients), so one --partition means the same split everywhere.
"""

import numpy as np

PARTITIONS = ("iid", "shards", "dirichlet")


def iid(labels: np.ndarray, num_clients: int, seed: int) -> list[np.ndarray]:
  """A seeded permutation cut into equal parts (sizes differ by one at most): 600
  examples each for MNIST over 100 clients, 30,000 each over 2 workers."""
  _check(labels, num_clients)
  perm = np.random.default_rng(seed).permutation(len(labels))
  return [np.sort(p) for p in np.array_split(perm, num_clients)]


def shards(labels: np.ndarray, num_clients: int, seed: int,
           shards_per_client: int = 2) -> list[np.ndarray]:
  """McMahan et al.'s pathological non-IID split: sort by label, cut into
  num_clients * shards_per_client equal shards (200 of 300 for MNIST/100) and deal
  each client `shards_per_client` random shards, so most clients see two digits."""
  _check(labels, num_clients)
  num_shards = num_clients * shards_per_client
  # A stable sort keeps equal labels in index order; the seed only deals shards.
  order = np.argsort(labels, kind="stable")
  cut = np.array_split(order, num_shards)
  dealt = np.random.default_rng(seed).permutation(num_shards)
  return [np.sort(np.concatenate([cut[s] for s in dealt[k * shards_per_client:
                                                        (k + 1) * shards_per_client]]))
          for k in range(num_clients)]


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float, seed: int,
              min_size: int = 10, max_tries: int = 100) -> list[np.ndarray]:
  """Label proportions per client drawn from Dir(alpha) (Hsu et al. 2019): for each
  class, its examples are split among clients by a Dir(alpha * 1) draw. Small alpha
  -> few classes per client; large alpha -> close to IID. Re-drawn (seeded) until
  every client holds at least `min_size` examples."""
  _check(labels, num_clients)
  if alpha <= 0:
    raise ValueError(f"--dirichlet_alpha must be > 0, got {alpha}")
  rng = np.random.default_rng(seed)
  classes = np.unique(labels)
  for _ in range(max_tries):
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in classes:
      idx = rng.permutation(np.flatnonzero(labels == c))
      props = rng.dirichlet(np.full(num_clients, alpha))
      cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
      for k, piece in enumerate(np.split(idx, cuts)):
        parts[k].append(piece)
    out = [np.sort(np.concatenate(p)) for p in parts]
    if min(len(p) for p in out) >= min(min_size, len(labels) // num_clients):
      return out
  raise ValueError(f"could not give every one of {num_clients} clients {min_size} examples "
                   f"with --dirichlet_alpha={alpha}; raise alpha or lower --num_clients")


def partition(name: str, labels: np.ndarray, num_clients: int, seed: int,
              alpha: float = 0.5) -> list[np.ndarray]:
  if name == "iid":
    return iid(labels, num_clients, seed)
  if name == "shards":
    return shards(labels, num_clients, seed)
  if name == "dirichlet":
    return dirichlet(labels, num_clients, alpha, seed)
  raise ValueError(f"Unrecognized --partition: {name!r}; valid: {', '.join(PARTITIONS)}")


def label_histograms(labels: np.ndarray, parts: list[np.ndarray], num_classes: int = 10):
  """(num_clients, num_classes) counts."""
  return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])


def _check(labels: np.ndarray, num_clients: int) -> None:
  if not 1 <= num_clients <= len(labels):
    raise ValueError(f"--num_clients must be in [1, {len(labels)}], got {num_clients}")


