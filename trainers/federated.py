"""Federated averaging (McMahan et al. 2017) with TensorFlow Federated.

The training set is split into --num_clients clients (--partition=iid|shards|
dirichlet, fedavg_math.py). Each round the server samples --clients_per_round of
them (seeded), broadcasts its model, each client runs --local_epochs of SGD in
batches of --local_batch_size, and the server moves by the example-weighted average
of the client updates (`tff.learning.algorithms.build_weighted_fed_avg`; server SGD
with lr 1.0 is plain FedAvg). --algorithm=fedprox|fedsgd, --server_optimizer=momentum|
adam|yogi|adagrad, --aggregator=compression, --dp_noise_multiplier and
--client_dropout choose other recipes (fed_algorithms.py).

    python -m launch.local --approach=fedavg --num_workers=2 -- --model=fedavg_2nn --rounds=10

With --num_workers=0 the chief runs every client itself on a private TFF executor
service; with N >= 1 the launcher's worker tasks run TFF's executor service and the
chief spreads each round's clients across them (tff_exec.py).
The paper's Table 2 settings are one command line, e.g. CNN, IID, C=0.1, E=5, B=10:
    -- --model=fedavg_cnn --partition=iid --clients_per_round=10 --local_epochs=5 \
       --local_batch_size=10
"""

from trainers.common import entry
entry.check_before_tf(__name__, __spec__)  # before TF: bad flags are one line, exit 2
# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import os
import sys
import time

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from cluster import approaches
from cluster.errors import ConfigError, check_choice
from cluster.tf_config import TaskInfo, port_of
from trainers import fed_algorithms, fed_config, fedavg_math, tff_exec
from trainers import flags as trainer_flags
from trainers.common import config as config_lib
from trainers.common import data, model, progress, session, volume

APPROACH = approaches.FEDAVG.name


FedAvgConfig = fed_config.FedAvgConfig  # TF-free: the launcher checks it too


