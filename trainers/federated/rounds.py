"""FedAvg's rounds, on the chief: the federation (which clients report each round,
with their seeds and the files their services read) and the loop that samples,
broadcasts, trains the clients through the process, averages, reports, evaluates
and checkpoints. The chief holds no training example: the clients' services read
their own (clients.py, federation.py)."""

import contextlib
import time

import numpy as np

from trainers.common import data, progress, session, volume
from trainers.federated import checkpoint, clients as clients_lib, federation, fedmath
from trainers.federated.config import COMPRESSION_BITS, Config


class Clients:
  """The federation as the chief sees it: each round's seeded sample of client ids,
  and where each sampled client's service finds its data."""

  def __init__(self, run_: session.Run, config: Config, num_services: int, pool=None):
    self.config, self.seed, self.run_dir = config, run_.config.seed, run_.config.run_dir
    self.num_services, self.pool = num_services, pool
    # Per service (one without services): rounds it took part in, clients it trained.
    self.rounds_served = [0] * max(1, num_services)
    self.clients_served = [0] * max(1, num_services)

  def served(self, sizes: list[int]) -> None:
    """Counts a finished round's groups (the analytic bytes follow from these)."""
    for i, n in enumerate(sizes):
      self.rounds_served[i] += int(n > 0)
      self.clients_served[i] += n

  def sample(self, round_num: int) -> np.ndarray:
    """The clients that report in `round_num`: the seeded sample, less --client_dropout."""
    c = self.config
    sampled = fedmath.sample_clients(c.num_clients, c.clients_per_round, round_num, self.seed)
    return fedmath.surviving_clients(sampled, c.client_dropout, round_num, self.seed)

  def round_args(self, sampled: np.ndarray, round_num: int) -> tuple[list, list[int], list]:
    """(the round's client arguments, the client ids in their order, the group sizes
    per service): the clients go to their own services, service by service."""
    groups = clients_lib.by_service(sampled, self.num_services)
    order = [k for g in groups for k in g]
    seeds = {k: clients_lib.client_seed(self.seed, round_num, k) for k in order}
    return (federation.client_args(self.run_dir, groups, self.num_services, seeds), order,
            [len(g) for g in groups])

  def grouped(self, sizes: list[int]):
    """Around a round: tells the service pool (N >= 1) which clients are whose."""
    return self.pool.groups(sizes) if self.pool is not None else contextlib.nullcontext()


def busiest_service(config: Config, seed: int, num_services: int, first_round: int = 1) -> int:
  """Pure: the most clients any one service trains in a round of rounds first_round..
  config.rounds (the seeded samples, before dropout, which only removes clients): how
  many client slots a service needs (the mapreduce round graph's)."""
  return max((max(map(len, clients_lib.by_service(fedmath.sample_clients(
      config.num_clients, config.clients_per_round, r, seed), num_services)))
              for r in range(first_round, config.rounds + 1)), default=1)


def model_weights(process, state) -> list[np.ndarray]:
  return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def train_rounds(run_: session.Run, process, state, clients: Clients, config: Config,
                 start_round: int, ckpt_path: str, num_params: int) -> int:
  """The rounds: sample, broadcast, local training, weighted average; evaluation on
  the cadence (every round with a target), a checkpoint every round. Returns the
  last round."""
  messages = process.messages_per_direction
  round_num, target = start_round, run_.progress.target
  for round_num in range(start_round + 1, config.rounds + 1):
    sampled = clients.sample(round_num)
    if not len(sampled):  # nobody reported: the server model stays as it was
      run_.writer.log("round_skipped", round_num, reason="every sampled client dropped out")
      continue
    args, order, sizes = clients.round_args(sampled, round_num)
    t = time.perf_counter()
    with clients.grouped(sizes):
      result = process.next(state, args, order)
    round_time = time.perf_counter() - t
    clients.served(sizes)
    per_client = federation.client_scores(result.metrics.get("client_scores"), order)
    state, metrics = result.state, result.metrics["client_work"]["train"]
    due = bool(target.accuracy) or progress.round_due_for_eval(round_num, config.rounds,
                                                               config.eval_every)
    run_.progress.end_round(
        round_num, config.rounds, float(metrics["loss"]), float(metrics["accuracy"]),
        int(metrics["num_examples"]), round_time,
        run_.evaluator(lambda s=state: model_weights(process, s)) if due else None,
        bytes_broadcast=volume.fedavg_broadcast(num_params, len(sampled), messages),
        bytes_uploaded=volume.fedavg_upload(num_params, len(sampled), messages),
        clients=per_client, reporting_clients=len(sampled),
        clients_by_service=clients_lib.by_service(order, clients.num_services),
        **round_extras(result.metrics, config, round_num))
    checkpoint.save(process, ckpt_path, state, round_num)
    run_.maybe_fail(round_num, unit="round")
    if run_.progress.should_stop:
      break
  return round_num


def round_extras(metrics, config: Config, round_num: int) -> dict:
  """Per-round record fields beyond loss and accuracy: the client drift (weighted
  aggregators), and under DP the (epsilon, delta) spent so far."""
  out = {}
  drift = metrics.get("aggregator", {}).get("client_drift")
  if drift is not None:
    out["client_drift"] = float(drift)
  if config.private:
    out.update(dp_epsilon=fedmath.dp_epsilon(
        config.dp_noise_multiplier, config.num_clients, config.clients_per_round, round_num,
        config.dp_delta), dp_delta=config.dp_delta)
  return out


def final_extras(history: list[dict], config: Config, num_params: int) -> dict:
  """summary.json's last drift, privacy spent, and with compression the analytic
  upload next to its uncompressed size."""
  out = {}
  last = next((r for r in reversed(history) if "client_drift" in r), None)
  if last:
    out["client_drift"] = last["client_drift"]
  if config.private:
    out.update(dp_noise_multiplier=config.dp_noise_multiplier, dp_clip=config.dp_clip or
               "adaptive", dp_delta=config.dp_delta,
               dp_epsilon=history[-1]["dp_epsilon"] if history else 0.0)
  if config.aggregator == "compression":
    full = volume.fedavg_broadcast(num_params, config.clients_per_round)
    out.update(bytes_uploaded_uncompressed_per_round=full,
               bytes_uploaded_compressed_per_round=full * COMPRESSION_BITS // 32)
  return out

