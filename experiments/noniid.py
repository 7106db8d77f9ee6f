"""The non-IID study (issue 35): do FedProx, SCAFFOLD and adaptive servers save rounds
over FedAvg when clients' data differ and clients take many local steps?

Every algorithm of ALGORITHMS at C = 0.1, B = 10, E = 5 on each partition of PARTITIONS
(the pathological 2-shards-per-client split, Dirichlet alpha = 0.1, IID as the
control), on the paper's 2NN by default, each run to the target or the round cap and
resumable (`--resume` from its own checkpoint; a finished run is reused). Planning is
pure (`plan`); `run` is the grid loop of experiments/grid.py; `cell`/`write` turn run
directories into noniid.md/json/png.
"""

import dataclasses
import json
import os
import statistics
from typing import Sequence

from cluster import approaches
from experiments import budget as budget_lib
from experiments import grid
from experiments import outcome as outcome_lib
from experiments import report as report_lib
from experiments import runspec

# name -> what it adds to FedAvg's flags. FedProx's mu and the adaptive servers' learning
# rate on the grids their papers searched (Li et al. 2020: mu in {0.001, 0.01, 0.1, 1};
# Reddi et al. 2021: server lr on a log10 grid).
ALGORITHMS = {
    approaches.FEDAVG.name: (),  # the algorithm shares the approach's name
    **{f"fedprox_mu{mu:g}": ("--algorithm=fedprox", f"--proximal_strength={mu:g}")
       for mu in (0.01, 0.1, 1.0)},
    "scaffold": ("--algorithm=scaffold",),
    **{f"fed{opt}_lr{lr:g}": (f"--server_optimizer={opt}", f"--server_learning_rate={lr:g}")
       for opt in ("adam", "yogi") for lr in (0.001, 0.01, 0.1)},
}
PARTITIONS = {"shards": ("--partition=shards",),
              "dirichlet": ("--partition=dirichlet", "--dirichlet_alpha=0.1"),
              "iid": ("--partition=iid",)}
MODEL = "fedavg_2nn"   # McMahan et al.'s 2NN: Table 1 gives its rounds to 97 %
TARGET = 0.97
MAX_ROUNDS = 80
LOCAL_EPOCHS = 5
MARKS = (0.90, 0.95)   # rounds to these too: where the target is out of reach


def check(partitions: Sequence[str], algorithms: Sequence[str]) -> None:
  """ValueError (one line) for a name the study does not know."""
  for what, names, valid in (("--noniid_partitions", partitions, PARTITIONS),
                             ("--noniid_algorithms", algorithms, ALGORITHMS)):
    if bad := [n for n in names if n not in valid]:
      raise ValueError(f"{what}: unknown {', '.join(bad)}; valid: {', '.join(valid)}")


def point(partition: str, seed: int, first_seed: int) -> str:
  """A grid point: one partition under one seed ('shards', 'shards@43')."""
  return partition if seed == first_seed else f"{partition}@{seed}"


def plan(root: str, at: str, algorithms: Sequence[str], data: runspec.Data,
         num_workers: int, max_rounds: int, target: float, client_learning_rate: float,
         timeout: float, first_seed: int) -> list[runspec.RunSpec]:
  """Pure: the runs of grid point `at` ('<partition>[@<seed>]'), one per algorithm, each
  in root/<at>/<algorithm>."""
  partition, _, other = at.partition("@")
  seed = int(other) if other else first_seed
  recipe = dataclasses.replace(budget_lib.FEDAVG_DEFAULT, local_epochs=LOCAL_EPOCHS,
                               client_learning_rate=client_learning_rate)
  return [runspec.RunSpec(
      name, os.path.join(root, at, name), approaches.FEDAVG.name,
      (f"--num_workers={num_workers}", f"--timeout={timeout}"),
      (*data.trainer_args(), *PARTITIONS[partition], *recipe.trainer_args(),
       f"--rounds={max_rounds}", f"--target_accuracy={target:g}", "--stop_at_target",
       "--resume", f"--seed={seed}", *ALGORITHMS[name]),
      description=f"{partition}, E={LOCAL_EPOCHS}, to {100 * target:g} % or {max_rounds} "
      f"rounds", seed=int(other) if other else None) for name in algorithms]


def rounds_to(accuracy: Sequence[float], mark: float) -> int | None:
  """The first round (1-based) whose test accuracy reaches `mark`."""
  return next((i for i, a in enumerate(accuracy, 1) if a >= mark), None)


def cell(run_dir: str, target: float = TARGET) -> dict:
  """One run: status, its accuracy per round, rounds to the target and to MARKS."""
  ended = outcome_lib.of_run(run_dir)
  try:  # a run stopped mid-line leaves a torn last record: no curve then, not a crash
    run = (report_lib.load_run(run_dir) if os.path.exists(os.path.join(run_dir,
                                                                       "summary.json"))
           else {"records": report_lib.load_records(run_dir), "summary": {}})
  except ValueError:
    run = {"records": [], "summary": {}}
  _, accuracy = report_lib.round_series(run, "test_accuracy")
  return {"status": ended.status, "ok": ended.ok, "accuracy": accuracy,
          "rounds_run": len(accuracy), "best": max(accuracy, default=None),
          "rounds_to_target": rounds_to(accuracy, target),
          **{f"rounds_to_{round(100 * m)}": rounds_to(accuracy, m) for m in MARKS},
          "wall_s": run["summary"].get("wall_time_s")}


