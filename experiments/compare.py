"""The main job: time to accuracy. Every approach trains on the same model and data
until its test accuracy reaches the target, then the report says who got there first
and at what cost (seconds, examples, rounds, bytes on the wire).

    python -m experiments.compare                      # defaults: all five, 2 workers, 99 %
    python -m experiments.compare --approaches=allreduce,gossip --seeds=3
    python -m experiments.compare --budget_examples=180000   # fixed budget instead

Each approach runs through the launcher, one after the other, and stops at the first
evaluation (every --eval_every_examples; FedAvg: every round) at or above
--target_accuracy, or at the cap --max_examples (summed over all workers, clients and
steps). With --budget_examples every approach processes exactly that many examples
(time to target is still recorded when reached). The report (report.md / report.json
/ report.png, fedavg_clients.png) goes into the compare directory, one run directory
per approach (and seed) beside it.
"""

import dataclasses
import datetime
import os
import sys
import time
from typing import Sequence

from absl import flags

from cluster import approaches, cli, exits
from experiments import budget as budget_lib
from experiments import grid
from experiments import machine as machine_lib
from experiments import noniid as noniid_lib
from experiments import outcome as outcome_lib
from experiments import peers as peers_lib
from experiments import regimes as regimes_lib
from experiments import report as report_lib
from experiments import runspec
from experiments import scaling as scaling_lib
from launch import links, preflight
from trainers.common.errors import DataError
from trainers.common import flags as common_flags
from trainers.common.flags import SYNTHETIC
from trainers.federated import config as fed_config
from trainers.gossip import mixing as mixing_lib


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_list("approaches", list(approaches.VARIANTS),
                    f"Any of {', '.join(approaches.VARIANTS)}.", flag_values=fv)
  flags.DEFINE_integer("num_workers", 2, "Workers (FedAvg: executor services) per approach.",
                       flag_values=fv)
  flags.DEFINE_string("model", "small_cnn", "Model for every approach (the recipe: README).",
                      flag_values=fv)
  flags.DEFINE_string("dataset", "mnist", "Dataset for every approach.", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data directory.", flag_values=fv)
  flags.DEFINE_integer("synthetic_examples", 6000, "Size of --dataset=synthetic.",
                       flag_values=fv)
  flags.DEFINE_float("target_accuracy", 0.99, "Test accuracy each approach trains to.",
                     flag_values=fv)
  flags.DEFINE_integer("max_examples", 300_000, "Cap per approach (over all workers) when "
                       "the target is not reached: 300,000 = 5 MNIST epochs; the learning "
                       "rate schedule spans it.", flag_values=fv)
  flags.DEFINE_integer("budget_examples", None, "Fixed budget instead: every approach "
                       "processes exactly this many examples, target or not.", flag_values=fv)
  flags.DEFINE_integer("eval_every_examples", 15_000, "Evaluate the full test split every "
                       "this many training examples (a quarter MNIST epoch); FedAvg "
                       "evaluates every round.", flag_values=fv)
  flags.DEFINE_integer("seeds", 1, "Runs per approach (seeds --seed, --seed+1, ...); the "
                       "report gives mean and min/max.", flag_values=fv)
  flags.DEFINE_integer("seed", 42, "First seed.", flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "Per-worker batch (all but FedAvg).", flag_values=fv)
  flags.DEFINE_integer("clients_per_round", 10, "FedAvg clients per round (C=0.1 of 100).",
                       flag_values=fv)
  flags.DEFINE_float("client_learning_rate", 0.1, "FedAvg client learning rate.",
                     flag_values=fv)
  flags.DEFINE_string("run_dir", None, "Compare directory (default runs/compare-<time>).",
                      flag_values=fv)
  flags.DEFINE_bool("single_process", True, "Also train one plain Keras process (the "
                    "all-reduce row's global batch and recipe) to the same target: every "
                    "row's time, start-up and examples/s as a ratio to it.", flag_values=fv)
  flags.DEFINE_bool("peers", False, "Also run the tools a user would pick instead, on the "
                    "same work: flower_fedavg beside fedavg, horovod_allreduce beside "
                    "allreduce (each where its suite row runs; needs `make peers`).",
                    flag_values=fv)
  flags.DEFINE_float("timeout", 1200, "Per-run timeout, seconds.", flag_values=fv)
  flags.DEFINE_bool("reuse", False, "A run whose directory already holds a summary.json "
                    "is reported, not run again: an interrupted grid goes on where it "
                    "stopped (delete a run's directory to run it again).", flag_values=fv)
  flags.DEFINE_enum("preset", None, ["fedavg_paper", "noniid"], "fedavg_paper: instead of "
                    "the comparison, McMahan et al.'s Table 2 CNN runs (IID and shards, C=0.1, "
                    "B=10, E=5 and E=1) to 99 %, reported beside the paper's rounds. noniid: "
                    "FedAvg, FedProx, SCAFFOLD, FedAdam and FedYogi at E=5 on shards, "
                    "Dirichlet 0.1 and IID, rounds to target (experiments/noniid.py; "
                    "unless given, --model becomes fedavg_2nn and --target_accuracy 0.97); "
                    "resumable: run it again with the same --run_dir.", flag_values=fv)
  flags.DEFINE_integer("paper_max_rounds", 400, "fedavg_paper: round limit per setting.",
                       flag_values=fv)
  flags.DEFINE_list("paper_settings", [], "fedavg_paper: only these settings (iid_E5, "
                    "shards_E5, iid_E1, shards_E1; default all).", flag_values=fv)
  flags.DEFINE_list("paper_algorithms", [approaches.FEDAVG.name], "fedavg_paper: run each setting with "
                    "each of fedavg, fedprox (mu 0.1), fedadam, fedavgm, scaffold.",
                    flag_values=fv)
  _define_job_flags(fv)
  _define_noniid_flags(fv)
  _define_row_flags(fv)


def _define_row_flags(fv: flags.FlagValues) -> None:
  """Flags that reach one approach's rows only."""
  flags.DEFINE_enum("fedavg_backend", None, list(fed_config.BACKENDS), "FedAvg rows' "
                    "--fedavg_backend (default: the trainer's).", flag_values=fv)
  flags.DEFINE_enum("gossip_topology", None, list(mixing_lib.TOPOLOGIES), "Gossip rows' "
                    "--topology (default: the trainer's, ring).", flag_values=fv)


def _define_noniid_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_list("noniid_partitions", list(noniid_lib.PARTITIONS), "noniid: partitions, "
                    "in this order.", flag_values=fv)
  flags.DEFINE_list("noniid_algorithms", list(noniid_lib.ALGORITHMS), "noniid: algorithms "
                    f"({', '.join(noniid_lib.ALGORITHMS)}).", flag_values=fv)
  flags.DEFINE_integer("noniid_max_rounds", noniid_lib.MAX_ROUNDS, "noniid: round cap per "
                       "run.", flag_values=fv)
  flags.DEFINE_bool("noniid_report", False, "noniid: launch nothing; write noniid.md/json/png "
                    "from the runs already in --run_dir (a study run in parts).",
                    flag_values=fv)


def _define_job_flags(fv: flags.FlagValues) -> None:
  """The flags of the jobs beside the comparison: the regime grid and the sweep."""
  flags.DEFINE_list("regimes", [], "Run the comparison under each of these regimes "
                    "(experiments/regimes.py: all, or any of baseline, link_100mbit, "
                    "link_10mbit, straggler, shards) and write regimes.md/json/png. "
                    "Unless given, --num_workers becomes 4, --target_accuracy 0.98 and "
                    "--max_examples 60000.", flag_values=fv)
  flags.DEFINE_list("scaling", [], "The scaling sweep: every approach at each of these "
                    "worker counts (e.g. 2,4,8), plus the compute of one step without "
                    "contention; writes scaling.md/json/png (experiments/scaling.py). "
                    "Unless given, --target_accuracy becomes 0.98, --max_examples 180000 "
                    "and --eval_every_examples 7500.", flag_values=fv)


def num_train_examples(dataset: str, data_dir: str | None, synthetic_examples: int) -> int:
  """Training-set size; DataError (one line, no TF start-up) when it is not prepared."""
  if dataset == SYNTHETIC:
    return synthetic_examples
  try:
    preflight.check_dataset(dataset, data_dir)
  except ValueError as e:
    raise DataError(str(e)) from e
  n = preflight.prepared_num_examples(dataset, "train", data_dir)  # no TF start-up lines
  if n is not None:
    return n
  from trainers.common import data  # pylint: disable=g-import-not-at-top  # TF: only now
  return data.num_examples(dataset, "train", data_dir)


def _parse(argv: list[str]) -> flags.FlagValues:
  """The flags, checked; raises flags.Error with one line."""
  fv = flags.FlagValues()
  define_flags(fv)
  cli.exit_if_answered(argv, fv, cli.prog("experiments.compare"), __doc__)
  fv(argv)
  unknown = [a for a in fv.approaches if a not in approaches.VARIANTS]
  if unknown:
    raise flags.Error(f"unknown approach(es) {unknown}; valid: "
                      f"{', '.join(approaches.VARIANTS)}")
  if not 0 <= fv.target_accuracy <= 1:
    raise flags.Error(f"--target_accuracy must be in [0, 1] (0: none), got "
                      f"{fv.target_accuracy}")
  for name in ("max_examples", "budget_examples", "eval_every_examples", "seeds",
               "num_workers", "batch_size", "clients_per_round"):
    if fv[name].value is not None and fv[name].value < 1:
      raise flags.Error(f"--{name} must be >= 1, got {fv[name].value}")
  _check_peers(fv)
  if fv.model not in common_flags.MODELS:
    raise flags.Error(f"--model={fv.model} is not one of {', '.join(common_flags.MODELS)}")
  _grid_defaults(fv)
  if fv.preset == "noniid":
    try:
      noniid_lib.check(fv.noniid_partitions, fv.noniid_algorithms)
    except ValueError as e:
      raise flags.Error(str(e)) from e
    for name, value in (("model", noniid_lib.MODEL), ("target_accuracy", noniid_lib.TARGET)):
      if not fv[name].present:
        fv[name].value = value
  if fv.preset == "fedavg_paper":
    try:
      budget_lib.paper_preset(1, 0.1, tuple(fv.paper_settings) or None,
                              tuple(fv.paper_algorithms))
    except ValueError as e:
      raise flags.Error(str(e)) from e
  return fv


def _check_peers(fv: flags.FlagValues) -> None:
  if not fv.peers:
    return
  if why := peers_lib.missing():
    raise flags.Error(f"--peers: {why}")
  if not chosen_peers(fv):
    raise flags.Error(f"--peers: none of their suite rows "
                      f"({', '.join(p.beside.name for p in peers_lib.PEERS.values())}) "
                      f"is in --approaches={','.join(fv.approaches)}")


def _grid_defaults(fv: flags.FlagValues) -> None:
  """--regimes and --scaling checked, and their defaults where not given."""
  if fv.regimes:
    try:
      chosen = regimes_lib.parse(fv.regimes)
    except ValueError as e:
      raise flags.Error(str(e)) from e
    if any(r.needs_links for r in chosen) and (why := links.missing()):
      raise flags.Error(f"--regimes={','.join(fv.regimes)}: {why}")
    if fv.preset:
      raise flags.Error("--regimes and --preset are two different jobs; give one")
    # The regime grid's defaults: N=4 (so gossip's ring is not the full graph), and a
    # target and cap that keep the 10 Mbit/s runs within minutes.
    for name, value in (("num_workers", 4), ("target_accuracy", 0.98),
                        ("max_examples", 60_000)):
      if not fv[name].present:
        fv[name].value = value
  if fv.scaling:
    try:
      scaling_lib.parse_counts(fv.scaling)
    except ValueError as e:
      raise flags.Error(str(e)) from e
    if fv.regimes or fv.preset:
      raise flags.Error("--scaling is a job of its own; give it without --regimes/--preset")
    # N = 8 x 64 examples a step needs more than one epoch to reach 98 %; evaluating
    # every 7,500 examples gives the examples to target a finer grain.
    for name, value in (("target_accuracy", 0.98), ("max_examples", 180_000),
                        ("eval_every_examples", 7_500)):
      if not fv[name].present:
        fv[name].value = value


def data_of(fv: flags.FlagValues) -> runspec.Data:
  return runspec.Data(fv.model, fv.dataset, fv.data_dir, fv.synthetic_examples)


def chosen_peers(fv: flags.FlagValues) -> list[peers_lib.Peer]:
  """The peers whose suite row runs (none without --peers)."""
  return [p for p in peers_lib.PEERS.values()
          if fv.peers and p.beside.name in fv.approaches]


def row_names(fv: flags.FlagValues) -> list[str]:
  """The rows of a grid: the suite's approaches, then the peers'."""
  return list(fv.approaches) + [p.name for p in chosen_peers(fv)]


def fedavg_recipe(fv: flags.FlagValues) -> budget_lib.FedAvgRecipe:
  return dataclasses.replace(budget_lib.FEDAVG_DEFAULT, clients_per_round=fv.clients_per_round,
                             client_learning_rate=fv.client_learning_rate,
                             backend=fv.fedavg_backend)


SINGLE = "single_process"  # the reference row's name


def _examples(fv: flags.FlagValues) -> int:
  """What every run may process: the fixed budget, else the cap."""
  return fv.budget_examples or fv.max_examples


def _target(fv: flags.FlagValues) -> budget_lib.Target | None:
  """Where every run stops (--target_accuracy; with a fixed budget, recorded only)."""
  if not fv.target_accuracy:
    return None
  return budget_lib.Target(fv.target_accuracy, stop=fv.budget_examples is None,
                           eval_every_examples=fv.eval_every_examples)


def single_process_runs(fv: flags.FlagValues, num_train: int, root: str,
                        num_workers: int | None = None) -> list[runspec.RunSpec]:
  """The reference row: one process, plain Keras, the all-reduce row's global batch
  (per-worker batch x N) and learning-rate recipe, the same target, cap and cadence."""
  n = num_workers or fv.num_workers
  plan = budget_lib.plan_budget(approaches.ALLREDUCE_V.name, _examples(fv), num_train, 1,
                                fv.batch_size * n, target=_target(fv))
  plan = dataclasses.replace(plan, description=f"one process, plain Keras, batch "
                             f"{fv.batch_size * n}: {plan.description}")
  return _seed_runs(fv, SINGLE, plan, root, ("--plain_keras",))


def plan_runs(fv: flags.FlagValues, num_train: int, root: str,
              num_workers: int | None = None) -> list[runspec.RunSpec]:
  """Pure: every run, approach by approach (with `num_workers` workers; default
  --num_workers), each in root/<approach>[/seed_<k>]."""
  runs = []
  for name in fv.approaches:
    plan = budget_lib.plan_budget(name, _examples(fv), num_train,
                                  num_workers or fv.num_workers, fv.batch_size,
                                  fedavg_recipe(fv), target=_target(fv))
    if fv.gossip_topology and approaches.variant(name).approach is approaches.GOSSIP:
      plan = dataclasses.replace(plan, trainer_args=plan.trainer_args + (
          f"--topology={fv.gossip_topology}",))
    runs += _seed_runs(fv, name, plan, root)
  return runs + peers_lib.specs_beside(runs, chosen_peers(fv))


def _seed_runs(fv: flags.FlagValues, name: str, plan: budget_lib.Budget, root: str,
               extra_trainer_args=()) -> list[runspec.RunSpec]:
  """Row `name`'s run per seed, each in root/<name>[/seed_<k>], under --timeout."""
  several = fv.seeds > 1
  return [runspec.of_budget(
      name, plan, os.path.join(root, name, f"seed_{seed}") if several else
      os.path.join(root, name), data_of(fv), (f"--seed={seed}", *extra_trainer_args),
      seed=seed if several else None).with_args((f"--timeout={fv.timeout}",))
          for seed in range(fv.seed, fv.seed + fv.seeds)]


def main(argv: list[str] | None = None, console=sys.stdout) -> int:
  try:
    fv = _parse(sys.argv if argv is None else argv)
  except flags.Error as e:
    print(f"{cli.prog('experiments.compare')}: error: {e}", file=sys.stderr)
    return 2
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  if fv.preset == "fedavg_paper":
    return run_paper_preset(
        fv, os.path.abspath(fv.run_dir or os.path.join("runs", f"fedavg-paper-{stamp}")),
        console)
  try:
    num_train = num_train_examples(fv.dataset, fv.data_dir, fv.synthetic_examples)
  except DataError as e:
    print(f"experiments.compare: error: {e}", file=sys.stderr)
    return exits.DATA
  if fv.preset == "noniid":
    return run_noniid(fv, os.path.abspath(fv.run_dir or os.path.join("runs", f"noniid-{stamp}")),
                      console)
  if fv.regimes:
    root = os.path.abspath(fv.run_dir or os.path.join("runs", f"regimes-{stamp}"))
    chosen = regimes_lib.parse(fv.regimes)
    print(f"compare: {len(chosen)} regime(s) x {len(fv.approaches)} approach(es), model "
          f"{fv.model}, {fv.num_workers} workers, {_mode(fv)}; in {root}", file=console,
          flush=True)
    return grid.run_regimes(chosen, lambda r, n: plan_runs(fv, num_train, r, n), root,
                            row_names(fv), fv.target_accuracy,
                            _preamble(fv, plan_runs(fv, num_train, root)), console, fv.reuse)
  if fv.scaling:
    root = os.path.abspath(fv.run_dir or os.path.join("runs", f"scaling-{stamp}"))
    counts = scaling_lib.parse_counts(fv.scaling)
    print(f"compare: scaling over N = {', '.join(map(str, counts))}, {len(fv.approaches)} "
          f"approach(es), model {fv.model}, {_mode(fv)}; in {root}", file=console, flush=True)
    return grid.run_scaling(
        counts, lambda r, n: plan_runs(fv, num_train, r, n),
        lambda: measure_compute(fv, num_train, root, console), root, row_names(fv),
        fv.target_accuracy, _preamble(fv, plan_runs(fv, num_train, root), "N"), console,
        fv.reuse)
  return run_comparison(fv, num_train,
                        os.path.abspath(fv.run_dir or os.path.join("runs", f"compare-{stamp}")),
                        console)


def run_comparison(fv: flags.FlagValues, num_train: int, root: str, console) -> int:
  """The comparison: the single-process row, every approach's run, the report."""
  # The comparison (not the grids, whose regimes and worker counts a single process
  # cannot take) starts with the single-process reference row.
  runs = ((single_process_runs(fv, num_train, root) if fv.single_process else []) +
          plan_runs(fv, num_train, root))
  print(f"compare: {len(runs) // fv.seeds} row(s) x {fv.seeds} seed(s), model {fv.model}, "
        f"dataset {fv.dataset}, {fv.num_workers} workers, {_mode(fv)}; in {root}",
        file=console, flush=True)
  started = time.time()
  ran = grid.run_all(runs, console, fv.reuse)
  if ran.done:
    reference = next((s.run_dir for s in runs if s.name == SINGLE), None)
    where = machine_lib.this_machine()  # after the runs: a child process asks TF
    rows = report_lib.build_report(
        ran.done, root, title="Four ways to distribute MNIST training",
        preamble=f"Measured on {where.line()}.\n\n" + _preamble(fv, runs), seeds=fv.seeds,
        reference=reference, machine=where.line())
    print(f"compare: measured on {where.line()}", file=console)
    print(report_lib.markdown(rows, "Comparison"), file=console)
    print(f"compare: {len(ran.done)} run(s) in {time.time() - started:.0f}s; report in "
          f"{root}/report.md, report.json, report.png", file=console, flush=True)
  if ran.failed:
    print(f"compare: failed: {', '.join(ran.failed)}", file=console, flush=True)
    return ran.stopped or 1
  return 0


def _mode(fv: flags.FlagValues) -> str:
  return (f"budget {fv.budget_examples} examples each" if fv.budget_examples else
          f"to {fv.target_accuracy:.2%} test accuracy (cap {fv.max_examples} examples)")


def plain_keras_spec(data: runspec.Data, num_train: int, batch: int, budget: int,
                     run_dir: str, extra=(), launcher_extra=(), env=None,
                     name: str = "keras fit (1 process)") -> runspec.RunSpec:
  """One process training `budget` examples with plain Keras (the all-reduce trainer
  without a strategy: the same code, no collective): a step's compute without
  contention (the bench's baselines, the sweep's)."""
  plan = budget_lib.plan_budget(approaches.ALLREDUCE.name, budget, num_train, 1, batch)
  return runspec.of_budget(name, plan, run_dir, data, (*extra, "--plain_keras"),
                           env=tuple((env or {}).items())).with_args(launcher_extra)


def measure_compute(fv: flags.FlagValues, num_train: int, root: str, console) -> dict:
  """Seconds per step at the per-worker batch and per example at FedAvg's client
  batch, one process alone (its throughput over its training time, one epoch: a few
  hundred steps would be mostly warm-up)."""
  recipe = budget_lib.FEDAVG_DEFAULT
  out = {"batch_size": fv.batch_size, "client_batch_size": recipe.local_batch_size}
  for key, batch, extra in (("step_s", fv.batch_size, ()),
                            ("client_example_s", recipe.local_batch_size,
                             recipe.plain_args())):
    print(f"compare: compute without contention: one process, batch {batch}", file=console,
          flush=True)
    spec = plain_keras_spec(data_of(fv), num_train, batch, num_train,
                            os.path.join(root, "compute", f"batch_{batch}"), extra)
    ran = grid.run_all([spec], console, fv.reuse)
    if not ran.done:
      out[key] = None
      continue
    rate = outcome_lib.of_run(spec.run_dir).summary["examples_per_sec"]
    out[key] = (batch if key == "step_s" else 1) / rate
  return out


def _preamble(fv: flags.FlagValues, runs: Sequence[runspec.RunSpec],
              workers: str | None = None) -> str:
  seen = {}
  for spec in runs:
    seen.setdefault(spec.name, spec)
  return (f"Model `{fv.model}`, dataset `{fv.dataset}`, {workers or fv.num_workers} workers, "
          f"{_mode(fv)}, {fv.seeds} seed(s) from {fv.seed}:\n\n" +
          "\n".join(f"- {n}: {p.description} (at most {p.examples} examples)"
                     for n, p in seen.items()))


def _paper_run_finished(run_dir: str, max_rounds: int) -> bool:
  """A setting that reached 99 % or ran all its rounds is not run again (a diverged
  one is)."""
  ended = outcome_lib.of_run(run_dir)
  return ended.ok and (bool(ended.summary.get("rounds_to_target")) or
                       ended.summary.get("rounds_run", 0) >= max_rounds)


def run_paper_preset(fv: flags.FlagValues, root: str, console) -> int:
  """Runs the Table 2 settings one after another and reports rounds to 99 %."""
  runs = budget_lib.paper_preset(fv.paper_max_rounds, fv.client_learning_rate,
                                 tuple(fv.paper_settings) or None,
                                 tuple(fv.paper_algorithms))
  data = runspec.Data(budget_lib.PAPER_MODEL, fv.dataset, fv.data_dir)
  lines = ["| setting | rounds to 99 % (here) | paper | final test acc | rounds run | "
           "client lr | wall s (last process) |", "|---|---|---|---|---|---|---|"]
  code_all, finished = 0, {}
  for i, (name, args, paper) in enumerate(runs, 1):
    run_dir = os.path.join(root, name)
    if _paper_run_finished(run_dir, fv.paper_max_rounds):
      print(f"compare: [{i}/{len(runs)}] {name}: finished before, reported", file=console,
            flush=True)
      code = 0
    else:  # a fresh start, or (--resume) on from the setting's last checkpoint
      print(f"compare: [{i}/{len(runs)}] {name} (paper: {paper} rounds to 99 %) ...",
            file=console, flush=True)
      code = runspec.launch(runspec.RunSpec(
          name, run_dir, approaches.FEDAVG.name,
          (f"--num_workers={fv.num_workers}", f"--timeout={fv.timeout}"),
          (*data.trainer_args(), *args)), console)
    code_all = code_all or code
    if code != 0:
      lines.append(f"| {name} | failed (exit {code}) | {paper} | | | | |")
      if code in exits.STOPPED_BY_SIGNAL:
        break
      continue
    finished[name] = report_lib.load_run(run_dir)  # the table's row and the plot's line
    s = finished[name]["summary"]
    reached = s["rounds_to_target"] or f"not in {s['rounds_run']}"
    lines.append(f"| {name} | {reached} | {paper} | {100 * s['test_accuracy']:.2f}% | "
                 f"{s['rounds_run']} | {s['client_learning_rate']:g} | "
                 f"{s['wall_time_s']:.0f} |")
  table = "\n".join(lines)
  os.makedirs(root, exist_ok=True)
  if report_lib.plot_rounds(finished, os.path.join(root, "rounds.png"), target=0.99):
    print(f"compare: accuracy and client drift per round in {root}/rounds.png", file=console)
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write("# FedAvg, McMahan et al. 2017 Table 2 (CNN, C=0.1, B=10)\n\n" + table + "\n")
  print(table, file=console)
  return 1 if code_all else 0


def run_noniid(fv: flags.FlagValues, root: str, console) -> int:
  """Issue 35's study (experiments/noniid.py), seed by seed, partition by partition."""
  seeds = list(range(fv.seed, fv.seed + fv.seeds))
  print(f"compare: noniid study: {len(fv.noniid_algorithms)} algorithm(s) x "
        f"{len(fv.noniid_partitions)} partition(s) x {len(seeds)} seed(s), model {fv.model}, "
        f"E={noniid_lib.LOCAL_EPOCHS}, to {100 * fv.target_accuracy:g} % or "
        f"{fv.noniid_max_rounds} rounds, {fv.num_workers} service(s); in {root}",
        file=console, flush=True)
  preamble = (f"Model {fv.model}, C={fv.clients_per_round}/100, B=10, "
              f"E={noniid_lib.LOCAL_EPOCHS}, client lr {fv.client_learning_rate:g}, "
              f"{fv.num_workers} executor service(s), seeds {', '.join(map(str, seeds))}. "
              f"{machine_lib.this_machine().line()}\n\nCommand: `python -m experiments.compare "
              f"--preset=noniid --noniid_partitions={','.join(fv.noniid_partitions)} "
              f"--noniid_algorithms={','.join(fv.noniid_algorithms)} --model={fv.model} "
              f"--target_accuracy={fv.target_accuracy:g} "
              f"--noniid_max_rounds={fv.noniid_max_rounds} --num_workers={fv.num_workers} "
              f"--seed={fv.seed} --seeds={fv.seeds} --run_dir={root}`")
  if fv.noniid_report:
    print(noniid_lib.report(root, fv.noniid_partitions, fv.noniid_algorithms, seeds,
                            fv.target_accuracy, fv.noniid_max_rounds, preamble), file=console)
    return 0
  return noniid_lib.run(root, fv.noniid_partitions, fv.noniid_algorithms, seeds, data_of(fv),
                        fv.num_workers, fv.noniid_max_rounds, fv.target_accuracy,
                        fv.client_learning_rate, fv.timeout, preamble, console)


def run_main() -> None:
  """The console script's entry."""
  sys.exit(main())


if __name__ == "__main__":
  sys.exit(main())
