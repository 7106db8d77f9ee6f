"""FedAvg's rounds, on the chief: the federation (every client's data and each
round's seeded sample), and the loop that samples, broadcasts, trains the clients
through the process, averages, reports, evaluates and checkpoints."""

import time

import numpy as np
import tensorflow as tf

from trainers.common import data, progress, session, volume
from trainers.federated import checkpoint, fedmath
from trainers.federated.config import COMPRESSION_BITS, Config


def client_dataset(arrays: data.Arrays, batch_size: int, epochs: int, seed: int | None):
  """One client's local data: E epochs of B-sized batches (reshuffled each epoch)."""
  return data.train_dataset(arrays, batch_size, seed, repeat=epochs, drop_remainder=False,
                            shuffle=seed is not None)


class Clients:
  """The federation: every client's data, and each round's seeded sample of them."""

  def __init__(self, run_: session.Run, config: Config):
    self.config, self.seed = config, run_.config.seed
    self.data = [run_.train.take(p) for p in run_.partition(config.num_clients)]

  def sample(self, round_num: int) -> np.ndarray:
    """The clients that report in `round_num`: the seeded sample, less --client_dropout."""
    c = self.config
    sampled = fedmath.sample_clients(c.num_clients, c.clients_per_round, round_num, self.seed)
    return fedmath.surviving_clients(sampled, c.client_dropout, round_num, self.seed)

  def datasets(self, sampled: np.ndarray, round_num: int) -> list[tf.data.Dataset]:
    """The sampled clients' local data for this round (a seed per client and round)."""
    c = self.config
    return [client_dataset(self.data[k], c.local_batch_size, c.local_epochs,
                           seed=self.seed * 1_000_003 + round_num * 1009 + int(k))
            for k in sampled]

  def scores(self, run_: session.Run, weights, sampled: np.ndarray) -> list[dict]:
    """Per-client curves: the broadcast model on each sampled client's own data."""
    return [dict(client=int(k), examples=len(self.data[k]),
                 **dict(zip(("loss", "accuracy"), run_.score(weights, self.data[k]))))
            for k in sampled]


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
    per_client = clients.scores(run_, model_weights(process, state), sampled)
    t = time.perf_counter()
    result = process.next(state, clients.datasets(sampled, round_num), sampled)
    round_time = time.perf_counter() - t
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


def steady_rounds(history: list[dict]) -> dict:
  """The rounds after the first (which includes TFF compiling the round): median
  round time and mean examples per round, what one plain process is compared with."""
  later = [r for r in history if r.get("round_time_s") is not None][1:]
  if not later:
    return {}
  return {"steady_round_time_s": float(np.median([r["round_time_s"] for r in later])),
          "examples_per_round": float(np.mean([r["examples"] for r in later]))}
