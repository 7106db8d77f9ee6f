"""The only module that starts and stops processes.

Each task runs in its own process group (so a grandchild such as TFF's
`worker_binary` is stopped with it), with its own copy of the environment, its
output written to its log file and copied, best effort, to the console behind a
`[role:index]` prefix (less TF's harmless start-up lines, `HARMLESS`).

Supervision is all-or-nothing: the job succeeds when every primary task exits 0
(a tolerated PS worker that dies may be started again in place);
the first task to fail (or the timeout, or SIGINT/SIGTERM/SIGHUP to the launcher)
stops everything: SIGTERM to every group, one shared deadline, then SIGKILL, then
reap. A second signal during that skips the deadline.

Nothing outlives the launcher: every task gets PR_SET_PDEATHSIG (SIGKILL when the
launcher dies, even by SIGKILL), and the stop signals are blocked while a task is
being started, so a Ctrl-C always finds it recorded. A closed or slow console
drops lines (tasks never block on it); a log that cannot be written stops the job.
"""

import collections
import contextlib
import dataclasses
import functools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator, Mapping, TextIO

from cluster import cli, exits, posix
from launch.plan import Plan, Task

GRACE_S = 10.0
POLL_S = 0.1
TAIL_LINES = 20
CONSOLE_BACKLOG = 10_000  # lines; beyond this a slow console loses lines
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CLONE_NEWNET = 0x40000000
# --straggler: the task runs for RUN_SLICE_S, then stands still for (factor - 1) times
# that, so everything it does (compute, and answering its peers) takes factor times
# as long in wall time.
RUN_SLICE_S = 0.05
HARMLESS = cli.TF_NOISE  # kept in each task's log, left off the console


class Interrupted(Exception):
  """SIGINT/SIGTERM/SIGHUP reached the launcher; raised so `finally` blocks run."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How a launch ended. exit_code is what the launcher exits with."""
  ok: bool
  exit_code: int
  reason: str
  failed_task: str | None = None
  task_exit_codes: Mapping[str, int | None] = dataclasses.field(default_factory=dict)
  task_restarts: int = 0  # tolerated tasks started again in place (PS workers)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
  """The stop signals wait while the body runs (a task being started and recorded);
  threads started inside keep them blocked for good, so they always reach the main
  thread, and only between two starts."""
  old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Console:
  """The launcher's console, best effort: lines go through a bounded queue to one
  writer thread, so a slow console drops lines (counted) and a closed one (a pipe
  into `head`) drops them all; no task and no supervisor ever waits on it."""

  def __init__(self, stream: TextIO, backlog: int = CONSOLE_BACKLOG):
    self.stream = stream
    self.lines: queue.Queue = queue.Queue(maxsize=backlog)
    self.dropped = 0
    self.dead = False
    self.thread = threading.Thread(target=self._write, daemon=True, name="console")
    with signals_blocked():  # signals must reach the main thread only
      self.thread.start()

  def write(self, text: str) -> None:
    if self.dead:
      return
    try:
      self.lines.put_nowait(text)
    except queue.Full:
      self.dropped += 1

  def flush(self) -> None:
    """Lines leave through the writer thread; nothing to do here."""

  def _write(self) -> None:
    while (text := self.lines.get()) is not None:
      if self.dead:
        continue
      try:
        self.stream.write(text)
        self.stream.flush()
      except (OSError, ValueError):  # closed pipe or file
        self.dead = True

  def close(self, timeout_s: float = 5.0) -> None:
    """Lets the queued lines out (for at most `timeout_s`) and stops the writer."""
    try:
      if self.dropped and not self.dead:
        self.lines.put(f"launcher: {self.dropped} console line(s) dropped (slow console); "
                       "the task logs have every line\n", timeout=timeout_s)
      self.lines.put(None, timeout=timeout_s)
    except queue.Full:
      self.dead = True
      return
    self.thread.join(timeout=timeout_s)


def _child_setup(launcher_pid: int, cpus: tuple[int, ...] = (),
                 netns: str | None = None) -> None:
  """In the child, between fork and exec: unblock the signals the launcher blocks
  while starting tasks, die with the launcher however it dies, keep to the task's
  cores if the plan pinned it (--pin_cpus), and enter its network namespace (--link)."""
  signal.pthread_sigmask(signal.SIG_SETMASK, set())
  if cpus:
    os.sched_setaffinity(0, cpus)
  if netns:
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    if posix.LIBC is None or posix.LIBC.setns(fd, _CLONE_NEWNET) != 0:
      os._exit(1)  # pylint: disable=protected-access
    os.close(fd)
  posix.die_with_parent()
  if os.getppid() != launcher_pid:  # the launcher died before prctl took effect
    os._exit(1)  # pylint: disable=protected-access


