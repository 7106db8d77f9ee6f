"""TF's profiler over every task of a job at once: where a step's time goes, task by task
(--profile_ms; issue 33 asked it of the parameter server).

- `serve(run_dir, task)`: every task starts TF's profiler server on a free port of its
  own host (tf.profiler.experimental.server) and writes the address to
  <run_dir>/profile/ports/<task>.
- `Window`: the chief, once training is warm, traces all of them at the same time for
  `ms` milliseconds (tf.profiler.experimental.client.trace, one thread per task) into
  <run_dir>/profile/<task>/, while training goes on.
- `breakdown(xspace)`: pure; a trace's host plane as milliseconds of each kind of work,
  from the events TF's executor records per op kernel:
    compute   op kernels that compute (MatMul, Conv2D, the optimizer's updates, ...);
    transfer  the runtime's _Send/_Recv kernels and RPC events: a task waiting for
              tensors from another task (the ps's variables, a gradient's push);
    runtime   the executor's own work around the kernels (ExecutorState::Process time
              not inside a kernel) and function dispatch;
  each summed over TF's compute threads, and `idle`: those threads' time in the window
  in none of them (a thread blocked in a function call while others run its ops counts
  as idle). On Python threads (the coordinator) `remote_call`: time inside calls into
  the runtime that return when a remote function has run (a closure on a worker).
  All-reduce: `collective`, the window's time with a collective op in flight on any
  thread (an interval union: it overlaps compute where the runtime overlaps them), and
  `collectives`, how many collective ops the compute threads launched.
  A profile is a diagnosis: its own RPCs cross the wire too, so a profiled run's
  measured bytes are not its algorithm's.
"""

import collections
import json
import os
import re
import socket
import threading
import time
from typing import Iterable, Mapping, Sequence

PORTS = os.path.join("profile", "ports")
KINDS = ("compute", "transfer", "runtime")

# Op types whose kernel time is a task waiting on another task, not computing.
TRANSFER_OPS = ("_Send", "_Recv", "_HostSend", "_HostRecv", "_Retval", "_Arg",
                "RecvTensor", "RemoteCall")
_TRANSFER_EVENTS = re.compile(r"RecvTensor|RemoteCall|Rendezvous|GrpcRemote|RunComponentFunction"
                              r"|RunGraph|EagerService|CreateContext")
_COLLECTIVE_OPS = ("Collective", "Nccl")
_RUNTIME_EVENTS = ("ExecutorState::Process",)
_CALLER_EVENTS = ("EagerService", "EagerExecute", "EagerLocalExecute", "EagerKernelExecute",
                  "KernelAndDeviceFunc", "TFE_Py")
# The coordinator's (Python) side: a call into the runtime that returns when the remote
# function (a closure on a worker) has run.
_REMOTE_CALL = "TFE_Py_ExecuteCancelable"
_COMPUTE_THREAD = re.compile(r"^tf_(Compute|inter_op|intra_op)|^tf_.*Eigen|^tf_Worker")


def task_file(task_name_: str) -> str:
  """A task's name as a file name ('worker:1' -> 'worker_1')."""
  return task_name_.replace(":", "_")


