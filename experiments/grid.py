"""Running experiments' specs: one loop over runs, one loop over a grid's points.

`run_all` launches RunSpecs in turn (reusing finished ones with --reuse, by the one
rule of experiments/outcome.py) and stops at the first run the user stopped. `over`
runs a set of specs at each point of a grid (a regime, a worker count), collects
each run's cell and rewrites the grid's files after every point, so an interrupted
grid shows what finished. The regime grid and the scaling sweep are both `over`.
"""

import dataclasses
import os
import time
from typing import Callable, Sequence

from cluster import exits
from experiments import outcome as outcome_lib
from experiments import runspec


@dataclasses.dataclass
class Ran:
  """What a list of runs came to."""
  done: list[str] = dataclasses.field(default_factory=list)     # run dirs with results
  failed: list[str] = dataclasses.field(default_factory=list)   # "label (why)"
  stopped: int = 0  # the exit code of a launcher the user stopped (0: none)


def run_all(specs: Sequence[runspec.RunSpec], console, reuse: bool = False,
            tag: str = "compare") -> Ran:
  """Launches every spec in turn; with `reuse`, a run whose outcome is reusable is
  reported instead (a diverged or failed one runs again)."""
  ran = Ran()
  for i, spec in enumerate(specs, 1):
    head = f"{tag}: [{i}/{len(specs)}] {spec.label}"
    before = outcome_lib.of_run(spec.run_dir)
    if reuse and before.reusable_within(spec.timeout_s):
      print(f"{head}: reused {spec.run_dir}", file=console, flush=True)
      _tally(ran, spec, before)
      continue
    limit = f" (at most {spec.examples} examples)" if spec.examples else ""
    print(f"{head}: {spec.description}{limit} ...", file=console, flush=True)
    started = time.time()
    code = runspec.launch(spec, console)
    ended = outcome_lib.of_run(spec.run_dir)
    status = "ok" if ended.ok else f"FAILED ({ended.error or f'exit {code}'})"
    print(f"{head}: {status} in {time.time() - started:.0f}s", file=console, flush=True)
    _tally(ran, spec, ended)
    if code in exits.STOPPED_BY_SIGNAL:  # the user stopped it: not the next run either
      print(f"{tag}: stopped (exit {code}); {len(specs) - i} run(s) not started",
            file=console, flush=True)
      ran.stopped = code
      return ran
  return ran


def _tally(ran: Ran, spec: runspec.RunSpec, ended: outcome_lib.Outcome) -> None:
  if ended.ok:
    ran.done.append(spec.run_dir)
  else:
    ran.failed.append(f"{spec.label} ({ended.error})")


def over(points: Sequence[str], specs_at: Callable[[str], Sequence[runspec.RunSpec]],
         cell_of: Callable[[str], dict], write: Callable[[dict, int], str], console,
         reuse: bool = False, what: str = "grid", root: str = "") -> int:
  """The grid: at each point, run its specs and record cells[point][spec.name] =
  cell_of(run_dir); `write(cells, points done)` after each point returns the table
  (printed at the end, with `what`'s files in `root`). Returns the exit code: 0, 1 if
  any run failed, or a stopped launcher's."""
  cells, code, table, started = {}, 0, "", time.time()
  for point in points:
    specs = specs_at(point)
    ran = run_all(specs, console, reuse)
    cells[point] = {s.name: cell_of(s.run_dir) for s in specs}
    code = code or (1 if ran.failed else 0)
    os.makedirs(root or ".", exist_ok=True)
    table = write(cells, len(cells))
    if ran.stopped:
      return ran.stopped
  print(table, file=console)
  print(f"compare: {what} done in {time.time() - started:.0f}s; {root}/{what}.md, "
        f"{what}.json, {what}.png", file=console, flush=True)
  return code


# The two grids. `plan(root, num_workers)` is the comparison's specs (compare.plan_runs)
# with their run directories under root.
Plan = Callable[[str, int | None], Sequence[runspec.RunSpec]]


def run_regimes(chosen: Sequence, plan: Plan, root: str, approaches: Sequence[str],
                target: float, preamble: str, console, reuse: bool = False) -> int:
  """The comparison once per regime (root/<regime>/<approach>), then the grid."""
  from experiments import regimes as regimes_lib  # pylint: disable=g-import-not-at-top
  by_name = {r.name: r for r in chosen}

  def specs_at(name: str):
    regime = by_name[name]
    print(f"compare: regime {name}: {regime.what}", file=console, flush=True)
    return [s.with_args(regime.launcher_args, regime.trainer_args)
            for s in plan(os.path.join(root, name), None)]

  def write(cells: dict, done: int) -> str:
    return regimes_lib.write(root, cells, approaches, list(chosen)[:done], target, preamble)

  return over(list(by_name), specs_at, regimes_lib.cell_of_run, write, console, reuse,
              "regimes", root)


def run_scaling(counts: Sequence[int], plan: Plan, compute: Callable[[], dict], root: str,
                approaches: Sequence[str], target: float, preamble: str, console,
                reuse: bool = False) -> int:
  """The compute of one step alone, then the comparison once per worker count
  (root/n<N>/<approach>), then the sweep."""
  from experiments import scaling as scaling_lib  # pylint: disable=g-import-not-at-top
  measured = compute()

  def specs_at(n: str):
    # Large N on a small host oversubscribes it by design: the sweep measures examples
    # and bytes there, and shows (does not rank) the contended wall time.
    return [s.with_args(("--allow_oversubscribe",))
            for s in plan(os.path.join(root, f"n{n}"), int(n))]

  def write(cells: dict, done: int) -> str:
    return scaling_lib.write(root, cells, approaches, list(counts)[:done], measured, target,
                             preamble)

  return over([str(n) for n in counts], specs_at, scaling_lib.cell_of_run, write, console,
              reuse, "scaling", root)