class _Running:
  """One spawned task: its process, its log file and the thread that pumps its output."""

  def __init__(self, task: Task, env: Mapping[str, str], console: Console):
    self.task = task
    os.makedirs(os.path.dirname(task.log_path), exist_ok=True)
    self.log = open(task.log_path, "w", buffering=1)
    self.log_error: OSError | None = None
    self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    self.proc = subprocess.Popen(task.argv, env=dict(env), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True, text=True, errors="replace",
                                 preexec_fn=functools.partial(_child_setup, os.getpid(),
                                                              task.cpus, task.netns))
    self.pgid = self.proc.pid  # start_new_session: the child leads its own group
    self.thread = threading.Thread(target=self._pump, args=(console,), daemon=True)
    self.thread.start()
    self.stop_cycling = threading.Event()
    self.cycler = None
    if task.slowdown > 1.0:
      self.cycler = threading.Thread(target=self._duty_cycle, daemon=True)
      self.cycler.start()

  def _duty_cycle(self) -> None:
    """--straggler: SIGSTOP/SIGCONT the task's group so it runs 1/slowdown of the time."""
    pause = RUN_SLICE_S * (self.task.slowdown - 1.0)
    try:
      while not self.stop_cycling.wait(RUN_SLICE_S):
        os.killpg(self.pgid, signal.SIGSTOP)
        try:
          self.stop_cycling.wait(pause)
        finally:
          os.killpg(self.pgid, signal.SIGCONT)
    except (ProcessLookupError, PermissionError):
      pass

  def end_cycling(self) -> None:
    """Lets a straggler run freely again (before it is signalled to stop)."""
    if self.cycler is not None:
      self.stop_cycling.set()
      self.cycler.join(timeout=1.0)

  def _pump(self, console: Console) -> None:
    """Log first, console second; never stops reading (a full pipe would block the task)."""
    prefix = f"[{self.task.name}] "
    for line in self.proc.stdout:
      if self.log_error is None:
        try:
          self.log.write(line)
        except OSError as e:  # a full disk: the supervisor stops the job
          self.log_error = e
      if cli.is_tf_noise(line):
        continue
      self.tail.append(line.rstrip("\n"))
      console.write(prefix + line)

  def signal_group(self, sig: int) -> None:
    self.end_cycling()  # a stopped straggler would not act on SIGTERM
    try:
      os.killpg(self.pgid, sig)
    except (ProcessLookupError, PermissionError):
      pass

  def group_alive(self) -> bool:
    try:
      os.killpg(self.pgid, 0)
      return True
    except (ProcessLookupError, PermissionError):
      return False

  def close(self) -> None:
    self.end_cycling()
    self.thread.join(timeout=2.0)
    if self.proc.stdout:
      self.proc.stdout.close()
    try:
      self.log.close()
    except OSError:  # its last lines could not be written either: already reported
      pass


def child_env(task: Task, parent: Mapping[str, str], repo_root: str) -> dict[str, str]:
  """A fresh copy of the parent's environment plus the task's variables (parent untouched)."""
  env = dict(parent)
  env.update(task.env)
  path = env.get("PYTHONPATH", "")
  env["PYTHONPATH"] = repo_root + (os.pathsep + path if path else "")
  return env


def _stop_all(running: list[_Running], grace_s: float, hurry: threading.Event) -> None:
  """SIGTERM every group, wait until one shared deadline (or `hurry`), SIGKILL what
  is left, reap."""
  for r in running:
    r.signal_group(signal.SIGTERM)
  deadline = time.monotonic() + grace_s
  while time.monotonic() < deadline and not hurry.is_set() and any(
      r.group_alive() for r in running):
    for r in running:
      r.proc.poll()
    time.sleep(POLL_S)
  for r in running:
    r.signal_group(signal.SIGKILL)
  for r in running:
    r.proc.wait()
    r.close()


def _start(task: Task, repo_root: str, console: Console) -> _Running:
  with signals_blocked():  # a Ctrl-C now waits until the task is recorded
    return _Running(task, child_env(task, os.environ, repo_root), console)


