"""Where TFF computations run: TFF's C++ executor service (`worker_binary`), which
this code starts and always stops itself, reached through TFF's own remote stubs.

- One process (--num_workers=0): a private worker_binary child on a loopback port,
  behind a sync execution context (what TFF's default local context does, minus
  the child that outlives its parent and holds stdout open).
- One executor service (a launcher `worker` task): the whole round runs there, behind
  a sync context, as in one process.
- N >= 2 executor services (launcher `worker` tasks run worker_binary at the
  addresses in TF_CONFIG): `ServicePool`, TFF's mergeable-computation context with two changes.
  Each service gets exactly its own clients (clients.owner; TFF splits the list in
  equal runs), and only `up_to_merge` runs there: `merge`, `after_merge` and every
  computation that places nothing at the clients (initialize, reading the model) run
  on the chief's own private service. TFF's context runs `merge` and `after_merge` on
  a service, with the first service's whole argument again, so a service uploaded
  about three models a round where the algorithm sends one partial aggregate.
  The chief's calls to its own service stay on its host: they are not counted as
  traffic (TFDIST_UNCOUNTED_PORTS, launch/task_shim.c).
"""

import contextlib
import hashlib
import os
import subprocess
import time
from typing import Iterator, Sequence

from cluster import posix

_GRPC_OPTIONS = [("grpc.max_send_message_length", -1),
                 ("grpc.max_receive_message_length", -1)]
READY_TIMEOUT_S = 60.0


def worker_binary_path() -> str:
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(tff.__file__), "data", "worker_binary")
  if not os.path.isfile(path):
    raise RuntimeError(f"TFF's executor service is missing at {path}")
  return path


def worker_binary_argv(port: int) -> list[str]:
  return [worker_binary_path(), f"--port={port}", "--max_concurrent_computation_calls=-1"]


def exec_executor_service(port: int) -> None:
  """Replaces this process by TFF's executor service: the launcher supervises it directly."""
  argv = worker_binary_argv(port)
  print(f"[fedavg] executor service (worker_binary) on port {port}", flush=True)
  os.execv(argv[0], argv)


UNCOUNTED_PORTS = "TFDIST_UNCOUNTED_PORTS"  # read by launch/task_shim.c at connect()


@contextlib.contextmanager
def private_executor_service(counted: bool = True, cwd: str | None = None) -> Iterator[str]:
  """A worker_binary child for this process alone; yields its address, always reaped.
  counted=False: host-local plumbing (the chief's merge service), not network
  traffic: neither the child nor this process's connections to it are counted."""
  import portpicker  # pylint: disable=g-import-not-at-top
  port = portpicker.pick_unused_port()
  # Listen on loopback only, whatever address the task's own servers bind (the
  # task shim's TFDIST_BIND_ADDRESS): this service is for this process alone.
  env = dict(os.environ, TFDIST_BIND_ADDRESS="127.0.0.1")
  if not counted:
    env.pop("TFDIST_TRAFFIC_DIR", None)
    ports = [p for p in os.environ.get(UNCOUNTED_PORTS, "").split(",") if p]
    os.environ[UNCOUNTED_PORTS] = ",".join(ports + [str(port)])
  proc = subprocess.Popen(worker_binary_argv(port), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          preexec_fn=posix.die_with_parent, env=env, cwd=cwd)
  try:
    yield f"127.0.0.1:{port}"
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def _stub(address: str, timeout_s: float):
  import grpc  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  stub = tff.framework.RemoteExecutorGrpcStub(grpc.insecure_channel(address, _GRPC_OPTIONS))
  deadline = time.monotonic() + timeout_s
  while not stub.is_ready:
    if time.monotonic() > deadline:
      raise RuntimeError(f"TFF executor service at {address} not ready after {timeout_s:g}s")
    time.sleep(0.1)
  return stub


def computation_key(value) -> str:
  """What identifies a computation for the cache: the digest of its serialized proto.
  Not id(): that holds only while TFF hands the same object back for every invocation
  (its compiled-computation cache, an internal that an upgrade may change), and an id
  can be reused by a new object once the old one is gone."""
  from tensorflow_federated.python.core.impl.computation import computation_impl  # pylint: disable=g-import-not-at-top,line-too-long
  proto = computation_impl.ConcreteComputation.get_proto(value)
  return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


def _caching_remote_executor(stub):
  """TFF's RemoteExecutor, except that a computation it has sent once stays on the
  service: TFF sends every invocation's computation afresh, and a round's is some
  300 KB of TF graphs (small_cnn), 40 % of the model it trains, every round."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.computation import computation_base  # pylint: disable=g-import-not-at-top,line-too-long

  class CachingRemoteExecutor(tff.framework.RemoteExecutor):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      self._sent: dict[str, object] = {}  # computation_key -> its value on the service
      self.hits = self.misses = 0

    async def create_value(self, value, type_spec=None):
      if not isinstance(value, computation_base.Computation):
        return await super().create_value(value, type_spec)
      key = computation_key(value)
      if key in self._sent:
        self.hits += 1
      else:
        self.misses += 1
        self._sent[key] = await super().create_value(value, type_spec)  # held: never
        # disposed there (a round's few computations, sent once)
      return self._sent[key]

  return CachingRemoteExecutor(stub)


# The TFF internals this module and its neighbours rely on (BUILD.md, "TFF upgrades"):
# an upgrade must re-check them, so another version refuses to start.
TFF_VERSION = "0.87.0"


def check_tff_version() -> None:
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  if tff.__version__ != TFF_VERSION:
    raise RuntimeError(f"tensorflow_federated {tff.__version__} is not the pinned "
                       f"{TFF_VERSION}: this suite uses TFF internals that an upgrade must "
                       "re-check first (BUILD.md, 'TFF upgrades')")


def _context(address: str, sync: bool, timeout_s: float):
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation  # pylint: disable=g-import-not-at-top,line-too-long
  stub = _stub(address, timeout_s)

  def stack_fn(cardinalities):
    cardinalities = dict(cardinalities)
    cardinalities.setdefault(tff.CLIENTS, 0)  # e.g. initialize() places nothing at clients
    executor = _caching_remote_executor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  cls = tff.framework.SyncExecutionContext if sync else tff.framework.AsyncExecutionContext
  return cls(executor_fn=tff.framework.ResourceManagingExecutorFactory(stack_fn),
             compiler_fn=tff.backends.native.desugar_and_transform_to_native,
             transform_args=tensorflow_computation.transform_args,
             transform_result=tensorflow_computation.transform_result)


def install_context(addresses: Sequence[str], timeout_s: float = READY_TIMEOUT_S,
                    merge_address: str | None = None):
  """Makes TFF run every computation on the executor services at `addresses`: the
  whole of it on the one service, or with `merge_address` (the chief's own service)
  through a ServicePool. Returns the pool (None without one)."""
  from tensorflow_federated.python.core.impl.context_stack import context_stack_impl  # pylint: disable=g-import-not-at-top,line-too-long
  check_tff_version()
  if merge_address is None:
    if len(addresses) != 1:
      raise ValueError("several executor services need the chief's merge service")
    context_stack_impl.context_stack.set_default_context(
        _context(addresses[0], sync=True, timeout_s=timeout_s))
    return None
  from trainers.federated import pool  # pylint: disable=g-import-not-at-top
  ctx = pool.ServicePool([_context(a, sync=False, timeout_s=timeout_s) for a in addresses],
                         _context(merge_address, sync=False, timeout_s=timeout_s))
  context_stack_impl.context_stack.set_default_context(ctx)
  return ctx
