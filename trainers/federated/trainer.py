"""Federated averaging (McMahan et al. 2017) with TensorFlow Federated.

The training set is split into --num_clients clients (--partition=iid|shards|
dirichlet, trainers/common/partition.py). Each round the server samples --clients_per_round of
them (seeded), broadcasts its model, each client runs --local_epochs of SGD in
batches of --local_batch_size, and the server moves by the example-weighted average
of the client updates (`tff.learning.algorithms.build_weighted_fed_avg`; server SGD
with lr 1.0 is plain FedAvg). --algorithm=fedprox|fedsgd, --server_optimizer=momentum|
adam|yogi|adagrad, --aggregator=compression, --dp_noise_multiplier and
--client_dropout choose other recipes (process.py, aggregators.py, scaffold.py).

    python -m launch.local --approach=fedavg --num_workers=2 -- --model=fedavg_2nn --rounds=10

The clients' data never reaches the chief. Each executor service's task first
writes its own clients (client k is service k mod N's) from its own copy of the
training split, then becomes TFF's executor service; a round sends it the model and
its clients' file names and seeds, and it reads, trains and sums them itself
(clients.py, federation.py), returning one partial aggregate; the chief merges them
on its own private service (pool.py, executors.py). The chief reads the test split
only. With --num_workers=0 the chief is the clients' host: it writes every client and
runs them on its private service. The rounds are rounds.py, the checkpoint
checkpoint.py, the math fedmath.py.
The paper's Table 2 settings are one command line, e.g. CNN, IID, C=0.1, E=5, B=10:
    -- --model=fedavg_cnn --partition=iid --clients_per_round=10 --local_epochs=5 \
       --local_batch_size=10
"""

import dataclasses
import os

import tensorflow as tf
import tensorflow_federated as tff

from cluster.errors import ConfigError
from cluster.tf_config import TaskInfo, port_of
from trainers.common import data, entry, model, session, volume
from trainers.common import server as server_lib
from trainers.federated import checkpoint, clients as clients_lib, executors, federation
from trainers.federated import fedmath
from trainers.federated import process as process_lib, rounds
from trainers.federated import config as approach_config
from trainers.federated.config import APPROACH

FedAvgConfig = approach_config.Config  # TF-free: the launcher checks it too


