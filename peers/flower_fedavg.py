"""Flower's FedAvg on the suite's FedAvg row: same clients (partition and seed), the same
clients sampled each round, E, B, client SGD rate, model, server evaluation on the whole
test split every round, target stop and summary.

    python -m launch.local --approach=fedavg --num_workers=2 -- \
        .venv-peers/bin/python -m peers.flower_fedavg --model=small_cnn --rounds=20

The launcher's chief runs Flower's server (flwr.server.start_server, Flower's gRPC
transport) on the chief's address; each worker is one long-lived Flower client node
(flwr.client.start_client) that holds the logical clients the suite's FedAvg would
give its executor service (client k on node k mod N) and trains those the server
samples for it, one after another, with Keras fit. Each round the server sends the
model to every node with a sampled client and gets every sampled client's weights and
example count back; Flower's own weighted mean (flwr.server.strategy.aggregate)
makes the new model.

Why the legacy start_server/start_client API (deprecated since Flower 1.13, still in
1.23) and not the SuperLink/SuperNode deployment engine: it runs in the processes the
suite's launcher starts, with a Server subclass that stops at the target and writes
the suite's records; the deployment engine needs Flower's own app packaging and
`flwr run`, and its nodes hold one partition each, where the suite's services hold
many clients. The flags are the suite's FedAvg trainer's (trainers/federated/config.py);
what has no Flower counterpart here (other algorithms, aggregators, DP, dropout,
server optimizers) is refused with one line.
"""

import os
import sys
import time

from absl import flags

from cluster import approaches
from cluster.errors import ConfigError
from cluster.tf_config import TaskInfo, parse_tf_config
from trainers.common import config as config_lib
from trainers.common import entry, lifecycle
from trainers.federated import clients as clients_lib
from trainers.federated import fedmath
from trainers.federated import config as fed_config

LABEL = "flower_fedavg"
# Flower reports usage events to its own telemetry server by default: nothing here
# leaves the job's own addresses.
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"


def quiet_flower() -> None:
  """Flower logs every message of every round at INFO (and the legacy API's deprecation
  at WARNING) to the console: the task logs keep the suite's lines and real errors."""
  import logging  # pylint: disable=g-import-not-at-top
  from flwr.common import logger  # pylint: disable=g-import-not-at-top  # sets DEBUG on import
  logger.FLOWER_LOGGER.setLevel(logging.ERROR)
CONNECT_TIMEOUT_S = 300.0  # every node dials in (TF's start-up on a busy host is slow)


def check(config: fed_config.Config) -> None:
  """ConfigError (one line) for what this peer does not do."""
  plain = fed_config.Config(train=config.train, num_clients=config.num_clients,
                            clients_per_round=config.clients_per_round,
                            local_epochs=config.local_epochs,
                            local_batch_size=config.local_batch_size, rounds=config.rounds,
                            client_learning_rate=config.client_learning_rate,
                            eval_every=config.eval_every)
  differs = [f for f in ("algorithm", "server_optimizer", "server_learning_rate",
                         "aggregator", "dp_noise_multiplier", "client_dropout",
                         "client_data_dir", "client_scores")
             if getattr(config, f) != getattr(plain, f)]
  if differs:
    raise ConfigError(f"{LABEL} runs plain FedAvg (client SGD, server mean at rate 1); "
                      f"drop --{', --'.join(differs)}")
  if config.eval_every != 1:
    raise ConfigError(f"{LABEL} evaluates every round, as the suite's FedAvg row does; "
                      "drop --eval_every")


def split_updates(arrays: list, num_layers: int, sizes: list[int]) -> list[tuple[list, int]]:
  """A node's reply (its clients' weights, one model after another) -> [(weights,
  examples)] per client, for Flower's weighted mean."""
  if len(arrays) != num_layers * len(sizes):
    raise ValueError(f"a node sent {len(arrays)} arrays for {len(sizes)} client(s) of "
                     f"{num_layers} layers")
  return [(arrays[i * num_layers:(i + 1) * num_layers], n) for i, n in enumerate(sizes)]


