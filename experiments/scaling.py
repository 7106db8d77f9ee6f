"""The scaling sweep: every approach at N = 2, 4, 8 ... workers to the same target.

    python -m experiments.compare --scaling=2,4,8        # writes scaling.md/json/png

On one 2-core machine the wall time at N = 8 is contention, not a result: the sweep
shows it but ranks nothing by it. What it measures that carries over to a real
cluster: the examples (and steps, rounds) each approach needs to reach the target at
each N, the bytes each puts on a worker's link and on its busiest task's, and the
compute a step costs one worker alone (a single-process plain Keras run at the
per-worker batch, and at FedAvg's client batch). experiments/costmodel.py takes it
from there. Formatting and cells here are pure; the runs go through experiments.compare.
"""

import json
import math
import os
from typing import Sequence

from experiments import outcome


def parse_counts(text: Sequence[str]) -> list[int]:
  """['2', '4', '8'] -> [2, 4, 8]; ValueError names a bad one."""
  try:
    counts = [int(x) for x in text]
  except ValueError:
    raise ValueError(f"--scaling={','.join(text)}: not a list of worker counts "
                     "(e.g. 2,4,8)") from None
  if not counts or any(n < 1 for n in counts):
    raise ValueError(f"--scaling={','.join(text)}: every count must be >= 1")
  return counts


def cell(ended: outcome.Outcome) -> dict:
  """What one run contributes to the sweep."""
  if not ended.ok:
    return {"ok": False, "status": ended.status, "error": ended.error}
  summary = ended.summary
  busiest = summary.get("bytes_by_task") or {}
  name = max(busiest, key=lambda t: busiest[t]["sent"] + busiest[t]["received"],
             default=None)
  steps = summary.get("steps_to_target") if summary.get("reached_target") else None
  return {"ok": True, "reached": ended.reached,
          "time_to_target_s": summary.get("time_to_target_s"),
          "startup_s": summary.get("first_step_since_launch_s"),
          "train_time_to_target_s": summary.get("train_time_to_target_s"),
          "examples_to_target": summary.get("examples_to_target"),
          "steps_to_target": steps if steps is not None else summary.get("steps") or
          summary.get("rounds_run"),
          "test_accuracy": summary.get("test_accuracy"),
          "examples": summary.get("examples_processed"),
          "bytes_sent_per_worker": summary.get("bytes_sent_per_worker"),
          "bytes_busiest_task": summary.get("bytes_busiest_task"),
          "busiest_task": name,
          "bytes_by_task": busiest,
          "bytes_analytic_per_worker": summary.get("bytes_analytic_per_worker"),
          "since_launch_s": summary.get("since_launch_s")}


def cell_of_run(run_dir: str) -> dict:
  return cell(outcome.of_run(run_dir))


def _mb(v) -> str:
  return "-" if v is None else f"{v / 1e6:.1f}"


def markdown(cells: dict, approaches: Sequence[str], counts: Sequence[int],
             compute: dict, target: float) -> str:
  """A row per approach and N: examples and steps to target, bytes per worker and on
  the busiest task, and (not ranked) the wall time on this machine."""
  lines = [f"Target {target:.0%} test accuracy. Compute without contention (one process, "
           f"plain Keras): {compute.get('step_s', float('nan')) * 1e3:.1f} ms per step at "
           f"batch {compute.get('batch_size')}, {compute.get('client_example_s', float('nan')) * 1e3:.2f}"
           f" ms per example at FedAvg's batch {compute.get('client_batch_size')}. Wall "
           "time at large N on this machine is contention: shown, not ranked.", "",
           "| approach | N | reached | examples to target | steps/rounds | MB sent per worker "
           "| busiest task | its MB sent+received | wall s to target (contended) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for a in approaches:
    for n in counts:
      c = cells.get(str(n), {}).get(a, {"ok": False})
      if not c.get("ok"):
        lines.append(f"| {a} | {n} | failed | | | | | | |")
        continue
      wall = c["time_to_target_s"]
      lines.append(
          f"| {a} | {n} | {'yes' if c['reached'] else 'no'} | "
          f"{c['examples_to_target'] if c['reached'] else '-'} | {c['steps_to_target']} | "
          f"{_mb(c['bytes_sent_per_worker'])} | {c['busiest_task'] or '-'} | "
          f"{_mb(c['bytes_busiest_task'])} | {'-' if wall is None else f'{wall:.0f}'} |")
  return "\n".join(lines)


def write(root: str, cells: dict, approaches: Sequence[str], counts: Sequence[int],
          compute: dict, target: float, preamble: str) -> str:
  table = markdown(cells, approaches, counts, compute, target)
  with open(os.path.join(root, "scaling.md"), "w") as f:
    f.write(f"# Scaling sweep\n\n{preamble}\n\n{table}\n")
  with open(os.path.join(root, "scaling.json"), "w") as f:
    json.dump({"target_accuracy": target, "approaches": list(approaches),
               "counts": list(counts), "compute": compute, "cells": cells}, f, indent=2)
  plot(os.path.join(root, "scaling.png"), cells, approaches, counts)
  return table


def plot(path: str, cells: dict, approaches: Sequence[str], counts: Sequence[int]) -> None:
  """Examples to target, MB per worker and MB on the busiest task, against N (log2)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  panels = (("examples_to_target", "examples to target", 1),
            ("bytes_sent_per_worker", "MB sent per worker", 1e6),
            ("bytes_busiest_task", "MB sent+received, busiest task", 1e6))
  for ax, (key, title, scale) in zip(axes, panels):
    for a in approaches:
      pts = [(n, cells[str(n)][a][key] / scale) for n in counts
             if cells.get(str(n), {}).get(a, {}).get("ok") and
             cells[str(n)][a].get(key) is not None and
             (key != "examples_to_target" or cells[str(n)][a]["reached"])]
      if pts:
        ax.plot(*zip(*pts), marker="o", label=a)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(counts), [str(n) for n in counts])
    ax.set_xlabel("workers (N)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def power_law(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
  """(a, b) of y = a * x^b fitted by least squares in log-log (one point: b = 0)."""
  pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y and y > 0]
  if not pts:
    raise ValueError("no positive points to fit")
  if len(pts) == 1:
    return math.exp(pts[0][1]), 0.0
  mx = sum(p[0] for p in pts) / len(pts)
  my = sum(p[1] for p in pts) / len(pts)
  sxx = sum((p[0] - mx) ** 2 for p in pts)
  b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else 0.0
  return math.exp(my - b * mx), b
