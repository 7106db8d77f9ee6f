"""FedAvg's MapReduceForm backend (--fedavg_backend=mapreduce): TFF compiles the learning
process's round into plain TensorFlow graphs, and TF's own runtime runs them.

`tff.backends.mapreduce.get_map_reduce_form_for_computation(process.next)` splits a
round into prepare (server) -> work (each client) -> zero/accumulate (each client's
update into a partial aggregate) -> merge -> report -> update (server), each a TF
GraphDef with named inputs and outputs; the state's initial value is one more graph.
TFF documents this form for running a learning process on systems that run only
TensorFlow. Here:

- every executor-service task is a `tf.distribute.Server` (TF's gRPC runtime) holding
  its own clients' files;
- the chief builds one round graph: prepare, merge, report and update on itself; on
  each service, `slots` copies of `work` (one per client it may train in a round, each
  with its own variables) chained through `accumulate`, in `lanes` of clients trained
  one after another (a lane per core of the service's share),
  each reading its client's file there through the same pipeline as the native
  backend (federation.py);
- a round is one `session.run`: the broadcast model crosses to each service once
  (TF sends a tensor once per device pair and step), each service's partial aggregate
  comes back once, and the clients run on TF's kernels (oneDNN where TF enables it,
  grappler's rewrites), a lane per core.

A slot without a client this round reads nothing (`take(0)`): its update is zero with
weight zero. With `wire_bits` (--aggregator=compression) a service's partial aggregate
leaves it quantized. Processes whose round has no MapReduceForm (SCAFFOLD keeps client state;
secure aggregation needs secure sums this backend does not run) are refused with one
line (config.py; form_of for any other process without a MapReduceForm).
"""

import contextlib
import dataclasses
import os
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.types import type_conversions

from cluster.errors import ConfigError
from trainers.federated import executors


@dataclasses.dataclass(frozen=True)
class Graph:
  """One TF computation of the form: its graph, flat input/output tensor names (a
  dataset input is its variant tensor), the op that initialises its variables."""
  graph_def: tf.compat.v1.GraphDef
  inputs: tuple[str, ...]
  outputs: tuple[str, ...]
  init_op: str | None


def _names(binding) -> list[str]:
  """A TFF TensorFlow.Binding flattened to tensor names, in TFF's struct order."""
  kind = binding.WhichOneof("binding")
  if kind == "tensor":
    return [binding.tensor.tensor_name]
  if kind == "sequence":
    return [binding.sequence.variant_tensor_name]
  if kind == "struct":
    return [n for element in binding.struct.element for n in _names(element)]
  return []


def compiled(comp) -> Graph:
  """`comp` (a TF computation of the form) as a Graph."""
  proto = computation_impl.ConcreteComputation.get_proto(comp).tensorflow
  graph_def = tf.compat.v1.GraphDef()
  proto.graph_def.Unpack(graph_def)
  return Graph(graph_def, tuple(_names(proto.parameter)), tuple(_names(proto.result)),
               proto.initialize_op or None)


@dataclasses.dataclass(frozen=True)
class Form:
  """The round as plain TF graphs, and the TFF types to pack their flat results in."""
  initialize: Graph
  prepare: Graph
  work: Graph
  zero: Graph
  accumulate: Graph
  merge: Graph
  report: Graph
  update: Graph
  state_type: object
  update_type: object


def form_of(process: tff.learning.templates.LearningProcess) -> Form:
  """TFF's MapReduceForm of `process` (a round whose clients get datasets); ConfigError
  when the round has none, or needs secure sums."""
  executors.check_tff_version()  # the computation protos' layout is TFF's internal
  try:
    mrf = tff.backends.mapreduce.get_map_reduce_form_for_computation(process.next)
    init = tff.backends.mapreduce.get_state_initialization_computation(process.initialize)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"--fedavg_backend=mapreduce: this process has no MapReduceForm "
                      f"({str(e).splitlines()[0][:200]}); use --fedavg_backend=native") from e
  graphs = {name: compiled(getattr(mrf, name)) for name in (
      "prepare", "work", "zero", "accumulate", "merge", "report", "update")}
  if compiled(mrf.secure_sum_bitwidth).outputs or len(graphs["accumulate"].inputs) != (
      len(graphs["zero"].outputs) + len(graphs["work"].outputs)):
    raise ConfigError("--fedavg_backend=mapreduce: this process aggregates with secure "
                      "sums, which this backend does not run; use --fedavg_backend=native")
  return Form(initialize=compiled(init), **graphs,
              state_type=init.type_signature.result,
              update_type=mrf.update.type_signature.result)