class _Job:
  """The running tasks of one plan and what supervision has seen of them."""

  def __init__(self, plan: Plan, repo_root: str, console: Console, grace_s: float,
               restart_task: Callable[[Task], Task | None] | None):
    self.plan, self.repo_root, self.console, self.grace_s = plan, repo_root, console, grace_s
    self.restart_task = restart_task
    self.running: list[_Running] = []
    self.tolerated: set[str] = set()
    self.task_restarts = 0
    self.hurry = threading.Event()

  def say(self, msg: str) -> None:
    self.console.write(msg + "\n")

  def codes(self) -> dict[str, int | None]:
    return {r.task.name: r.proc.poll() for r in self.running}

  def start_all(self) -> None:
    for task in self.plan.tasks:
      self.running.append(_start(task, self.repo_root, self.console))

  def handle_tolerated_deaths(self) -> None:
    """A dead `may_fail` task is replaced (restart_task) or left dead, once each."""
    for i, r in enumerate(self.running):
      if not r.task.may_fail or r.proc.poll() in (None, 0) or r.task.name in self.tolerated:
        continue
      replacement = self.restart_task(r.task) if self.restart_task else None
      if replacement is None:
        self.tolerated.add(r.task.name)
        self.say(f"launcher: task {r.task.name} exited with code {r.proc.returncode}; the "
                 "job tolerates losing it and continues")
        continue
      self.say(f"launcher: task {r.task.name} exited with code {r.proc.returncode}; "
               f"restarting it alone (log {replacement.log_path})")
      _stop_all([r], self.grace_s, self.hurry)  # reap what is left of its process group
      self.running[i] = _start(replacement, self.repo_root, self.console)
      self.task_restarts += 1

  def outcome(self, ok: bool, code: int, reason: str, task: str | None = None) -> Outcome:
    return Outcome(ok, code, reason, task, self.codes(), self.task_restarts)

  def check(self) -> Outcome | None:
    """The job's end, if it has come: a task failed, a log broke, or all primaries are done."""
    broken = next((r for r in self.running if r.log_error is not None), None)
    if broken is not None:
      self.say(f"launcher: cannot write {broken.task.log_path} ({broken.log_error.strerror}); "
               "stopping the job")
      return self.outcome(False, exits.LOG_WRITE, f"log of {broken.task.name} not writable",
                          broken.task.name)
    failed = next((r for r in self.running if r.proc.poll() not in (None, 0)
                   and not r.task.may_fail), None)
    if failed is not None:
      code = failed.proc.returncode
      failed.thread.join(timeout=2.0)
      self.say(f"launcher: task {failed.task.name} failed with exit code {code} (first "
               f"failure); stopping the other tasks. Last lines of {failed.task.log_path}:")
      for line in failed.tail:
        self.say(f"  | {line}")
      return self.outcome(False, code if 0 < code < 256 else 128 + abs(code),
                          f"task {failed.task.name} exited with {code}", failed.task.name)
    # A host that runs only server tasks (--this_host) waits for its servers.
    awaited = [r for r in self.running if r.task.primary] or self.running
    if all(r.proc.poll() == 0 for r in awaited):
      return self.outcome(True, exits.OK, "all primary tasks finished")
    return None


def run_plan(plan: Plan, timeout_s: float | None = None, console: TextIO = sys.stdout,
             repo_root: str | None = None, grace_s: float = GRACE_S,
             restart_task: Callable[[Task], Task | None] | None = None,
             deadline: float | None = None) -> Outcome:
  """Starts every task of `plan`, supervises them and always stops them all.

  A `may_fail` task that dies is tolerated; if `restart_task` returns a
  replacement for it (the same task with a new log, say), that is started in its
  place, so the job gets its worker back. `deadline` (time.monotonic()) overrides
  `timeout_s` as the moment to stop, for a job whose timeout spans several attempts.
  """
  repo_root = repo_root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sink = console if isinstance(console, Console) else Console(console)
  job = _Job(plan, repo_root, sink, grace_s, restart_task)
  main = threading.current_thread() is threading.main_thread()
  old_handlers = {}

  def on_signal(signum, _frame):
    raise Interrupted(signum)

  def on_second_signal(signum, _frame):
    job.say(f"launcher: {signal.Signals(signum).name} again: killing every task now")
    job.hurry.set()

  if main:
    old_handlers = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
  if deadline is None and timeout_s:
    deadline = time.monotonic() + timeout_s
  try:
    job.start_all()
    while True:
      job.handle_tolerated_deaths()
      end = job.check()
      if end is not None:
        return end
      if deadline is not None and time.monotonic() > deadline:
        job.say(f"launcher: timeout after {timeout_s:g}s; stopping every task")
        return job.outcome(False, exits.TIMEOUT, f"timeout after {timeout_s:g}s")
      time.sleep(POLL_S)
  except Interrupted as e:
    job.say(f"launcher: received {e}; stopping every task")
    return job.outcome(False, 128 + e.signum, f"interrupted by {e}")
  finally:
    if main:  # a second signal while we tear down: SIGKILL at once
      for sig in STOP_SIGNALS:
        signal.signal(sig, on_second_signal)
    _stop_all(job.running, grace_s, job.hurry)
    for sig, handler in old_handlers.items():
      signal.signal(sig, handler)
    if sink is not console:
      sink.close()