def build_process(model_fn, element_spec, config: FedAvgConfig) -> process_lib.FederatedProcess:
  """The learning process (process.build) for a Keras model builder."""
  def tff_model_fn():
    return tff.learning.models.from_keras_model(
        model_fn(), input_spec=element_spec, loss=model.keras_loss(),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
  return process_lib.build(config, tff_model_fn)


def federated_process(model_fn, config: FedAvgConfig) -> process_lib.FederatedProcess:
  """The learning process whose rounds read the clients' data where it lives
  (federation.reading_clients)."""
  process = build_process(model_fn, federation.element_spec(), config)
  make_data = federation.client_data(config.local_batch_size, config.local_epochs)
  process.read_clients(lambda next_comp, weights: federation.reading_clients(
      next_comp, make_data, weights, federation.scorer(
          model_fn, weights.type_signature.result, config.clients_per_round)
      if config.client_scores else None), scored=config.client_scores)
  return process


def write_clients(config: FedAvgConfig, service: int, services: int, train=None) -> list[int]:
  """This host's clients (service `service` of `services`; 0 of 0: every client)
  written from `train`, else from this host's training split (--client_data_dir)."""
  cfg = config.train
  if train is None:
    train = data.load_split(cfg.dataset, "train", config.client_data_dir or cfg.data_dir,
                            cfg.synthetic_examples)
  try:
    return clients_lib.write_service_clients(train, cfg, config.num_clients, service,
                                             services)
  except ValueError as e:  # e.g. more clients than examples: a flag's fault
    raise ConfigError(str(e)) from e


def serve_clients(config: FedAvgConfig, task: TaskInfo) -> None:
  """A service task, before it becomes the executor service: writes its own clients."""
  mine = write_clients(config, task.task_index, len(task.cluster["worker"]))
  print(f"[{APPROACH}] {task.name}: {len(mine)} clients written to "
        f"{clients_lib.service_dir(config.train.run_dir, task.task_index)}", flush=True)


def describe(config: FedAvgConfig, num_params: int, where: str) -> str:
  """The run's set-up in one line."""
  cfg = config.train
  dropout = f", client dropout {config.client_dropout:g}" if config.client_dropout else ""
  return (f"{config.num_clients} clients ({cfg.partition}), {config.clients_per_round}/round, "
          f"E={config.local_epochs}, B={config.local_batch_size}, {config.rounds} rounds, "
          f"model {cfg.model} ({num_params} params), {config.algorithm}, server "
          f"{config.server_optimizer} lr {config.server_learning_rate:g}, aggregator "
          f"{'dp' if config.private else config.aggregator}{dropout}, backend "
          f"{config.backend}; running {where}")


def summary_fields(run_: session.Run, config: FedAvgConfig, num_params: int, process,
                   clients: rounds.Clients, last_round: int) -> dict:
  """FedAvg's own summary.json fields: its recipe, rounds and bytes per round."""
  cfg, history = config.train, run_.progress.history
  messages = process.messages_per_direction
  served = (num_params, clients.rounds_served, clients.clients_served)
  by_state = dict(messages=messages, client_messages=process.client_state_messages)
  upload = volume.fedavg_upload(num_params, config.clients_per_round, messages)
  reached = run_.progress.target.reached
  recipe = {k: getattr(config, k) for k in (
      "rounds", "num_clients", "clients_per_round", "local_epochs", "local_batch_size",
      "client_learning_rate", "server_optimizer", "server_learning_rate", "algorithm",
      "proximal_strength", "aggregator", "client_dropout")}
  return dict(
      recipe, fedavg_backend=config.backend, rounds_run=last_round, partition=cfg.partition,
      **rounds.final_extras(history, config, num_params),
      rounds_to_target=reached["steps_to_target"] if reached else None,
      round_time_s=run_.progress.train_time_s / max(len(history), 1),
      **fedmath.steady_rounds(history),
      bytes_broadcast_per_round=volume.fedavg_broadcast(num_params, config.clients_per_round,
                                                        messages),
      bytes_uploaded_per_round=upload,
      bytes_uploaded_per_client=upload * last_round / config.num_clients,
      bytes_analytic_per_worker=volume.fedavg(*served, **by_state),
      bytes_analytic_by_task=volume.fedavg_tasks(*served, run_.num_workers, **by_state),
      notes=f"{last_round} rounds x {config.clients_per_round} clients, "
            f"E={config.local_epochs} B={config.local_batch_size}, {cfg.partition}")


def native_backend(addresses: list[str], merge_address: str | None = None):
  """The process factory of the native backend: TFF's context over the executor
  services at `addresses` (several: merging on the chief's own service at
  `merge_address`; one: the whole round there)."""
  def make(run_: session.Run, config: FedAvgConfig):
    pool = executors.install_context(addresses, merge_address=merge_address)
    return federated_process(run_.model_fn, config), pool
  return make


def mapreduce_backend(target: str, server: str, devices: list[str]):
  """The process factory of the mapreduce backend: the round graph in a session on
  `target`, the clients on `devices` (one per service), the server's part on `server`."""
  def make(run_: session.Run, config: FedAvgConfig):
    from trainers.federated import mapreduce  # pylint: disable=g-import-not-at-top
    # --aggregator=compression acts on the wire here: the clients' updates are summed
    # exactly on their service, and the service's partial aggregate leaves it quantized.
    compressed = config.aggregator == "compression"
    exact = dataclasses.replace(config, aggregator="mean") if compressed else config
    # A service's client slots: the most it trains in any round of this run (at N
    # services about C/N, not C: every slot is built, optimized and run each round).
    slots = rounds.busiest_service(config, run_.config.seed, len(devices))
    process = mapreduce.MapReduceProcess(
        build_process(run_.model_fn, federation.element_spec(), exact)._process,  # pylint: disable=protected-access
        target, server, devices, slots,
        federation.client_pipeline(config.local_batch_size, config.local_epochs),
        wire_bits=approach_config.COMPRESSION_BITS if compressed else None,
        lanes=mapreduce.lanes(len(devices)))
    return process, process
  return make


def train(config: FedAvgConfig, task: TaskInfo, backend, where: str, num_workers: int,
          flag_values: dict | None, datasets=None) -> dict:
  """The server's side of FedAvg: `backend(run_, config)` gives the process and the
  pool that groups each round's clients by service (native_backend, mapreduce_backend);
  with num_workers 0 this process is the clients' host."""
  cfg = config.train
  with session.open_run(cfg, task, APPROACH, num_workers, flag_values, datasets,
                        train_split=False) as run_:
    if not num_workers:  # this host holds the clients
      write_clients(config, 0, 0, datasets[0] if datasets else None)
    process, pool = backend(run_, config)
    clients = rounds.Clients(run_, config, num_workers, pool)
    state, start_round = process.initialize(), 0
    ckpt_path = os.path.join(cfg.run_dir, "server_state.npz")

    def restore():
      nonlocal state, start_round
      restored = checkpoint.restore(process, ckpt_path, state)
      if restored:
        state, start_round = restored
        return f"{ckpt_path} after round {start_round}"
      return None

    run_.resume(restore, ckpt_path)
    num_params = sum(w.size for w in rounds.model_weights(process, state))
    run_.start_progress(steps_per_epoch=1, examples_per_step=0)  # rounds count themselves
    run_.announce(describe(config, num_params, where))
    last_round = rounds.train_rounds(run_, process, state, clients, config, start_round,
                                     ckpt_path, num_params)
    return run_.finish(**summary_fields(run_, config, num_params, process, clients,
                                        last_round))


def run(config: FedAvgConfig, task: TaskInfo, flag_values: dict | None = None,
        datasets=None) -> dict:
  """The chief trains; worker tasks write their clients, then become TFF executor
  services or (mapreduce) TF servers, and never return."""
  mapreduce = config.backend == approach_config.MAPREDUCE
  if task.task_type == "worker" and "chief" in task.cluster:
    serve_clients(config, task)
    if mapreduce:
      server_lib.serve(task, APPROACH)  # never returns
    executors.exec_executor_service(port_of(task.address))  # never returns
  if not task.is_chief:
    raise ConfigError(f"approach {APPROACH} runs one chief and executor-service workers, "
                      f"not {task.name}")
  workers = list(task.cluster.get("worker", ())) if "chief" in task.cluster else []
  args = (flag_values, datasets)
  if mapreduce:
    return run_mapreduce(config, task, workers, *args)
  named = f"{len(workers)} executor service(s): {', '.join(workers)}"
  if len(workers) == 1:  # the whole round on the one service: nothing to merge
    return train(config, task, native_backend(workers), named, 1, *args)
  if workers:
    with executors.private_executor_service(counted=False) as merge_address:
      return train(config, task, native_backend(workers, merge_address), named,
                   len(workers), *args)
  with executors.private_executor_service() as address:
    return train(config, task, native_backend([address]),
                 "in-process (private executor service)", 0, *args)


def run_mapreduce(config: FedAvgConfig, task: TaskInfo, workers: list[str],
                  flag_values: dict | None, datasets) -> dict:
  """The chief of the mapreduce backend: a TF server of its own in the services'
  cluster (none in process), the round graph's session on it."""
  local = "/job:localhost/replica:0/task:0/device:CPU:0"
  if not workers:
    return train(config, task, mapreduce_backend("", local, [local]),
                 "in-process (MapReduceForm on TF's runtime)", 0, flag_values, datasets)
  server = tf.distribute.Server(tf.train.ClusterSpec({"chief": [task.address],
                                                      "worker": workers}),
                                job_name="chief", task_index=0, protocol="grpc", start=True)
  devices = [f"/job:worker/replica:0/task:{i}/device:CPU:0" for i in range(len(workers))]
  return train(config, task, mapreduce_backend(
      server.target, "/job:chief/replica:0/task:0/device:CPU:0", devices),
      f"{len(workers)} TF server(s) (MapReduceForm on TF's runtime): {', '.join(workers)}",
      len(workers), flag_values, datasets)


def run_main(argv=None) -> int:
  return entry.trainer_main(approach_config, run, argv)
