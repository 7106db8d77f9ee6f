"""Supervision with tiny stand-in processes (no TF): in-place restarts, server-only hosts."""

import dataclasses
import io
import os
import sys
import uuid

from launch import plan, restarts, spawn
from tests import helpers


def _task(tmp_path, name, code, primary, may_fail=False, tag=""):
  role, index = name.split(":")
  return plan.Task(role=role, index=int(index), address="127.0.0.1:1", tf_config="{}",
                   env={helpers.TAG_VAR: tag}, log_path=str(tmp_path / "logs" / f"{role}_{index}.log"),
                   argv=(sys.executable, "-c", code), primary=primary, may_fail=may_fail)


def test_a_dead_tolerated_task_is_restarted_in_place_and_the_job_finishes(tmp_path):
  tag = uuid.uuid4().hex
  back = tmp_path / "replacement_started"
  # The chief finishes once the replacement worker is up (polled, bounded): no sleep
  # standing in for the restart window.
  chief = _task(tmp_path, "chief:0", (
      "import os, time\nend = time.monotonic() + 30\n"
      f"while not os.path.exists({str(back)!r}) and time.monotonic() < end:\n"
      "  time.sleep(0.02)\n"
      f"print('chief done' if os.path.exists({str(back)!r}) else 'no replacement')"),
      True, tag=tag)
  worker = _task(tmp_path, "worker:1", "import sys; print('crash'); sys.exit(5)", False, True, tag)
  replacements = []

  def restart(task):
    if replacements:
      return None  # one restart allowed
    new = dataclasses.replace(task, argv=(
        sys.executable, "-c", f"import time; open({str(back)!r}, 'w').close(); time.sleep(60)"),
                              log_path=str(tmp_path / "logs" / "attempt_1" / "worker_1.log"))
    replacements.append(new)
    return new

  out = io.StringIO()
  try:
    outcome = spawn.run_plan(plan.Plan("ps", str(tmp_path), "r", {}, (chief, worker)),
                             timeout_s=60, console=out, restart_task=restart, grace_s=2)
  finally:
    helpers.assert_no_survivors(tag)
  assert outcome.ok and outcome.task_restarts == 1, out.getvalue()
  assert "task worker:1 exited with code 5; restarting it alone" in out.getvalue()
  assert (tmp_path / "logs" / "worker_1.log").read_text().strip() == "crash"
  assert (tmp_path / "logs" / "attempt_1" / "worker_1.log").exists()
  assert (tmp_path / "logs" / "chief_0.log").read_text().strip() == "chief done"


def test_a_host_with_only_server_tasks_waits_for_them(tmp_path):
  tag = uuid.uuid4().hex
  server = _task(tmp_path, "ps:0", "import time; time.sleep(1.5)", False, tag=tag)
  out = io.StringIO()
  try:
    outcome = spawn.run_plan(plan.Plan("ps", str(tmp_path), "r", {}, (server,)), timeout_s=30,
                             console=out, grace_s=2)
  finally:
    helpers.assert_no_survivors(tag)
  assert outcome.ok and outcome.task_exit_codes == {"ps:0": 0}


def test_job_restarts_until_success_or_the_budget_is_spent(tmp_path):
  from launch import local  # pylint: disable=g-import-not-at-top
  tag = uuid.uuid4().hex
  marker = tmp_path / "runs"
  # Fails on its first two runs, succeeds on the third (counts runs in a file).
  code = (f"import os, sys; p = {str(marker)!r}; n = len(open(p).read()) if os.path.exists(p) "
          f"else 0; open(p, 'a').write('x'); sys.exit(0 if n >= 2 else 7)")

  def job(attempt):
    return plan.Plan("allreduce", str(tmp_path), "r", {}, (
        _task(tmp_path / f"a{attempt}", "worker:0", code, True, tag=tag),))

  for budget, ok in ((1, False), (2, True)):
    marker.unlink(missing_ok=True)
    out = io.StringIO()
    try:
      outcome, attempts, used = restarts.run_attempts(
          job(0), lambda n, _prev: job(n), budget, 60, out)
    finally:
      helpers.assert_no_survivors(tag)
    assert outcome.ok == ok, out.getvalue()
    assert used == budget and len(attempts) == budget + 1
    assert outcome.exit_code == (0 if ok else 7)
    assert f"restart {budget} of {budget}" in out.getvalue()