def serve(config: fed_config.Config, task: TaskInfo, flag_values: dict | None) -> dict:
  """The chief: Flower's server; returns the summary."""
  import flwr as fl  # pylint: disable=g-import-not-at-top
  from trainers.common import session, startup, volume  # pylint: disable=g-import-not-at-top
  startup.mark("import")
  num_nodes, cfg = task.num_workers, config.train
  with session.open_run(cfg, task, LABEL, num_nodes, flag_values, train_split=False) as run_:
    initial = [w.numpy() for w in run_.model_fn().weights]
    num_params = sum(int(w.size) for w in initial)
    progress = run_.start_progress(steps_per_epoch=1, examples_per_step=0,
                                   epochs=config.rounds)  # rounds count themselves
    strategy = _strategy(fl, config, num_nodes, len(initial))
    server = _server(fl, strategy, initial, num_nodes, progress, run_.score)
    run_.announce(f"Flower {fl.__version__} server (legacy start_server API), {num_nodes} "
                  f"client node(s), {config.num_clients} clients, {config.clients_per_round} "
                  f"a round, E={config.local_epochs}, B={config.local_batch_size}, model "
                  f"{cfg.model}")
    fl.server.start_server(server_address=task.address, server=server,
                           config=fl.server.ServerConfig(num_rounds=config.rounds))
    rounds_run = len(progress.history)
    by_task = volume.per_client_upload_tasks(num_params, strategy.rounds_served,
                                             strategy.clients_served)
    return run_.finish(
        peer="flower", flower_version=fl.__version__, rounds_run=rounds_run,
        rounds=config.rounds, num_clients=config.num_clients,
        clients_per_round=config.clients_per_round, local_epochs=config.local_epochs,
        local_batch_size=config.local_batch_size,
        client_learning_rate=config.client_learning_rate,
        round_time_s=(progress.train_time_s / rounds_run) if rounds_run else None,
        **fedmath.steady_rounds(progress.history),
        bytes_analytic_per_worker=sum(by_task[f"worker:{i}"]["sent"]
                                      for i in range(num_nodes)) / num_nodes,
        bytes_analytic_by_task=by_task)


def _strategy(fl, config: fed_config.Config, num_nodes: int, num_layers: int):
  """Flower's FedAvg strategy with the suite's sample of clients each round, sent to
  the nodes that hold them, and Flower's own weighted mean over every client."""
  from flwr.server.strategy.aggregate import aggregate  # pylint: disable=g-import-not-at-top

  class Strategy(fl.server.strategy.FedAvg):
    def __init__(self):
      super().__init__(fraction_fit=1.0, fraction_evaluate=0.0,
                       min_available_clients=num_nodes, min_fit_clients=1)
      self.nodes: dict[int, object] = {}  # node index -> its ClientProxy
      self.rounds_served, self.clients_served = [0] * num_nodes, [0] * num_nodes
      self.last = (0, 0.0, 0.0)  # the last round's examples, mean loss and accuracy

    def configure_fit(self, server_round, parameters, client_manager):
      sampled = fedmath.sample_clients(config.num_clients, config.clients_per_round,
                                       server_round, config.train.seed)
      groups = clients_lib.by_service(sampled, num_nodes)
      return [(self.nodes[i], fl.common.FitIns(parameters, {
          "clients": ",".join(map(str, g)), "round": server_round}))
              for i, g in enumerate(groups) if g]

    def aggregate_fit(self, server_round, results, failures):
      if failures:
        raise RuntimeError(f"{LABEL}: round {server_round}: {len(failures)} node(s) "
                           f"failed: {failures[0]!r}")
      updates, losses, hits = [], [], []
      for proxy, res in results:
        sizes = [int(x) for x in res.metrics["sizes"].split(",")]
        updates += split_updates(fl.common.parameters_to_ndarrays(res.parameters),
                                 num_layers, sizes)
        losses += [float(x) for x in res.metrics["losses"].split(",")]
        hits += [float(x) for x in res.metrics["accuracies"].split(",")]
        node = next(i for i, p in self.nodes.items() if p is proxy)
        self.rounds_served[node] += 1
        self.clients_served[node] += len(sizes)
      total = sum(n for _, n in updates)
      self.last = (total, sum(l * n for l, (_, n) in zip(losses, updates)) / total,
                   sum(a * n for a, (_, n) in zip(hits, updates)) / total)
      return fl.common.ndarrays_to_parameters(aggregate(updates)), {}

  return Strategy()


