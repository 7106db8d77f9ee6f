"""FedAvg's math, apart from TFF and the round loop: client sampling and dropout,
client drift, the DP accountant, FedProx's proximal gradient and SCAFFOLD's corrected
step, variate and server update.

Pure numpy or operators only (the same function runs on numpy arrays in the exact
tests and on TF tensors inside the TFF computations); every draw is seeded.
(The client partitions are every approach's: trainers/common/partition.py.)
"""

import numpy as np


def sample_clients(num_clients: int, per_round: int, round_num: int, seed: int) -> np.ndarray:
  """The clients of round `round_num` (1-based): a seeded draw without replacement,
  the same whether the run was resumed or not."""
  if not 1 <= per_round <= num_clients:
    raise ValueError(f"--clients_per_round must be in [1, {num_clients}], got {per_round}")
  return np.sort(np.random.default_rng([seed, round_num]).choice(num_clients, per_round,
                                                                 replace=False))


def client_drift(updates: list[np.ndarray], weights: np.ndarray) -> float:
  """Weighted RMS distance of the client updates from their weighted average:
  sqrt(sum_i w_i ||u_i - u_bar||^2 / sum_i w_i), the FL analogue of gossip's
  consensus distance (0 when every client moved the model the same way)."""
  u = np.stack([np.ravel(x) for x in updates]).astype(np.float64)
  w = np.asarray(weights, np.float64) / np.sum(weights)
  mean = w @ u
  return float(np.sqrt(w @ ((u - mean) ** 2).sum(axis=1)))


def drift_from_moments(mean_sq_norm: float, sq_norm_of_mean: float) -> float:
  """The same drift from two aggregates a federated computation can take:
  E_w ||u||^2 - ||E_w u||^2 = E_w ||u - E_w u||^2 (clamped at 0 against rounding)."""
  return float(np.sqrt(max(mean_sq_norm - sq_norm_of_mean, 0.0)))


def surviving_clients(sampled: np.ndarray, dropout: float, round_num: int,
                      seed: int) -> np.ndarray:
  """--client_dropout: each sampled client fails to report with probability `dropout`,
  seeded per round (the same clients fail on a rerun)."""
  if dropout <= 0:
    return sampled
  rng = np.random.default_rng([seed, round_num, 7919])
  return sampled[rng.random(len(sampled)) >= dropout]


def dp_epsilon(noise_multiplier: float, num_clients: int, clients_per_round: int,
               rounds: int, delta: float) -> float:
  """(epsilon at `delta`) spent by `rounds` rounds of the Gaussian mechanism on a
  sample of clients_per_round out of num_clients, by the RDP accountant of
  dp-accounting, with the usual Poisson approximation of the fixed-size sample (rate
  q = clients_per_round / num_clients; TFF's DP tutorials account the same way).
  inf for noise 0."""
  import dp_accounting  # pylint: disable=g-import-not-at-top
  if noise_multiplier <= 0:
    return float("inf")
  if rounds <= 0:
    return 0.0
  event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
      clients_per_round / num_clients, dp_accounting.GaussianDpEvent(noise_multiplier)),
      rounds)
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(event)
  return float(accountant.get_epsilon(delta))


def proximal_gradient(grad, w, anchor, mu):
  """FedProx's local gradient: that of loss + mu/2 ||w - w_server||^2, i.e.
  g + mu (w - w_server), which pulls each step back towards the server's model.
  (TFF 0.87's own build_weighted_fed_prox adds mu (w_server - w), the opposite sign;
  process.ProximalSGD is why this suite does not use it.) Operators only, for
  numpy and TF alike."""
  return grad + mu * (w - anchor)


# SCAFFOLD (Karimireddy et al. 2020, Algorithm 1, control variates by option II). Only
# arithmetic operators: the same functions run on numpy arrays (the exact tests) and on
# the TF tensors of scaffold.py's client and server computations.

def scaffold_step(y, grad, client_control, server_control, lr):
  """One corrected local step: y - lr (g - c_i + c). The correction c - c_i steers the
  client towards the server's estimate of the full gradient."""
  return y - lr * (grad - client_control + server_control)


def scaffold_client_control(client_control, server_control, x, y, steps, lr):
  """Option II, the client's new variate after K local steps from x to y:
  c_i+ = c_i - c + (x - y) / (K lr)."""
  return client_control - server_control + (x - y) / (steps * lr)


def scaffold_server(x, control, mean_delta_y, mean_delta_c, server_lr, fraction):
  """The server: x + lr_g mean(y_i - x), and c + (|S| / N) mean(c_i+ - c_i), which
  keeps c the mean of all N clients' variates."""
  return x + server_lr * mean_delta_y, control + fraction * mean_delta_c


def steady_rounds(history: list[dict]) -> dict:
  """The rounds after the first (which includes compiling the round: TFF's, or Keras' functions): median
  round time and mean examples per round, what one plain process is compared with."""
  later = [r for r in history if r.get("round_time_s") is not None][1:]
  if not later:
    return {}
  return {"steady_round_time_s": float(np.median([r["round_time_s"] for r in later])),
          "examples_per_round": float(np.mean([r["examples"] for r in later]))}
