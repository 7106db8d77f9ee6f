"""The launcher's restart policy: run a plan, and after a task fails start it again
(the whole job from its checkpoints, or a tolerated PS worker alone, in place) up to
--max_restarts times, never after a failure a retry cannot mend (exits.NOT_RETRIED)."""

import time

from cluster import exits
from launch import plan as planning
from launch import spawn

_NOT_RETRIED_WHY = {exits.USAGE: "a usage error", exits.DATA: "missing data",
                    exits.DIVERGED: "divergence"}


def run_attempts(plan: planning.Plan, replan, max_restarts: int, timeout_s: float | None,
                 console) -> tuple[spawn.Outcome, list[dict], int]:
  """Runs `plan`; after a task failure, runs `replan(attempt, plan)` instead, up to
  `max_restarts` times in all. A PS worker that dies is restarted alone, in place
  (spawn's restart_task), from the same budget. Returns (last outcome, attempt
  records for launcher.json, restarts used)."""
  run_dir, approach = plan.run_dir, plan.approach
  deadline = time.monotonic() + timeout_s if timeout_s else None
  attempts: list[dict] = []
  used = 0

  def restart_task(task: planning.Task) -> planning.Task | None:
    nonlocal used
    if used >= max_restarts:
      return None
    used += 1
    attempts.append({"attempt": used, "restarted": task.name, "scope": "task",
                     "time": time.time()})
    return planning.restarted_task(task, planning.attempt_log_dir(run_dir, used, 1),
                                   approach, used, program=plan.program)

  attempt, bind_retried = 0, False
  while True:
    print(f"launcher: starting {len(plan.tasks)} task(s) for {approach} in {run_dir}"
          + (f" (attempt {attempt})" if max_restarts else ""), file=console, flush=True)
    started = time.time()
    outcome = spawn.run_plan(plan, timeout_s=timeout_s, console=console, deadline=deadline,
                             restart_task=restart_task)  # only tolerated (PS worker) tasks
    attempts.append({"attempt": attempt, "scope": "job", "start_time": started,
                     "end_time": time.time(), "ok": outcome.ok, "reason": outcome.reason,
                     "failed_task": outcome.failed_task, "exit_code": outcome.exit_code})
    if outcome.ok or outcome.failed_task is None:
      return outcome, attempts, used
    if outcome.exit_code == exits.BIND and not bind_retried:
      # Between picking a free port and TF binding it, another process took it.
      bind_retried = True
      print(f"launcher: {outcome.failed_task} could not listen on its address; starting "
            "the attempt again once, with fresh ports", file=console, flush=True)
      plan = replan(attempt, plan)
      continue
    if outcome.exit_code in exits.NOT_RETRIED:
      if max_restarts:
        print(f"launcher: not restarting: exit {outcome.exit_code} "
              f"({_NOT_RETRIED_WHY[outcome.exit_code]}) would fail again", file=console,
              flush=True)
      return outcome, attempts, used
    if used >= max_restarts:
      return outcome, attempts, used
    used += 1
    attempt = used
    print(f"launcher: attempt failed ({outcome.reason}); restart {attempt} of "
          f"{max_restarts}: starting every task again from the latest checkpoint",
          file=console, flush=True)
    plan = replan(attempt, plan)