def _server(fl, strategy, initial: list, num_nodes: int, progress, score):
  """Flower's Server with its round loop (Server.fit) keeping the suite's records
  (round time, evaluation of the whole test split every round) and stopping at the
  target."""

  class StopAtTarget(fl.server.Server):
    def fit(self, num_rounds, timeout):
      manager = self.client_manager()
      if not manager.wait_for(num_nodes, timeout=CONNECT_TIMEOUT_S):
        raise RuntimeError(f"{LABEL}: {manager.num_available()} of {num_nodes} node(s) "
                           f"connected within {CONNECT_TIMEOUT_S:.0f}s")
      for proxy in manager.all().values():  # which node holds which clients
        props = proxy.get_properties(fl.common.GetPropertiesIns({}), timeout=60,
                                     group_id=None)
        strategy.nodes[int(props.properties["node"])] = proxy
      self.parameters = fl.common.ndarrays_to_parameters(initial)
      started = time.perf_counter()
      for r in range(1, num_rounds + 1):
        t = time.perf_counter()
        new, _, (_, failures) = self.fit_round(server_round=r, timeout=None)
        if failures:
          raise RuntimeError(f"{LABEL}: round {r} failed on {len(failures)} node(s)")
        self.parameters = new
        weights = fl.common.parameters_to_ndarrays(new)
        examples, loss, accuracy = strategy.last
        progress.end_round(r, num_rounds, loss, accuracy, examples, time.perf_counter() - t,
                           evaluate=lambda w=weights: score(w))
        if progress.should_stop:
          break
      return fl.server.History(), time.perf_counter() - started

  return StopAtTarget(client_manager=fl.server.SimpleClientManager(), strategy=strategy)


def node_clients(train, config: fed_config.Config, index: int, num_nodes: int) -> dict:
  """Client k -> its examples, for the clients node `index` holds: the suite's partition
  (same function, seed and --partition) and the suite's placement (k on k mod N)."""
  from trainers.common import partition  # pylint: disable=g-import-not-at-top
  cfg = config.train
  parts = partition.partition(cfg.partition, train.y, config.num_clients, cfg.seed,
                              cfg.dirichlet_alpha)
  return {k: train.take(parts[k]) for k in range(config.num_clients)
          if clients_lib.owner(k, num_nodes) == index}


def node(config: fed_config.Config, task: TaskInfo) -> None:
  """A worker: one Flower client node serving the logical clients it holds."""
  import flwr as fl  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from models import build_model  # pylint: disable=g-import-not-at-top
  from trainers.common import data, model  # pylint: disable=g-import-not-at-top
  fed, cfg, index, num_nodes = config, config.train, task.task_index, task.num_workers
  train = data.load_split(cfg.dataset, "train", cfg.data_dir, cfg.synthetic_examples)
  mine = node_clients(train, config, index, num_nodes)
  tf.keras.utils.set_random_seed(cfg.seed)
  net = build_model(cfg.model)
  net.compile(optimizer=tf.keras.optimizers.SGD(config.client_learning_rate),
              loss=model.keras_loss(), metrics=["accuracy"])

  class Node(fl.client.NumPyClient):
    def get_properties(self, config):  # pylint: disable=redefined-outer-name
      del config
      return {"node": index}

    def fit(self, parameters, config):  # pylint: disable=redefined-outer-name
      weights, sizes, losses, hits = [], [], [], []
      for k in (int(x) for x in str(config["clients"]).split(",")):
        net.set_weights(parameters)
        seed = clients_lib.client_seed(cfg.seed, int(config["round"]), k)
        history = net.fit(clients_lib.client_dataset(mine[k], fed.local_batch_size,
                                                     fed.local_epochs, seed), verbose=0)
        weights += net.get_weights()
        sizes.append(len(mine[k]) * fed.local_epochs)
        losses.append(history.history["loss"][-1])
        hits.append(history.history["accuracy"][-1])
      return weights, sum(sizes), {"sizes": ",".join(map(str, sizes)),
                                   "losses": ",".join(f"{l:.6g}" for l in losses),
                                   "accuracies": ",".join(f"{a:.6g}" for a in hits)}

  server = task.cluster["chief"][0]
  lifecycle.wait_listening(server, CONNECT_TIMEOUT_S, "the Flower server")
  fl.client.start_client(server_address=server,
                         client=Node().to_client(), insecure=True)


def main(argv: list[str] | None = None) -> int:
  def run_from_flags(fv: flags.FlagValues) -> None:
    config = fed_config.Config.from_flags(fv, approaches.FEDAVG.name)
    check(config)
    task = parse_tf_config(os.environ.get("TF_CONFIG"))
    if task.num_workers < 1:
      raise ConfigError(f"{LABEL} needs client nodes: --num_workers >= 1")
    quiet_flower()
    if task.task_type == "chief":
      serve(config, task, config_lib.flag_dict(fv))
    else:
      node(config, task)

  return entry.run_main(fed_config.define_flags, run_from_flags, argv,
                        approach=approaches.FEDAVG.name)


if __name__ == "__main__":
  sys.exit(main())