def import_graph(g: Graph, inputs: Sequence[tf.Tensor], scope: str
                 ) -> tuple[list[tf.Tensor], tf.Operation | None]:
  """g's outputs with `inputs` wired in, under `scope` (into the default graph, on
  the current device); its variables get names of their own, so copies imported
  side by side never share one, nor do their loops' frames."""
  if len(inputs) != len(g.inputs):
    raise ValueError(f"{scope}: {len(inputs)} inputs for {len(g.inputs)}")
  graph_def = tf.compat.v1.GraphDef()
  graph_def.CopyFrom(g.graph_def)
  for node in graph_def.node:
    if node.op == "VarHandleOp":
      node.attr["shared_name"].s = f"{scope}/{node.attr['shared_name'].s.decode()}".encode()
    if node.op in ("Enter", "RefEnter"):  # a loop's frame is named by an attr, not by scope
      node.attr["frame_name"].s = f"{scope}/{node.attr['frame_name'].s.decode()}".encode()
  wanted = list(g.outputs) + ([g.init_op] if g.init_op else [])
  found = tf.compat.v1.import_graph_def(graph_def, input_map=dict(zip(g.inputs, inputs)),
                                        return_elements=wanted, name=scope)
  return list(found[:len(g.outputs)]), (found[-1] if g.init_op else None)


def flat(value) -> list[np.ndarray]:
  """A TFF value (the state) as its flat leaves, in TFF's order."""
  return [np.asarray(v) for v in structure.flatten(structure.from_container(value,
                                                                            recursive=True))]


def packed(values: Sequence, type_spec):
  """Flat leaves back into the Python containers of `type_spec`."""
  return type_conversions.type_to_py_container(
      structure.pack_sequence_as(type_spec, list(values)), type_spec)


def placeholders(g: Graph) -> list[tf.Tensor]:
  """Placeholders like g's inputs: dtype and shape."""
  nodes = {n.name: n for n in g.graph_def.node}
  out = []
  for name in g.inputs:
    node = nodes[name.split(":")[0]]
    out.append(tf.compat.v1.placeholder(
        tf.as_dtype(node.attr["dtype"].type),
        tf.TensorShape(node.attr["shape"].shape) if "shape" in node.attr else None))
  return out


@dataclasses.dataclass
class Output:
  """What process.next returns: the new state and the round's metrics."""
  state: object
  metrics: dict


# Tensors of the partial aggregate at least this large cross the wire quantized (TFF's
# quantize_above_threshold default); smaller ones (weights, metrics, biases) as they are.
QUANTIZE_ABOVE = 20_000


