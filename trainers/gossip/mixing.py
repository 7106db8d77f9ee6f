"""Decentralized gossip (D-PSGD, Lian et al. 2017): topologies and mixing matrices.

Pure numpy. A topology gives each worker its neighbours; a mixing rule turns it into
a symmetric, doubly stochastic W, and one gossip step is x_i <- sum_j W_ij x_j.
"""

import math

import numpy as np

ONE_PEER_EXP = "one_peer_exp"  # time-varying: one peer per step (Assran et al., BlueFog)
TOPOLOGIES = ("ring", "torus", "exponential", "full", ONE_PEER_EXP)
MIXINGS = ("metropolis", "uniform")


def check_workers(topology: str, n: int) -> None:
  """ValueError when `topology` cannot join `n` workers: the one-peer exponential
  graph averages exactly over a period only for a power of two."""
  if topology == ONE_PEER_EXP and n & (n - 1):
    raise ValueError(f"--topology={topology} needs a power-of-two number of workers "
                     f"(--num_workers), got {n}")


def _torus_shape(n: int) -> tuple[int, int]:
  rows = max(r for r in range(1, int(math.isqrt(n)) + 1) if n % r == 0)
  return rows, n // rows


def one_peer_phases(n: int) -> int:
  """Steps in one period of the one-peer exponential graph: ceil(log2 n) (1 for n <= 2)."""
  return max(1, math.ceil(math.log2(n))) if n > 1 else 1


def one_peer_shift(n: int, step: int) -> int:
  """At gossip step t every worker i sends to i + 2^(t mod log2 n) and receives from
  i - 2^(t mod log2 n)."""
  return 2 ** (step % one_peer_phases(n)) % n


def one_peer_matrix(n: int, step: int) -> np.ndarray:
  """W_t = (I + P_t) / 2, P_t the shift by 2^(t mod log2 n): x_i <- (x_i + x_{i-s}) / 2.
  Doubly stochastic (one peer in, one out); for n a power of two the product over one
  period is the exact average."""
  w = np.eye(n) / 2
  shift = one_peer_shift(n, step)
  for i in range(n):
    w[i, (i - shift) % n] += 0.5
  return w


def period_matrix(n: int) -> np.ndarray:
  """W over one period of the one-peer graph: W_{p-1} ... W_1 W_0."""
  w = np.eye(n)
  for t in range(one_peer_phases(n)):
    w = one_peer_matrix(n, t) @ w
  return w


def neighbours(n: int, topology: str) -> list[list[int]]:
  """Sorted neighbour lists (self excluded) of every worker 0..n-1 (one_peer_exp: every
  peer it meets over one period)."""
  if n < 1:
    raise ValueError(f"need at least one worker, got {n}")
  if topology == ONE_PEER_EXP:
    nbrs = [{(i + s * one_peer_shift(n, t)) % n for t in range(one_peer_phases(n))
             for s in (1, -1)} if n > 1 else set() for i in range(n)]
  elif topology == "ring":
    nbrs = [{(i - 1) % n, (i + 1) % n} for i in range(n)]
  elif topology == "torus":
    rows, cols = _torus_shape(n)  # a prime n degenerates to a ring
    nbrs = []
    for i in range(n):
      r, c = divmod(i, cols)
      nbrs.append({((r - 1) % rows) * cols + c, ((r + 1) % rows) * cols + c,
                   r * cols + (c - 1) % cols, r * cols + (c + 1) % cols})
  elif topology == "exponential":
    # i talks to i +/- 2^k: degree ~2 log2(n), and consensus in O(log n) steps.
    nbrs = [{(i + s * 2 ** k) % n for k in range(max(1, math.ceil(math.log2(n))))
             for s in (1, -1)} for i in range(n)]
  elif topology == "full":
    nbrs = [set(range(n)) for _ in range(n)]
  else:
    raise ValueError(f"Unrecognized --topology: {topology!r}; valid: {', '.join(TOPOLOGIES)}")
  return [sorted(s - {i}) for i, s in enumerate(nbrs)]


def mixing_matrix(n: int, topology: str, mixing: str = "metropolis") -> np.ndarray:
  """Symmetric, doubly stochastic W for the topology (float64); one_peer_exp: the
  product over one period (period_matrix), its step matrices being fixed."""
  if topology == ONE_PEER_EXP:
    return period_matrix(n)
  nbrs = neighbours(n, topology)
  deg = [len(x) for x in nbrs]
  w = np.zeros((n, n))
  if mixing == "metropolis":
    for i in range(n):
      for j in nbrs[i]:
        w[i, j] = 1.0 / (1 + max(deg[i], deg[j]))
  elif mixing == "uniform":
    if len(set(deg)) != 1:
      raise ValueError(f"--mixing=uniform needs a regular graph; {topology} with {n} workers "
                       f"has degrees {sorted(set(deg))} (use metropolis)")
    for i in range(n):
      for j in nbrs[i]:
        w[i, j] = 1.0 / (deg[i] + 1)
  else:
    raise ValueError(f"Unrecognized --mixing: {mixing!r}; valid: {', '.join(MIXINGS)}")
  w[np.diag_indices(n)] = 1.0 - w.sum(axis=1)
  return w


def second_eigenvalue(w: np.ndarray) -> float:
  """max(|lambda_2|, |lambda_n|): the per-step contraction of disagreement."""
  vals = np.linalg.eigvalsh(w) if np.allclose(w, w.T) else np.linalg.eigvals(w)
  eig = np.sort(np.abs(vals))[::-1]
  return float(eig[1]) if len(eig) > 1 else 0.0


def spectral_gap(w: np.ndarray) -> float:
  return 1.0 - second_eigenvalue(w)


def gossip_step(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """One synchronous round for all workers at once: row i of x is worker i's vector."""
  return w @ x


def consensus_distance(x: np.ndarray) -> float:
  """Relative spread of the replicas: sqrt(mean_i ||x_i - mean||^2) / ||mean||."""
  mean = x.mean(axis=0)
  spread = math.sqrt(float(((x - mean) ** 2).sum(axis=1).mean()))
  return spread / max(float(np.linalg.norm(mean)), 1e-30)


def async_mix(own: np.ndarray, received: dict[int, np.ndarray], weights: dict[int, float]
              ) -> np.ndarray:
  """Asynchronous gossip's step for one worker: x_i <- x_i + sum_j W_ij (x_j - x_i) over
  the neighbours j whose newer model arrived since the last mix (`received`), with the
  latest x_j it holds. With every neighbour fresh this is exactly sum_j W_ij x_j (the
  synchronous step, W_ii = 1 - sum W_ij); with some missing, the row is renormalised
  onto x_i itself, so a slow neighbour's weight stays with the worker's own model
  instead of pulling it again towards a model it already mixed."""
  out = np.array(own, dtype=np.float64)
  for j in sorted(received):
    out += weights[j] * (np.asarray(received[j], np.float64) - own)
  return out.astype(own.dtype)


def staleness(neighbour_step: float, model_step: float) -> int:
  """How many of the neighbour's own steps the model being mixed is behind the newest
  step the neighbour has announced (never negative: its announcement may lag)."""
  return max(0, int(round(neighbour_step - model_step)))
