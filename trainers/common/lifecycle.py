"""How a trainer process lives and dies, apart from what it trains (TF-free).

- `honour_sigterm`: TF's preemption notifier takes SIGTERM over and only logs
  "SIGTERM caught". This puts our handler back: SystemExit(143) at the main
  thread's next Python instruction (finally blocks close the run's writers), and a
  watcher thread that ends the process within `grace_s` if the main thread is stuck
  inside TF (a collective waiting for a dead peer, a server's join()).
- `await_peers`: a start-up deadline. Before TF starts, the task probes every
  peer's address until each has answered once (listening on its own address
  meanwhile, so peers doing the same see it); when --startup_timeout runs out
  first, it exits (exits.STARTUP) with one line naming the tasks that never answered.
The launcher links each task's life to its own (PR_SET_PDEATHSIG, launch/spawn.py).
"""

import os
import signal
import socket
import sys
import threading
import time
from cluster import exits
from cluster.tf_config import TaskInfo, host_of, port_of, task_name


def _exit_now(code: int, message: str) -> None:
  print(message, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(code)  # pylint: disable=protected-access


def _on_sigterm(signum, frame):
  del signum, frame
  print("received SIGTERM: stopping (exit 143)", file=sys.stderr, flush=True)
  raise SystemExit(exits.TERMINATED)


def _watch_wakeup_fd(read_fd: int, grace_s: float) -> None:
  while True:
    try:
      got = os.read(read_fd, 64)
    except InterruptedError:
      continue
    if signal.SIGTERM in got:
      time.sleep(grace_s)  # the main thread's SystemExit normally ends us first
      _exit_now(exits.TERMINATED, f"SIGTERM: still running {grace_s:g}s later; exiting now")


_honoured = False


def honour_sigterm(grace_s: float = 3.0) -> None:
  """SIGTERM ends this process with code 143 within `grace_s` (main thread only;
  again after anything else has taken SIGTERM over)."""
  global _honoured
  signal.signal(signal.SIGTERM, _on_sigterm)
  if _honoured:
    return
  _honoured = True
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  # The C-level handler writes the signal number to this fd at once, even while the
  # main thread is blocked in C++, so the watcher sees every SIGTERM.
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  threading.Thread(target=_watch_wakeup_fd, args=(read_fd, grace_s), daemon=True,
                   name="sigterm-watch").start()


def peers_of(task: TaskInfo) -> list[tuple[str, str]]:
  """(name, address) of every other task of the cluster."""
  return [(task_name(role, i), address) for role, addresses in task.cluster.items()
          for i, address in enumerate(addresses) if (role, i) != (task.task_type, task.task_index)]


def wait_listening(address: str, timeout_s: float, what: str, interval_s: float = 0.25
                   ) -> None:
  """Blocks until a server accepts connections at `address`; RuntimeError after
  `timeout_s` (a client that dials too early fails: Flower's gRPC client does)."""
  deadline = time.monotonic() + timeout_s
  while not _answers(address, interval_s):
    if time.monotonic() > deadline:
      raise RuntimeError(f"{what} at {address} not listening within {timeout_s:.0f}s")
    time.sleep(interval_s)


def _answers(address: str, timeout_s: float = 1.0) -> bool:
  host, port = host_of(address).strip("[]"), port_of(address)
  try:
    with socket.create_connection((host, port), timeout=timeout_s):
      return True
  except OSError:
    return False


def _beacon(address: str) -> socket.socket:
  """Listens on this task's own address while it waits, so peers waiting on it see it
  (TF's server takes the address over right after)."""
  host, port = host_of(address).strip("[]"), port_of(address)
  sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    _exit_now(exits.BIND, f"error: cannot listen on {address}: {e.strerror} (port in use, "
              "or not an address of this machine)")
  sock.listen(64)
  sock.setblocking(False)
  return sock


def _drain(sock: socket.socket) -> None:
  """Accepts and closes the peers' probes."""
  while True:
    try:
      conn, _ = sock.accept()
    except (BlockingIOError, InterruptedError):
      return
    conn.close()


def await_peers(task: TaskInfo, timeout_s: float, interval_s: float = 0.25) -> None:
  """Blocks until every peer of `task` has answered at its address once; after
  `timeout_s` (0: no deadline, no wait) exits (exits.STARTUP) with one line naming
  the silent ones. Called before TF starts: once TF's runtime waits for its peers it
  holds the interpreter, and nothing in Python could give up on them."""
  peers = peers_of(task)
  if not peers or timeout_s <= 0:
    return
  beacon = _beacon(task.address)
  try:
    deadline = time.monotonic() + timeout_s
    waiting = dict(peers)
    while True:
      _drain(beacon)
      waiting = {name: a for name, a in waiting.items() if not _answers(a, interval_s)}
      if not waiting:
        return
      if time.monotonic() > deadline:
        silent = ", ".join(f"{name} at {a}" for name, a in waiting.items())
        _exit_now(exits.STARTUP, f"error: startup: no answer from {silent} within "
                  f"--startup_timeout={timeout_s:g}s; is every task of the job running?")
      time.sleep(interval_s)
  finally:
    beacon.close()
