"""Regimes: the same time-to-target job under the constraints where the approaches differ.

    python -m experiments.compare --regimes=all            # every regime below
    python -m experiments.compare --regimes=link_10mbit,straggler

A regime is launcher flags and trainer flags added to every approach's run: capped
links (launch/links.py), a straggler (launch/spawn.py's duty cycle), label-skewed
shards (--partition). The grid writes regimes.md / regimes.json / regimes.png: a cell
per approach and regime with the time to the target (or the accuracy reached at the
cap) and the bytes each worker sent. Planning and formatting here are pure; the runs
go through experiments.compare.
"""

import dataclasses
import json
import math
import os
from typing import Sequence

from experiments import outcome
from experiments import report


@dataclasses.dataclass(frozen=True)
class Regime:
  name: str
  launcher_args: tuple[str, ...] = ()
  trainer_args: tuple[str, ...] = ()
  what: str = ""

  @property
  def needs_links(self) -> bool:
    return any(a.startswith("--link=") for a in self.launcher_args)


REGIMES = {r.name: r for r in (
    Regime("baseline", what="one fast host, IID shards"),
    Regime("link_100mbit", ("--link=100mbit",), what="every task's link capped at "
           "100 Mbit/s each way"),
    Regime("link_10mbit", ("--link=10mbit",), what="every task's link capped at 10 Mbit/s "
           "each way"),
    Regime("straggler", ("--straggler=worker:1:3",), what="worker:1 runs 3x slower"),
    Regime("shards", (), ("--partition=shards",), what="each worker holds 2 label-sorted "
           "shards (about 2 digits; FedAvg: its clients)"),
    Regime("dirichlet", (), ("--partition=dirichlet", "--dirichlet_alpha=0.1"),
           what="label proportions per worker (FedAvg: per client) drawn from "
           "Dirichlet(0.1): a few dominant digits each, unequal sizes"),
)}


def parse(names: Sequence[str]) -> list[Regime]:
  """['all'] or regime names -> regimes, in the order given; ValueError names the bad one."""
  if list(names) == ["all"]:
    return list(REGIMES.values())
  bad = [n for n in names if n not in REGIMES]
  if bad or not names:
    raise ValueError(f"--regimes: unknown {', '.join(bad) or '(none given)'}; valid: all, "
                     f"{', '.join(REGIMES)}")
  return [REGIMES[n] for n in names]


def cell(ended: outcome.Outcome) -> dict:
  """What one run contributes to the grid: its summary's figures when it finished
  with results; else how it ended and the last evaluation it logged."""
  summary = ended.summary or {}
  if ended.ok:
    return {"ok": True, "reached": ended.reached,
            "time_to_target_s": summary.get("time_to_target_s"),
            "test_accuracy": summary.get("test_accuracy"),
            "since_launch_s": summary.get("since_launch_s"),
            "examples": summary.get("examples_processed"),
            "bytes_sent_per_worker": summary.get("bytes_sent_per_worker"),
            "link_bytes_sent_per_worker": summary.get("link_bytes_sent_per_worker"),
            "steps": summary.get("steps") or summary.get("rounds_run"),
            "train_time_s": summary.get("train_time_s")}
  return {"ok": False, "status": ended.status, "error": ended.error,
          **({"exit_code": ended.exit_code} if ended.exit_code is not None else {}),
          **({"seconds": ended.seconds} if ended.seconds is not None else {})}


def cell_of_run(run_dir: str) -> dict:
  """A run's cell from its directory; a run that did not finish with results (a
  timeout, a divergence) shows the last evaluation it logged."""
  out = cell(outcome.of_run(run_dir))
  if out["ok"]:
    return out
  try:
    evals = [r for r in report.load_records(run_dir) if r.get("test_accuracy") is not None]
  except (OSError, ValueError):  # a killed run's half-written last line
    evals = []
  if evals:
    last = evals[-1]
    out.update(test_accuracy=last["test_accuracy"], since_launch_s=last.get("since_launch_s"),
               examples=last.get("examples_seen"),
               bytes_sent_per_worker=last.get("bytes_sent_per_worker"))
  return out


def _mb(value) -> str:
  return "-" if value is None else f"{value / 1e6:.0f} MB"