def _free_port(host: str) -> int:
  with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def serve(run_dir: str, task_name_: str, host: str) -> str:
  """Starts this process's profiler server; its address, also written for the chief."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  port = _free_port(host)
  tf.profiler.experimental.server.start(port)
  address = f"{host}:{port}"
  directory = os.path.join(run_dir, PORTS)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, task_file(task_name_))
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(address)
  os.replace(path + ".tmp", path)  # the chief never reads half an address
  return address


def addresses(run_dir: str, tasks: Sequence[str], timeout_s: float = 60.0) -> dict[str, str]:
  """task -> its profiler address, once every task of `tasks` has written one;
  TimeoutError naming those that did not within `timeout_s`."""
  deadline = time.monotonic() + timeout_s
  while True:
    found = {}
    for task in tasks:
      path = os.path.join(run_dir, PORTS, task_file(task))
      if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
          found[task] = f.read().strip()
    if len(found) == len(tasks):
      return found
    if time.monotonic() > deadline:
      raise TimeoutError(f"no profiler address from {', '.join(sorted(set(tasks) - set(found)))}")
    time.sleep(0.2)


def steps_between(points: Sequence[tuple[float, int]], start: float, end: float) -> float:
  """Global steps run between times `start` and `end`, from (time, step) points the chief
  saw, linearly interpolated between them (0 when they do not cover the interval)."""
  def step_at(t: float) -> float | None:
    for (t0, s0), (t1, s1) in zip(points[:-1], points[1:]):
      if t0 <= t <= t1:
        return s0 + (s1 - s0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)
    return None
  a, b = step_at(start), step_at(end)
  return 0.0 if a is None or b is None else b - a


class Window:
  """One trace of every task at once, `ms` long: `observe(step)` at each progress point
  starts it at the first step >= `at_step` (a thread per task) and records when each
  step was reached; `finish()` waits for the traces and returns {task: breakdown} (a
  task whose trace failed: {"error": ...}) and the global steps run inside the window."""

  def __init__(self, run_dir: str, tasks: Sequence[str], ms: int, at_step: int):
    self.run_dir, self.tasks, self.ms, self.at_step = run_dir, list(tasks), ms, at_step
    self._threads: list[threading.Thread] = []
    self._results: dict[str, dict] = {}
    self._points: list[tuple[float, int]] = []
    self.started_at: float | None = None

  def observe(self, step: int) -> None:
    self._points.append((time.time(), step))
    if self.started_at is None and step >= self.at_step:
      self.start()

  def start(self) -> None:
    found = addresses(self.run_dir, self.tasks)
    self.started_at = time.time()
    for task, address in found.items():
      thread = threading.Thread(target=self._trace, args=(task, address), daemon=True,
                                name=f"profile-{task}")
      thread.start()
      self._threads.append(thread)

  def _trace(self, task: str, address: str) -> None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    logdir = os.path.join(self.run_dir, "profile", task_file(task))
    try:
      tf.profiler.experimental.client.trace(f"grpc://{address}", logdir, self.ms,
                                            num_tracing_attempts=2)
      self._results[task] = breakdown_of_dir(logdir)
    except Exception as e:  # pylint: disable=broad-except
      self._results[task] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}

  def finish(self, timeout_s: float = 120.0) -> tuple[dict[str, dict], float]:
    for thread in self._threads:
      thread.join(timeout_s)
    steps = (steps_between(self._points, self.started_at, self.started_at + self.ms / 1e3)
             if self.started_at else 0.0)
    return {task: self._results.get(task, {"error": "no trace"}) for task in self.tasks}, steps


def _trace_start(logdir: str) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.profiler.experimental.start(logdir)


def _trace_stop() -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.profiler.experimental.stop()


class LocalWindow:
  """A process traces itself (tf.profiler.experimental.start/stop into `logdir`): for
  workers in lock step (all-reduce's, a plain fit), each over its own steps, no chief
  in between. `observe(step)` at each step the loop reports opens the trace at the first
  step >= `at_step` and closes it at the first step `ms` after; `finish()` closes it if
  training ended first and returns (breakdown, steps traced), the steps exact."""

  def __init__(self, logdir: str, ms: int, at_step: int, clock=time.monotonic,
               start=None, stop=None):
    self.logdir, self.ms, self.at_step, self.clock = logdir, ms, at_step, clock
    self._start, self._stop = start or _trace_start, stop or _trace_stop
    self.opened: tuple[float, int] | None = None  # (time, step) at the open
    self.closed_at_step: int | None = None
    self._last = 0

  def observe(self, step: int) -> None:
    self._last = step
    if self.opened is None and step >= self.at_step:
      self._start(self.logdir)
      self.opened = (self.clock(), step)
    elif (self.opened and self.closed_at_step is None
          and (self.clock() - self.opened[0]) * 1e3 >= self.ms):
      self._close(step)

  def _close(self, step: int) -> None:
    self._stop()
    self.closed_at_step = step

  def finish(self) -> tuple[dict, int]:
    if self.opened is None:
      return {"error": f"the run ended before step {self.at_step}: open the window earlier "
                       "(--profile_at_step)"}, 0
    if self.closed_at_step is None:
      self._close(self._last)
    return breakdown_of_dir(self.logdir), self.closed_at_step - self.opened[1]


def breakdown_of_dir(logdir: str) -> dict:
  """The breakdown of the newest trace written under `logdir`."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  paths = []
  for root, _, files in os.walk(logdir):
    paths += [os.path.join(root, f) for f in files if f.endswith(".xplane.pb")]
  if not paths:
    raise FileNotFoundError(f"no .xplane.pb under {logdir}")
  space = xplane_pb2.XSpace()
  with open(max(paths, key=os.path.getmtime), "rb") as f:
    space.ParseFromString(f.read())
  return breakdown(space)


def op_type(event_name: str) -> str | None:
  """The op type of an executor kernel event ('dense/MatMul:MatMul' -> 'MatMul'), or None
  for an event that is not one op's kernel."""
  name, colon, kind = event_name.rpartition(":")
  if not (colon and name and kind) or "::" in event_name or " " in event_name or (
      event_name.startswith(_CALLER_EVENTS)):
    return None
  return kind


def _intervals(events: Iterable) -> list[tuple[int, int, str]]:
  return sorted((e[0], e[0] + e[1], e[2]) for e in events)


def classify(name: str) -> str | None:
  """compute / transfer / runtime for an event of a compute thread, None for others."""
  if name.startswith(_CALLER_EVENTS):
    return None  # a thread blocked in a function call while other threads run its ops
  kind = op_type(name)
  if kind is not None:
    return "transfer" if kind in TRANSFER_OPS else "compute"
  if _TRANSFER_EVENTS.search(name):
    return "transfer"
  if name in _RUNTIME_EVENTS or name.startswith(("FunctionRun", "InstantiatedCapturedFunction",
                                                 "EagerExecute", "EagerKernelExecute")):
    return "runtime"
  return None


def is_collective(event_name: str) -> bool:
  """An all-reduce/gather/broadcast op's event (CollectiveReduceV2, NcclAllReduce, ...):
  on a compute thread its launch, on TF's collective threads its run to completion."""
  kind = op_type(event_name)
  return bool(kind) and kind.startswith(_COLLECTIVE_OPS)


def union_ps(intervals: Iterable[tuple[int, int]]) -> int:
  """Length of the union of [start, end) intervals."""
  total, end_ = 0, None
  for start, end in sorted(intervals):
    if end_ is None or start > end_:
      total, end_ = total + end - start, end
    elif end > end_:
      total, end_ = total + end - end_, end
  return total


def thread_breakdown(events: Sequence[tuple[int, int, str]], window_ps: int) -> dict[str, float]:
  """One thread's events (start ps, duration ps, name) as ps of each kind: the innermost
  classified event owns each instant (a kernel inside ExecutorState::Process is compute
  or transfer, the rest of Process is runtime); instants in none are idle."""
  marks = []
  for start, end, name in _intervals(events):
    kind = classify(name)
    if kind is not None and end > start:
      marks.append((start, end, kind))
  totals = collections.Counter()
  # Sweep: at each boundary the innermost (latest-started, still open) interval owns time.
  bounds = sorted({b for s, e, _ in marks for b in (s, e)})
  open_: list[tuple[int, int, str]] = []
  i = 0
  for a, b in zip(bounds[:-1], bounds[1:]):
    while i < len(marks) and marks[i][0] <= a:
      open_.append(marks[i])
      i += 1
    open_ = [m for m in open_ if m[1] > a]
    if open_:
      totals[max(open_, key=lambda m: m[0])[2]] += b - a
  busy = sum(totals.values())
  totals["idle"] = max(window_ps - busy, 0)
  return dict(totals)


def breakdown(space) -> dict:
  """An XSpace (one task's trace) as ms per kind of work summed over TF's compute threads,
  the window's length, the thread count and the top op types by time."""
  out = collections.Counter()
  ops = collections.Counter()
  threads, window_ps, remote_ps, remote_calls, launches = 0, 0, 0, 0, 0
  collective: list[tuple[int, int]] = []  # a collective op in flight, on any thread
  for plane in space.planes:
    if not plane.name.startswith("/host:"):
      continue
    names = {k: v.name for k, v in plane.event_metadata.items()}
    lines = [(line, [(e.offset_ps + line.timestamp_ns * 1000, e.duration_ps,
                      names.get(e.metadata_id, "")) for e in line.events])
             for line in plane.lines]
    spans = [(min(s for s, _, _ in ev), max(s + d for s, d, _ in ev)) for _, ev in lines if ev]
    if not spans:
      continue
    window_ps = max(window_ps, max(e for _, e in spans) - min(s for s, _ in spans))
    for line, events in lines:
      calls = [d for _, d, name in events if name == _REMOTE_CALL]
      remote_ps, remote_calls = remote_ps + sum(calls), remote_calls + len(calls)
      collective += [(s, s + d) for s, d, name in events if is_collective(name)]
      if not events or not _COMPUTE_THREAD.search(line.name or line.display_name):
        continue
      threads += 1
      launches += sum(1 for _, _, name in events if is_collective(name))
      for kind, ps in thread_breakdown(events, window_ps).items():
        out[kind] += ps
      for start, duration, name in events:
        kind = op_type(name)
        if kind:
          ops[kind] += duration
  ms = {k: round(v / 1e9, 3) for k, v in out.items()}
  return {"window_ms": round(window_ps / 1e9, 3), "threads": threads,
          **{k: 0.0 for k in KINDS}, **ms, "remote_call": round(remote_ps / 1e9, 3),
          "remote_calls": remote_calls, "collective": round(union_ps(collective) / 1e9, 3),
          "collectives": launches,
          "top_ops_ms": {k: round(v / 1e9, 3) for k, v in ops.most_common(8)}}


def per_step(result: Mapping[str, dict], steps: float) -> dict[str, dict]:
  """Each task's breakdown as ms per step of the window (`steps` global steps ran in it)."""
  out = {}
  for task, b in result.items():
    if "error" in b or steps <= 0:
      out[task] = dict(b) if "error" in b else {
          "error": "the window outlasted the steps the chief saw: open it earlier "
                   "(--profile_at_step) or shorter (--profile_ms)"}
      continue
    out[task] = {k: round(b.get(k, 0.0) / steps, 3)
                 for k in (*KINDS, "idle", "remote_call", "collective", "collectives",
                           "window_ms")}
    out[task]["wall"] = out[task].pop("window_ms")
    out[task]["threads"] = b["threads"]
  return out


def write(run_dir: str, result: Mapping[str, dict], steps: float,
          name: str = "breakdown.json") -> str:
  path = os.path.join(run_dir, "profile", name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"steps_in_window": round(steps, 1), "tasks": result,
               "per_step_ms": per_step(result, steps)}, f, indent=1)
  return path