def test_a_bind_failure_is_retried_once_with_a_fresh_plan_and_usage_errors_never(tmp_path):
  from launch import local  # pylint: disable=g-import-not-at-top
  from cluster import exits  # pylint: disable=g-import-not-at-top
  tag = uuid.uuid4().hex

  def job(code):
    return plan.Plan("allreduce", str(tmp_path), "r", {}, (
        _task(tmp_path, "worker:0", f"import sys; sys.exit({code})", True, tag=tag),))

  try:
    out = io.StringIO()  # exit 71 (BIND), then a fresh plan that works: no restart used
    codes = iter([0])
    outcome, attempts, used = restarts.run_attempts(
        job(exits.BIND), lambda n, _prev: job(next(codes)), 0, 60, out)
    assert outcome.ok and used == 0 and len(attempts) == 2, out.getvalue()
    assert "could not listen on its address; starting the attempt again once" in out.getvalue()
    out = io.StringIO()  # a second bind failure is not retried again
    outcome, attempts, used = restarts.run_attempts(
        job(exits.BIND), lambda n, _prev: job(exits.BIND), 3, 60, out)
    assert outcome.exit_code == exits.BIND and len(attempts) == 5  # 1 + 1 bind retry + 3
    for code in exits.NOT_RETRIED:  # usage, data, divergence: a retry would fail again
      out = io.StringIO()
      outcome, attempts, used = restarts.run_attempts(
          job(code), lambda n, _prev, c=code: job(c), 3, 60, out)
      assert outcome.exit_code == code and used == 0 and len(attempts) == 1
      assert "not restarting" in out.getvalue()
  finally:
    helpers.assert_no_survivors(tag)


def test_a_log_that_cannot_be_written_stops_the_job_with_one_line(tmp_path):
  from cluster import exits  # pylint: disable=g-import-not-at-top
  tag = uuid.uuid4().hex
  chatty = _task(tmp_path, "worker:0", "import time\nwhile True: print('x' * 100, flush=True); "
                 "time.sleep(0.01)", True, tag=tag)
  full = "/dev/full"  # every write fails with ENOSPC, as on a full disk
  chatty = dataclasses.replace(chatty, log_path=full)
  out = io.StringIO()
  try:
    outcome = spawn.run_plan(plan.Plan("allreduce", str(tmp_path), "r", {}, (chatty,)),
                             timeout_s=60, console=out, grace_s=2)
  finally:
    helpers.assert_no_survivors(tag)
  assert outcome.exit_code == exits.LOG_WRITE and not outcome.ok
  assert "launcher: cannot write /dev/full (No space left on device); stopping the job" in \
      out.getvalue()


def test_a_slow_console_drops_lines_instead_of_blocking(tmp_path):
  import threading  # pylint: disable=g-import-not-at-top

  class Stuck(io.StringIO):
    """A console that blocks on every write until released."""
    release = threading.Event()

    def write(self, text):
      self.release.wait()
      return super().write(text)

  console = spawn.Console(Stuck(), backlog=10)
  for i in range(100):
    console.write(f"line {i}\n")  # returns at once although nothing is written
  assert console.dropped >= 89
  Stuck.release.set()
  console.close()
  assert "console line(s) dropped" in console.stream.getvalue()


def test_harmless_tf_start_up_lines_stay_in_the_log_and_off_the_console(tmp_path):
  tag = uuid.uuid4().hex
  code = ("print('2026-11-25 E cuda_dnn.cc:9342] Unable to register cuDNN factory: x'); "
          "print('W py_utils.cc:38] TF-TRT Warning: Could not find TensorRT'); "
          "print('E external/... Failed to detect the fetch node(s)'); "
          "print('[allreduce] epoch 1/1 step 10/10 loss 0.1'); print('WARNING: a real one')")
  out = io.StringIO()
  try:
    outcome = spawn.run_plan(plan.Plan("allreduce", str(tmp_path), "r", {}, (
        _task(tmp_path, "worker:0", code, True, tag=tag),)), timeout_s=30, console=out)
  finally:
    helpers.assert_no_survivors(tag)
  assert outcome.ok
  shown = out.getvalue()
  assert "[worker:0] [allreduce] epoch 1/1 step 10/10" in shown
  assert "[worker:0] WARNING: a real one" in shown
  assert "cuDNN" not in shown and "TensorRT" not in shown and "fetch node" not in shown
  log = (tmp_path / "logs" / "worker_0.log").read_text()
  assert "cuDNN" in log and "TensorRT" in log and "fetch node" in log


def test_a_straggler_stands_still_between_short_runs_and_is_never_left_stopped(tmp_path):
  """--straggler=...:3: the task runs 50 ms, then stands still 100 ms (SIGSTOP). It
  sees those pauses as gaps in its own clock; the job still ends, and nothing survives."""
  tag = uuid.uuid4().hex
  code = ("import time\n"
          "gaps, last, end = [], time.monotonic(), time.monotonic() + 2.0\n"
          "while time.monotonic() < end:\n"
          "  now = time.monotonic()\n"
          "  if now - last > 0.06: gaps.append(now - last)\n"
          "  last = now\n"
          "print(len(gaps), sum(gaps) / max(len(gaps), 1))\n")
  slow = dataclasses.replace(_task(tmp_path, "chief:0", code, True, tag=tag), slowdown=3.0)
  out = io.StringIO()
  try:
    outcome = spawn.run_plan(plan.Plan("allreduce", str(tmp_path), "r", {}, (slow,)),
                             timeout_s=60, console=out, grace_s=2)
  finally:
    helpers.assert_no_survivors(tag)
  assert outcome.ok, out.getvalue()
  count, mean_gap = (tmp_path / "logs" / "chief_0.log").read_text().split()
  # ~2 s / 150 ms = 13 pauses of ~100 ms (a loaded machine stretches them a little).
  assert int(count) >= 6 and 0.08 <= float(mean_gap) <= 0.3, (count, mean_gap)