def quantize(x: tf.Tensor, bits: int, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """x as `bits`-bit integers over [min, max] with stochastic rounding (unbiased: the
  expected dequantized value is x), seeded; (codes, min, max)."""
  lo, hi = tf.reduce_min(x), tf.reduce_max(x)
  levels = float(2 ** bits - 1)
  scaled = (x - lo) / tf.maximum(hi - lo, 1e-30) * levels
  noise = tf.random.stateless_uniform(tf.shape(x), seed)
  codes = tf.clip_by_value(tf.floor(scaled + noise), 0.0, levels)
  return tf.cast(codes, tf.uint8 if bits <= 8 else tf.uint16), lo, hi


def dequantize(codes: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor, bits: int) -> tf.Tensor:
  return tf.cast(codes, tf.float32) / float(2 ** bits - 1) * (hi - lo) + lo


def lanes(num_services: int, cores: int | None = None) -> int:
  """Clients a service trains at once: its share of the host's cores (the launcher's
  CPU budget gives each of N services on a host cores / N intra-op threads), at least 1.
  Measured on 2 cores, 10 clients in one process (docs/probe_mapreduce_round.py): all
  ten at once stalled for whole seconds at times and ran 1.4x slower than one at a
  time; two at a time (a lane a core) ran 1.3-1.9x faster than one at a time."""
  cores = cores or len(os.sched_getaffinity(0))
  return max(1, cores // max(1, num_services))


def _after(done: Sequence[tf.Tensor], tensors: Sequence[tf.Tensor]) -> list[tf.Tensor]:
  """`tensors`, available only once `done` are computed: a lane's clients train one
  after another."""
  with tf.control_dependencies(done):
    return [tf.identity(t) for t in tensors]


class RoundGraph:
  """The round as one TF graph over the chief (`server`) and the services' devices
  (`devices`, `slots` clients each at most): `init` then `outputs` with `feed(...)` is
  one round.
  With `wire_bits`, each service's partial aggregate leaves it quantized (its float
  tensors of QUANTIZE_ABOVE elements or more) and the chief dequantizes it. A service
  trains `lanes` clients at once (slot j after slot j - lanes)."""

  def __init__(self, form: Form, server: str, devices: Sequence[str], slots: int,
               pipeline, wire_bits: int | None = None, lanes: int = 1):
    self.form, self.slots, self.lanes = form, slots, lanes
    self.graph = tf.Graph()
    with self.graph.as_default():
      with tf.device(server):
        self.state = placeholders(form.prepare)
        self.round_seed = tf.compat.v1.placeholder(tf.int64, (), "round_seed")
        broadcast, _ = import_graph(form.prepare, self.state, "prepare")
      self.clients, partials, self.inits = [], [], []
      for s, device in enumerate(devices):
        with tf.device(device):
          partial = self._service(s, broadcast, pipeline)
        partials.append(self._wire(partial, s, device, server, wire_bits)
                        if wire_bits else partial)
      with tf.device(server):
        merged = partials[0]
        for i, partial in enumerate(partials[1:]):
          merged, _ = import_graph(form.merge, merged + partial, f"merge_{i}")
        reported, _ = import_graph(form.report, merged, "report")
        self.outputs, update_init = import_graph(form.update, self.state + reported, "update")
      self.inits.append(update_init)
      self.init = tf.group(*[op for op in self.inits if op is not None])

  def _wire(self, partial: list[tf.Tensor], s: int, device: str, server: str,
            bits: int) -> list[tf.Tensor]:
    """The partial aggregate quantized on the service, dequantized on the chief."""
    out = []
    for i, x in enumerate(partial):
      if x.dtype != tf.float32 or x.shape.num_elements() is None or (
          x.shape.num_elements() < QUANTIZE_ABOVE):
        out.append(x)
        continue
      with tf.device(device):
        codes, lo, hi = quantize(x, bits, tf.stack([self.round_seed, s * 1_000 + i]))
      with tf.device(server):
        out.append(dequantize(codes, lo, hi, bits))
    return out

  def _service(self, s: int, broadcast, pipeline) -> list[tf.Tensor]:
    """Service s: `slots` clients' work chained into its partial aggregate."""
    acc, _ = import_graph(self.form.zero, [], f"s{s}_zero")
    slots, lane_last = [], [[] for _ in range(self.lanes)]
    for j in range(self.slots):
      path = tf.compat.v1.placeholder(tf.string, (), f"s{s}_c{j}_path")
      seed = tf.compat.v1.placeholder(tf.int64, (), f"s{s}_c{j}_seed")
      take = tf.compat.v1.placeholder(tf.int64, (), f"s{s}_c{j}_take")
      variant = tf.data.experimental.to_variant(pipeline(path, seed).take(take))
      update, init = import_graph(self.form.work,
                                  [variant] + _after(lane_last[j % self.lanes], broadcast),
                                  f"s{s}_c{j}_work")
      lane_last[j % self.lanes] = update
      summed, _ = import_graph(self.form.accumulate, acc + update, f"s{s}_c{j}_acc")
      for total, before in zip(summed, acc):  # shapes lost in the client's loop: the
        total.set_shape(before.shape)         # wire's quantizer needs them (`_wire`)
      acc = summed
      self.inits.append(init)
      slots.append((path, seed, take))
    self.clients.append(slots)
    return acc

  def feed(self, state, groups: Sequence[Sequence[dict]], round_seed: int = 0) -> dict:
    """The round's feeds: the state, the round's seed (the wire's rounding), and per
    service its clients' (path, seed) in its first slots; a slot without a client
    reads its service's first client's file and takes nothing."""
    feed = dict(zip(self.state, flat(state)))
    feed[self.round_seed] = round_seed
    if len(groups) != len(self.clients):
      raise ValueError(f"{len(groups)} groups of clients for {len(self.clients)} services")
    for slots, clients in zip(self.clients, groups):
      if len(clients) > self.slots:
        raise ValueError(f"{len(clients)} clients for {self.slots} slots")
      idle = clients[0]["path"] if clients else ""
      for j, (path, seed, take) in enumerate(slots):
        client = clients[j] if j < len(clients) else None
        feed[path] = client["path"] if client else idle
        feed[seed] = client["seed"] if client else 0
        feed[take] = -1 if client else 0
    return feed


def _run_graph(g: Graph) -> list[np.ndarray]:
  """A graph without inputs (the state's initial value), run once in this process."""
  graph = tf.Graph()
  with graph.as_default():
    outputs, init = import_graph(g, [], "initialize")
  with tf.compat.v1.Session(graph=graph) as session:
    if init is not None:
      session.run(init)
    return session.run(outputs)


class MapReduceProcess:
  """A TFF learning process run as its MapReduceForm (process.FederatedProcess): the
  round graph in one TF session whose target is the chief's server (`target`; "" in
  process), the clients on `devices` (one per service), the server's part on `server`.
  `groups(sizes)` around `next` says how many of the round's clients each service
  trains (the service pool's interface, rounds.Clients.grouped). `wire_bits`: the
  services' partial aggregates cross the wire quantized (RoundGraph)."""
  messages_per_direction = 1
  client_state_messages = 0

  def __init__(self, process, target: str, server: str, devices: Sequence[str], slots: int,
               pipeline, wire_bits: int | None = None, lanes: int = 1):
    self.form = form_of(process)
    self._state_type = process.initialize.type_signature.result.member
    self._round = RoundGraph(self.form, server, devices, slots, pipeline, wire_bits, lanes)
    self._session = tf.compat.v1.Session(target, graph=self._round.graph)
    self._sizes: list[int] | None = None

  def initialize(self):
    return packed(_run_graph(self.form.initialize), self._state_type)

  def get_model_weights(self, state):
    return state.global_model_weights

  @contextlib.contextmanager
  def groups(self, sizes: Sequence[int]):
    self._sizes = list(sizes)
    try:
      yield
    finally:
      self._sizes = None

  def next(self, state, datasets: Sequence[dict], client_ids: Sequence[int]) -> Output:
    """One round: `datasets` are the clients' CLIENT_ARGs (federation.client_args),
    service by service in groups of `groups`' sizes."""
    del client_ids
    sizes = self._sizes or [len(datasets)]
    starts = np.cumsum([0] + sizes)
    groups = [datasets[a:b] for a, b in zip(starts[:-1], starts[1:])]
    self._session.run(self._round.init)
    # The wire's rounding is seeded by the round's first client seed (clients.client_seed:
    # a function of --seed, the round and the client), so a resumed round repeats it.
    round_seed = int(datasets[0]["seed"]) if datasets else 0
    values = self._session.run(self._round.outputs,
                               self._round.feed(state, groups, round_seed))
    n = len(self._round.state)
    return Output(packed(values[:n], self._state_type),
                  packed(values[n:], self.form.update_type[1]))

  def read_clients(self, wrap, scored: bool = True) -> None:
    raise NotImplementedError("the mapreduce round reads its clients itself")

  def save_clients(self, directory: str, round_num: int) -> None:
    del directory, round_num

  prune_clients = load_clients = save_clients

  def close(self) -> None:
    self._session.close()
