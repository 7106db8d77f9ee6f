"""Analytic communication volume: the bytes each worker *sends* by its approach's
algorithm, from the model size (float32) and the counts of the run. Pure math.

These are the textbook figures the measured bytes (the task shim's counters,
cluster/traffic.py) are compared with. In each scheme a worker receives as much
as it sends, so the same figure stands beside both measured directions:
  ring all-reduce  2(N-1)/N x model bytes per step (reduce-scatter + all-gather);
  parameter server model bytes per worker step pushed (gradients), and as much
                   pulled (variables);
  gossip           degree x model bytes per exchange; asynchronous gossip: every
                   one-sided put (its model to a neighbour, its clock to the chief
                   and neighbours, its final model to the chief) as counted by the
                   run, since a put to a slow peer skips the models offered meanwhile;
  FedAvg           per client: the model broadcast to it and its update uploaded
                   (with its example weight) each round it is sampled. Over TFF's
                   executor services, which host many clients and sum their updates
                   before anything leaves the host: per service and round it takes
                   part in, the model in and one partial aggregate out; the chief
                   the sum over the services. Algorithms that send more than the
                   model (SCAFFOLD: model and control variate) send `messages`
                   model-sized messages each way, and clients whose state the chief
                   keeps (SCAFFOLD's variates) `client_messages` more per client.
What they leave out (and the measured figures include): gRPC and HTTP/2 framing,
headers, the coordination RPCs, and whatever the runtime ships besides the model
(the clients' file names and seeds, the per-client score table).
"""

from cluster.tf_config import task_name

FLOAT32_BYTES = 4


def model_bytes(num_params: int) -> int:
  return FLOAT32_BYTES * int(num_params)


def ring_allreduce(num_params: int, num_workers: int, steps: int) -> float:
  """Per worker, over `steps` all-reduces of the whole gradient."""
  if num_workers < 2:
    return 0.0
  return 2 * (num_workers - 1) / num_workers * model_bytes(num_params) * steps


def parameter_server(num_params: int, worker_steps: float) -> float:
  """Per worker: one gradient push per step it trained (`worker_steps`)."""
  return model_bytes(num_params) * worker_steps


def gossip(num_params: int, degree: int, exchanges: int) -> float:
  """Per worker: its vector to each of `degree` neighbours at every exchange."""
  return model_bytes(num_params) * degree * exchanges


def fedavg_broadcast(num_params: int, clients: int, messages: int = 1) -> int:
  """One round's broadcast: `messages` model-sized messages to each of `clients`."""
  return clients * messages * model_bytes(num_params)


def fedavg_upload(num_params: int, clients: int, messages: int = 1) -> int:
  """One round's upload: each client's `messages` model-sized messages and its
  float32 example weight."""
  return clients * (messages * model_bytes(num_params) + FLOAT32_BYTES)


def fedavg_service(num_params: int, rounds_served: int, clients_served: int = 0,
                   messages: int = 1, client_messages: int = 0) -> float:
  """One executor service, each way: per round it served, the state in (`messages`
  models) and its partial aggregate out; per client it trained, `client_messages`
  models of client state kept by the chief."""
  return model_bytes(num_params) * (messages * rounds_served +
                                    client_messages * clients_served)


def fedavg(num_params: int, rounds_served: list[int], clients_served: list[int],
           messages: int = 1, client_messages: int = 0) -> float:
  """Mean over the executor services of `fedavg_service`."""
  per = [fedavg_service(num_params, r, c, messages, client_messages)
         for r, c in zip(rounds_served, clients_served)]
  return sum(per) / max(1, len(per))


# --- the whole job: every task's analytic bytes, the servers' too --------------------
# task name -> {"sent": bytes, "received": bytes}. On a thin link the busiest task's
# link sets the time, and in PS and FedAvg that is a server, not a worker.

def _both(value: float) -> dict[str, float]:
  return {"sent": float(value), "received": float(value)}


def ring_allreduce_tasks(num_params: int, num_workers: int, steps: int) -> dict:
  """Every worker sends and receives 2(N-1)/N models per step."""
  return {task_name("worker", i): _both(ring_allreduce(num_params, num_workers, steps))
          for i in range(num_workers)}


def parameter_server_tasks(num_params: int, num_workers: int, worker_steps: float,
                           params_by_ps: dict[str, int]) -> dict:
  """Each worker pushes a gradient and pulls the model per step it trained
  (`worker_steps`, per worker); each ps receives its share of every push and sends
  its share of every pull, its share being the parameters it holds."""
  out = {task_name("worker", i): _both(parameter_server(num_params, worker_steps))
         for i in range(num_workers)}
  for ps, held in params_by_ps.items():
    out[ps] = _both(parameter_server(held, worker_steps * num_workers))
  return out


def gossip_tasks(num_params: int, degrees: list[int], exchanges: int) -> dict:
  """Worker i sends its vector to, and receives one from, each of its degrees[i]
  neighbours per exchange."""
  return {task_name("worker", i): _both(gossip(num_params, d, exchanges))
          for i, d in enumerate(degrees)}


def fedavg_tasks(num_params: int, rounds_served: list[int], clients_served: list[int],
                 num_services: int, messages: int = 1, client_messages: int = 0) -> dict:
  """Each executor service `fedavg_service` each way; the chief the sum over them. In
  process (no services) the chief's private service is part of the chief's task, so
  both ends of every message count there."""
  per = [fedavg_service(num_params, r, c, messages, client_messages)
         for r, c in zip(rounds_served, clients_served)]
  if num_services == 0:
    return {task_name("chief", 0): _both(2 * sum(per))}
  out = {task_name("chief", 0): _both(sum(per))}
  for i, v in enumerate(per):
    out[task_name("worker", i)] = _both(v)
  return out


def per_client_upload_tasks(num_params: int, rounds_served: list[int],
                            clients_served: list[int]) -> dict:
  """FedAvg with each client's update sent on its own (Flower): node i receives the
  model once per round it hosts a sampled client and sends back every sampled client's
  weights; the server (chief) the sums. The suite's services instead send one partial
  aggregate per round (fedavg_tasks)."""
  down = [model_bytes(num_params) * r for r in rounds_served]
  up = [model_bytes(num_params) * c for c in clients_served]
  out = {task_name("worker", i): {"sent": float(u), "received": float(d)}
         for i, (d, u) in enumerate(zip(down, up))}
  out[task_name("chief", 0)] = {"sent": float(sum(down)), "received": float(sum(up))}
  return out


def pushes_tasks(sizes: dict[str, int], pushes: list[tuple[str, int, int, int]]) -> dict:
  """One-sided puts (asynchronous gossip): `pushes` = (kind, writer, owner, count) of
  vectors of sizes[kind] float32s each; every put is sent by the writer's task and
  received by the owner's. Returns task -> {sent, received}."""
  out: dict[str, dict[str, float]] = {}
  for kind, writer, owner, count in pushes:
    b = float(count * FLOAT32_BYTES * sizes[kind])
    for task, way in ((task_name("worker", writer), "sent"),
                      (task_name("worker", owner), "received")):
      out.setdefault(task, {"sent": 0.0, "received": 0.0})[way] += b
  return out
