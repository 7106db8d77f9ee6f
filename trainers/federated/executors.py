"""Where TFF computations run: TFF's C++ executor service (`worker_binary`), which
this code starts and always stops itself, reached through TFF's own remote stubs.

- One process (--num_workers=0): a private worker_binary child on a loopback port,
  behind a sync execution context (what TFF's default local context does, minus
  the child that outlives its parent and holds stdout open).
- N executor services (launcher `worker` tasks run worker_binary at the addresses
  in TF_CONFIG): one async context per service, combined with TFF's mergeable-
  computation context, which splits each round's clients across the services and
  merges their partial aggregates.
"""

import contextlib
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


@contextlib.contextmanager
def private_executor_service() -> Iterator[str]:
  """A worker_binary child for this process alone; yields its address, always reaped."""
  import portpicker  # pylint: disable=g-import-not-at-top
  port = portpicker.pick_unused_port()
  proc = subprocess.Popen(worker_binary_argv(port), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          preexec_fn=posix.die_with_parent)
  try:
    yield f"localhost:{port}"
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


def _context(address: str, sync: bool, timeout_s: float):
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation  # pylint: disable=g-import-not-at-top,line-too-long
  stub = _stub(address, timeout_s)

  def stack_fn(cardinalities):
    cardinalities = dict(cardinalities)
    cardinalities.setdefault(tff.CLIENTS, 0)  # e.g. initialize() places nothing at clients
    executor = tff.framework.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  cls = tff.framework.SyncExecutionContext if sync else tff.framework.AsyncExecutionContext
  return cls(executor_fn=tff.framework.ResourceManagingExecutorFactory(stack_fn),
             compiler_fn=tff.backends.native.desugar_and_transform_to_native,
             transform_args=tensorflow_computation.transform_args,
             transform_result=tensorflow_computation.transform_result)


def install_context(addresses: Sequence[str], timeout_s: float = READY_TIMEOUT_S) -> None:
  """Makes TFF run every computation on the executor services at `addresses`."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.context_stack import context_stack_impl  # pylint: disable=g-import-not-at-top,line-too-long
  if len(addresses) == 1:
    context_stack_impl.context_stack.set_default_context(
        _context(addresses[0], sync=True, timeout_s=timeout_s))
  else:
    tff.backends.native.set_mergeable_comp_execution_context(
        [_context(a, sync=False, timeout_s=timeout_s) for a in addresses])