def build_process(model_fn, element_spec, config: fed_config.FedAvgConfig):
  """The TFF learning process (fed_algorithms.build) for a Keras model builder."""
  def tff_model_fn():
    return tff.learning.models.from_keras_model(
        model_fn(), input_spec=element_spec, loss=model.keras_loss(),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
  return fed_algorithms.build(config, tff_model_fn)


def client_dataset(arrays: data.Arrays, batch_size: int, epochs: int, seed: int | None):
  """One client's local data: E epochs of B-sized batches (reshuffled each epoch)."""
  return data.train_dataset(arrays, batch_size, seed, repeat=epochs, drop_remainder=False,
                            shuffle=seed is not None)


def save_state(path: str, state, round_num: int) -> None:
  """Server state as flat arrays, written then renamed (never half-written)."""
  leaves = tf.nest.flatten(state)
  tmp = f"{path}.tmp.npz"
  np.savez(tmp, round=round_num, **{f"leaf_{i}": np.asarray(v) for i, v in enumerate(leaves)})
  os.replace(tmp, path)


def load_state(path: str, template):
  with np.load(path) as f:
    leaves = [f[f"leaf_{i}"] for i in range(len(tf.nest.flatten(template)))]
    return tf.nest.pack_sequence_as(template, leaves), int(f["round"])


def _clients_dir(path: str) -> str:
  return os.path.join(os.path.dirname(path), "client_state")


def checkpoint(process, path: str, state, round_num: int) -> None:
  """The server state; with stateful clients (SCAFFOLD) their state around it, so
  that a resume never pairs a server state with client state from a later round."""
  stateful = getattr(process, "stateful_clients", False)
  if stateful:
    process.save_clients(_clients_dir(path), round_num)
  save_state(path, state, round_num)
  if stateful:
    process.prune_clients(_clients_dir(path), round_num)


def restore(process, path: str, template):
  state, round_num = load_state(path, template)
  if getattr(process, "stateful_clients", False):
    process.load_clients(_clients_dir(path), round_num)
  return state, round_num


class Clients:
  """The federation: every client's data, and each round's seeded sample of them."""

  def __init__(self, run_: session.Run, config: FedAvgConfig):
    self.config, self.seed = config, run_.config.seed
    try:
      parts = fedavg_math.partition(config.train.partition, run_.train.y,
                                    config.num_clients, self.seed,
                                    config.train.dirichlet_alpha)
    except ValueError as e:
      raise ConfigError(str(e)) from e
    self.data = [run_.train.take(p) for p in parts]

  def sample(self, round_num: int) -> np.ndarray:
    return fedavg_math.sample_clients(self.config.num_clients, self.config.clients_per_round,
                                      round_num, self.seed)

  def datasets(self, sampled: np.ndarray, round_num: int) -> list[tf.data.Dataset]:
    """The sampled clients' local data for this round (a seed per client and round)."""
    c = self.config
    return [client_dataset(self.data[k], c.local_batch_size, c.local_epochs,
                           seed=self.seed * 1_000_003 + round_num * 1009 + int(k))
            for k in sampled]


def train_rounds(run_: session.Run, process, state, clients: Clients, config: FedAvgConfig,
                 start_round: int, ckpt_path: str) -> int:
  """The rounds: sample, broadcast, local training, weighted average; evaluation on
  the cadence (every round with a target), a checkpoint every round. Returns the
  last round."""
  weights_of = lambda s: [np.asarray(w) for w in process.get_model_weights(s).trainable]
  model_bytes = volume.model_bytes(sum(w.size for w in weights_of(state))) * (
      fed_algorithms.messages_per_direction(config))
  round_num, target = start_round, run_.progress.target
  for round_num in range(start_round + 1, config.rounds + 1):
    # --client_dropout: the sampled clients that fail to report are left out.
    sampled = fedavg_math.surviving_clients(clients.sample(round_num), config.client_dropout,
                                            round_num, clients.seed)
    if not len(sampled):  # nobody reported: the server model stays as it was
      run_.writer.log("round_skipped", round_num, reason="every sampled client dropped out")
      continue
    before = weights_of(state)  # per-client curves: the broadcast model on each client
    per_client = [dict(client=int(k), examples=len(clients.data[k]),
                       **dict(zip(("loss", "accuracy"), run_.score(before, clients.data[k]))))
                  for k in sampled]
    t = time.perf_counter()
    result = fed_algorithms.run_round(process, state, clients.datasets(sampled, round_num),
                                      sampled)
    round_time = time.perf_counter() - t
    state, metrics = result.state, result.metrics["client_work"]["train"]
    due = bool(target.accuracy) or progress.round_due_for_eval(round_num, config.rounds,
                                                               config.eval_every)
    run_.progress.end_round(
        round_num, config.rounds, float(metrics["loss"]), float(metrics["accuracy"]),
        int(metrics["num_examples"]), round_time,
        run_.evaluator(lambda s=state: weights_of(s)) if due else None,
        bytes_broadcast=len(sampled) * model_bytes,
        bytes_uploaded=len(sampled) * (model_bytes + 4), clients=per_client,
        reporting_clients=len(sampled), **round_extras(result.metrics, config, round_num))
    checkpoint(process, ckpt_path, state, round_num)
    run_.maybe_fail(round_num, unit="round")
    if run_.progress.should_stop:
      break
  return round_num


def round_extras(metrics, config: FedAvgConfig, round_num: int) -> dict:
  """Per-round record fields beyond loss and accuracy: the client drift (weighted
  aggregators), and under DP the (epsilon, delta) spent so far."""
  out = {}
  drift = metrics.get("aggregator", {}).get("client_drift")
  if drift is not None:
    out["client_drift"] = float(drift)
  if config.private:
    out.update(dp_epsilon=fedavg_math.dp_epsilon(
        config.dp_noise_multiplier, config.num_clients, config.clients_per_round, round_num,
        config.dp_delta), dp_delta=config.dp_delta)
  return out


def final_extras(history: list[dict], config: FedAvgConfig, num_params: int) -> dict:
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
    full = config.clients_per_round * 4 * num_params
    out.update(bytes_uploaded_uncompressed_per_round=full,
               bytes_uploaded_compressed_per_round=full * fed_config.COMPRESSION_BITS // 32)
  return out


def steady_rounds(history: list[dict]) -> dict:
  """The rounds after the first (which includes TFF compiling the round): median
  round time and mean examples per round, what one plain process is compared with."""
  later = [r for r in history if r.get("round_time_s") is not None][1:]
  if not later:
    return {}
  return {"steady_round_time_s": float(np.median([r["round_time_s"] for r in later])),
          "examples_per_round": float(np.mean([r["examples"] for r in later]))}


def train(config: FedAvgConfig, task: TaskInfo, addresses: list[str],
          flag_values: dict | None, datasets=None, in_process: bool = False) -> dict:
  """The server's side of FedAvg, on the executor services at `addresses`."""
  cfg = config.train
  tff_exec.install_context(addresses)
  num_workers = 0 if in_process else len(addresses)
  with session.open_run(cfg, task, APPROACH, num_workers, flag_values, datasets) as run_:
    clients = Clients(run_, config)
    spec = client_dataset(clients.data[0], config.local_batch_size, 1, None).element_spec
    process = build_process(run_.model_fn, spec, config)
    state, start_round = process.initialize(), 0
    ckpt_path = os.path.join(cfg.run_dir, "server_state.npz")
    if config.train.resume and os.path.exists(ckpt_path):
      state, start_round = restore(process, ckpt_path, state)
      run_.announce(f"resumed from {ckpt_path} after round {start_round}")
    elif config.train.resume:
      run_.announce(session.FRESH_START.format(ckpt_path))
    num_params = sum(np.size(w) for w in process.get_model_weights(state).trainable)
    run_.start_progress(steps_per_epoch=1, examples_per_step=0)  # rounds count themselves
    where = ("in-process (private executor service)" if in_process else
             f"{len(addresses)} executor service(s): {', '.join(addresses)}")
    run_.announce(f"{config.num_clients} clients ({cfg.partition}), "
                  f"{config.clients_per_round}/round, E={config.local_epochs}, "
                  f"B={config.local_batch_size}, {config.rounds} rounds, model {cfg.model} "
                  f"({num_params} params), {config.algorithm}, server {config.server_optimizer} "
                  f"lr {config.server_learning_rate:g}, aggregator "
                  f"{'dp' if config.private else config.aggregator}"
                  f"{f', client dropout {config.client_dropout:g}' if config.client_dropout else ''}"
                  f"; running {where}")
    last_round = train_rounds(run_, process, state, clients, config, start_round, ckpt_path)
    copies = fed_algorithms.messages_per_direction(config)
    upload = config.clients_per_round * (4 * num_params * copies + 4)
    reached = run_.progress.target.reached
    return run_.finish(
        rounds=config.rounds, rounds_run=last_round, num_clients=config.num_clients,
        clients_per_round=config.clients_per_round, local_epochs=config.local_epochs,
        local_batch_size=config.local_batch_size, partition=cfg.partition,
        client_learning_rate=config.client_learning_rate,
        server_optimizer=config.server_optimizer,
        server_learning_rate=config.server_learning_rate, algorithm=config.algorithm,
        proximal_strength=config.proximal_strength, aggregator=config.aggregator,
        client_dropout=config.client_dropout, **final_extras(run_.progress.history, config,
                                                             num_params),
        rounds_to_target=reached["steps_to_target"] if reached else None,
        round_time_s=run_.progress.train_time_s / max(len(run_.progress.history), 1),
        **steady_rounds(run_.progress.history),
        bytes_broadcast_per_round=config.clients_per_round * 4 * num_params * copies,
        bytes_uploaded_per_round=upload,
        bytes_uploaded_per_client=upload * last_round / config.num_clients,
        bytes_analytic_per_worker=copies * volume.fedavg(num_params, config.clients_per_round,
                                                         last_round, num_workers),
        notes=f"{last_round} rounds x {config.clients_per_round} clients, "
              f"E={config.local_epochs} B={config.local_batch_size}, {cfg.partition}")


def run(config: FedAvgConfig, task: TaskInfo, flag_values: dict | None = None,
        datasets=None) -> dict:
  """The chief trains; worker tasks become TFF executor services (never return)."""
  if task.task_type == "worker" and "chief" in task.cluster:
    tff_exec.exec_executor_service(port_of(task.address))  # never returns
  if not task.is_chief:
    raise ConfigError(f"approach fedavg runs one chief and executor-service workers, "
                      f"not {task.name}")
  workers = list(task.cluster.get("worker", ())) if "chief" in task.cluster else []
  if workers:
    return train(config, task, workers, flag_values, datasets)
  with tff_exec.private_executor_service() as address:
    return train(config, task, [address], flag_values, datasets, in_process=True)


def run_main(argv=None) -> int:
  return entry.trainer_main(APPROACH, FedAvgConfig, run, argv)


if __name__ == "__main__":
  sys.exit(run_main())