def seeds_of(cells: dict, partition: str, algorithm: str) -> list[dict]:
  """The cells of one algorithm on one partition, one per seed that ran."""
  return [runs[algorithm] for at, runs in cells.items()
          if at.partition("@")[0] == partition and algorithm in runs]


def summary_text(runs: Sequence[dict], key: str) -> str:
  """'23' (one seed), '23 (21-25)' (mean, min-max), 'not in 80 (best 96.1 %)',
  'diverged after 19 (best 95.8 %)'."""
  if not runs:
    return ""
  values = [r[key] for r in runs]
  reached = [v for v in values if v is not None]
  if len(reached) < len(values):
    missed = [r for r in runs if r[key] is None]
    best = max((r["best"] for r in missed if r["best"] is not None), default=None)
    if best is None:
      return missed[0]["status"]
    ran = max(r["rounds_run"] for r in missed)
    # A run that ended early (diverged, timed out) did not use its cap: say so.
    ended = sorted({r["status"] for r in missed} - {outcome_lib.OK})
    lead = f"{'/'.join(ended)} after" if ended else "not in"
    if not reached:
      return f"{lead} {ran} (best {100 * best:.1f} %)"
    return (f"{'/'.join(map(str, reached))} in {len(reached)}/{len(values)} seeds (else "
            f"best {100 * best:.1f} % in {ran})")
  if len(values) == 1:
    return str(values[0])
  return f"{statistics.mean(values):.0f} ({min(values)}-{max(values)})"


def table(cells: dict, partitions: Sequence[str], algorithms: Sequence[str], key: str) -> str:
  head = "| algorithm | " + " | ".join(partitions) + " |"
  rows = [head, "|---" * (len(partitions) + 1) + "|"]
  for name in algorithms:
    texts = [summary_text(seeds_of(cells, p, name), key) for p in partitions]
    if any(texts):
      rows.append(f"| {name} | " + " | ".join(texts) + " |")
  return "\n".join(rows)


def write(root: str, cells: dict, partitions: Sequence[str], algorithms: Sequence[str],
          target: float, max_rounds: int, preamble: str) -> str:
  """noniid.md/json/png in root; returns the markdown."""
  md = "\n\n".join([
      "# Under skewed data: rounds to target, FedAvg against its fixes", preamble,
      f"## Rounds to {100 * target:g} % test accuracy (cap {max_rounds})",
      table(cells, partitions, algorithms, "rounds_to_target"),
      *[part for m in MARKS for part in (
          f"## Rounds to {100 * m:g} %",
          table(cells, partitions, algorithms, f"rounds_to_{round(100 * m)}"))]])
  with open(os.path.join(root, "noniid.md"), "w") as f:
    f.write(md + "\n")
  with open(os.path.join(root, "noniid.json"), "w") as f:
    json.dump({"target": target, "max_rounds": max_rounds, "cells": cells}, f, indent=1)
  plot(cells, partitions, algorithms, target, os.path.join(root, "noniid.png"))
  return md


def plot(cells: dict, partitions: Sequence[str], algorithms: Sequence[str], target: float,
         path: str) -> bool:
  """Test accuracy per round, one panel per partition, one line per algorithm (its
  first seed)."""
  shown = [p for p in partitions if any(seeds_of(cells, p, a) for a in algorithms)]
  if not shown:
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4.5), squeeze=False)
  for ax, partition in zip(axes[0], shown):
    for name in algorithms:
      if runs := seeds_of(cells, partition, name):
        acc = runs[0]["accuracy"]
        ax.plot(range(1, len(acc) + 1), acc, label=name, linewidth=1,
                linestyle="-" if name in (approaches.FEDAVG.name, "scaffold") else "--")
    ax.axhline(target, color="grey", linestyle=":", linewidth=0.8)
    ax.set_ylim(0.8, 1.0)
    ax.set_title(partition)
    ax.set_xlabel("round")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("test accuracy")
  axes[0][-1].legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def report(root: str, partitions: Sequence[str], algorithms: Sequence[str],
           seeds: Sequence[int], target: float, max_rounds: int, preamble: str) -> str:
  """noniid.md/json/png from the runs already in root (of those partitions, algorithms
  and seeds), launching nothing: the study's one report after runs made in parts."""
  cells = {}
  for at in (point(p, s, seeds[0]) for s in seeds for p in partitions):
    found = {a: cell(os.path.join(root, at, a), target) for a in algorithms
             if os.path.isdir(os.path.join(root, at, a))}
    if found:
      cells[at] = found
  return write(root, cells, partitions, algorithms, target, max_rounds, preamble)


def run(root: str, partitions: Sequence[str], algorithms: Sequence[str], seeds: Sequence[int],
        data: runspec.Data, num_workers: int, max_rounds: int, target: float,
        client_learning_rate: float, timeout: float, preamble: str, console) -> int:
  """The grid, seed-major (every partition under the first seed before a second seed's
  runs), each point's algorithms in turn; noniid.* rewritten after every point."""
  points = [point(p, s, seeds[0]) for s in seeds for p in partitions]
  return grid.over(
      points, lambda at: plan(root, at, algorithms, data, num_workers, max_rounds, target,
                              client_learning_rate, timeout, seeds[0]),
      lambda run_dir: cell(run_dir, target),
      lambda cells, _: write(root, cells, partitions, algorithms, target, max_rounds,
                             preamble),
      console, reuse=True, what="noniid", root=root)