def cell_text(c: dict) -> str:
  if not c.get("ok"):
    why = {"timeout": "timed out", "diverged": "diverged"}.get(
        c.get("status"), "timed out" if c.get("exit_code") == 124 else "failed")
    if c.get("test_accuracy") is None:
      return why
    return (f"{why} at {c['seconds']:.0f} s: {100 * c['test_accuracy']:.2f}% at its last "
            f"evaluation, {_mb(c.get('bytes_sent_per_worker'))}/worker"
            if c.get("seconds") else f"{why}: {100 * c['test_accuracy']:.2f}%")
  head = (f"**{c['time_to_target_s']:.0f} s**" if c["reached"] else
          f"{100 * c['test_accuracy']:.2f}% at cap ({c['since_launch_s']:.0f} s)")
  return f"{head}, {_mb(c['bytes_sent_per_worker'])}/worker"


def winners(cells: dict, approaches: Sequence[str], regime: str) -> list[str]:
  """The approaches that reached the target first in `regime` (ties kept)."""
  times = {a: cells[regime][a]["time_to_target_s"] for a in approaches
           if cells.get(regime, {}).get(a, {}).get("reached")}
  if not times:
    return []
  best = min(times.values())
  return [a for a, t in times.items() if t <= best * 1.02]


def markdown(cells: dict, approaches: Sequence[str], regimes: Sequence[Regime],
             target: float) -> str:
  """The grid: a row per regime, a column per approach; bold = time to target."""
  lines = ["| regime | " + " | ".join(approaches) + " | first to target |",
           "|" + "---|" * (len(approaches) + 2)]
  for r in regimes:
    row = [cell_text(cells.get(r.name, {}).get(a, {"ok": False})) for a in approaches]
    lines.append(f"| {r.name} ({r.what}) | " + " | ".join(row) + " | "
                 + (", ".join(winners(cells, approaches, r.name)) or "none") + " |")
  return (f"Time to {target:.0%} test accuracy since launch (bold), or the accuracy at the "
          f"cap; measured bytes sent per worker (task shim).\n\n" + "\n".join(lines))


def write(root: str, cells: dict, approaches: Sequence[str], regimes: Sequence[Regime],
          target: float, preamble: str) -> str:
  """regimes.md / regimes.json / regimes.png in `root`; returns the markdown table."""
  table = markdown(cells, approaches, regimes, target)
  with open(os.path.join(root, "regimes.md"), "w") as f:
    f.write(f"# Regimes\n\n{preamble}\n\n{table}\n")
  with open(os.path.join(root, "regimes.json"), "w") as f:
    json.dump({"target_accuracy": target, "approaches": list(approaches),
               "regimes": [dataclasses.asdict(r) for r in regimes], "cells": cells}, f,
              indent=2)
  heatmap(os.path.join(root, "regimes.png"), cells, approaches, [r.name for r in regimes])
  return table


def heatmap(path: str, cells: dict, approaches: Sequence[str], regimes: Sequence[str]) -> None:
  """Time to target relative to the regime's fastest approach (log colour scale);
  a run that missed the target is grey with its accuracy."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  grid = np.full((len(regimes), len(approaches)), np.nan)
  for i, r in enumerate(regimes):
    for j, a in enumerate(approaches):
      c = cells.get(r, {}).get(a, {})
      if c.get("ok") and c.get("reached"):
        grid[i, j] = c["time_to_target_s"]
  rel = grid / np.nanmin(np.where(np.isnan(grid), np.inf, grid), axis=1, keepdims=True)
  fig, ax = plt.subplots(figsize=(1.8 * len(approaches) + 2, 0.8 * len(regimes) + 1.5))
  ax.imshow(np.log2(rel), cmap="RdYlGn_r", vmin=0, vmax=3, aspect="auto")
  for i, r in enumerate(regimes):
    for j, a in enumerate(approaches):
      c = cells.get(r, {}).get(a, {})
      if math.isnan(grid[i, j]):
        if c.get("ok"):
          text = f"{100 * c['test_accuracy']:.1f}%\nat cap"
        elif c.get("test_accuracy") is not None:
          text = ("timed out" if c.get("exit_code") == 124 else "failed") + (
              f"\n{100 * c['test_accuracy']:.1f}%")
        else:
          text = "failed"
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.85"))
      else:
        text = f"{grid[i, j]:.0f} s\n{rel[i, j]:.1f}x"
      ax.text(j, i, text, ha="center", va="center", fontsize=8)
  ax.set_xticks(range(len(approaches)), approaches)
  ax.set_yticks(range(len(regimes)), regimes)
  ax.set_title("Time to target (x the regime's fastest); grey: target not reached")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
