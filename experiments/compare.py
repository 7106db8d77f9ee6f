"""The main job: train every approach on the same model, data and example budget, then report.

    python -m experiments.compare                  # defaults: all five, 2 workers, MNIST
    python -m experiments.compare --approaches=allreduce,gossip --budget_examples=120000

Each approach gets the same number of training examples (--budget_examples, summed
over all workers, clients and steps) and runs through the launcher, one after the
other; the report (report.md / report.json / report.png, fedavg_clients.png) goes
into the compare directory, one run directory per approach beside it.
"""

import datetime
import os
import sys
import time

from absl import flags

from cluster import approaches, exits
from experiments import budget as budget_lib
from experiments import report as report_lib
from launch import local, preflight
from trainers.common.errors import DataError
from trainers.flags import SYNTHETIC


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_list("approaches", list(approaches.VARIANTS),
                    f"Any of {', '.join(approaches.VARIANTS)}.", flag_values=fv)
  flags.DEFINE_integer("num_workers", 2, "Workers (FedAvg: executor services) per approach.",
                       flag_values=fv)
  flags.DEFINE_string("model", "cnn", "Model for every approach.", flag_values=fv)
  flags.DEFINE_string("dataset", "mnist", "Dataset for every approach.", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data directory.", flag_values=fv)
  flags.DEFINE_integer("synthetic_examples", 6000, "Size of --dataset=synthetic.",
                       flag_values=fv)
  flags.DEFINE_integer("budget_examples", 180_000, "Training examples per approach "
                       "(over all workers): 180,000 = 3 MNIST epochs.", flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "Per-worker batch (all but FedAvg).", flag_values=fv)
  flags.DEFINE_integer("clients_per_round", 10, "FedAvg clients per round.", flag_values=fv)
  flags.DEFINE_float("client_learning_rate", 0.05, "FedAvg client learning rate.",
                     flag_values=fv)
  flags.DEFINE_string("run_dir", None, "Compare directory (default runs/compare-<time>).",
                      flag_values=fv)
  flags.DEFINE_float("timeout", 1200, "Per-approach timeout, seconds.", flag_values=fv)
  flags.DEFINE_enum("preset", None, ["fedavg_paper"], "fedavg_paper: instead of the "
                    "comparison, McMahan et al.'s Table 2 CNN runs (IID and shards, C=0.1, "
                    "B=10, E=5 and E=1) to 99 %, reported beside the paper's rounds.",
                    flag_values=fv)
  flags.DEFINE_integer("paper_max_rounds", 400, "fedavg_paper: round limit per setting.",
                       flag_values=fv)


def num_train_examples(dataset: str, data_dir: str | None, synthetic_examples: int) -> int:
  """Training-set size; DataError (one line, no TF start-up) when it is not prepared."""
  if dataset == SYNTHETIC:
    return synthetic_examples
  try:
    preflight.check_dataset(dataset, data_dir)
  except ValueError as e:
    raise DataError(str(e)) from e
  from trainers.common import data  # pylint: disable=g-import-not-at-top  # TF: only now
  return data.num_examples(dataset, "train", data_dir)


def main(argv: list[str] | None = None, console=sys.stdout) -> int:
  fv = flags.FlagValues()
  define_flags(fv)
  try:
    fv(sys.argv if argv is None else argv)
    unknown = [a for a in fv.approaches if a not in approaches.VARIANTS]
    if unknown:
      raise flags.Error(f"unknown approach(es) {unknown}; valid: "
                        f"{', '.join(approaches.VARIANTS)}")
  except flags.Error as e:
    print(f"experiments.compare: error: {e}", file=sys.stderr)
    return 2
  if fv.preset == "fedavg_paper":
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return run_paper_preset(
        fv, os.path.abspath(fv.run_dir or os.path.join("runs", f"fedavg-paper-{stamp}")),
        console)
  try:
    num_train = num_train_examples(fv.dataset, fv.data_dir, fv.synthetic_examples)
  except DataError as e:
    print(f"experiments.compare: error: {e}", file=sys.stderr)
    return exits.DATA
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  root = os.path.abspath(fv.run_dir or os.path.join("runs", f"compare-{stamp}"))
  common = [f"--model={fv.model}", f"--dataset={fv.dataset}",
            f"--synthetic_examples={fv.synthetic_examples}"]
  if fv.data_dir:
    common.append(f"--data_dir={fv.data_dir}")
  plans = [budget_lib.plan_budget(a, fv.budget_examples, num_train, fv.num_workers,
                                  fv.batch_size, fv.clients_per_round,
                                  client_learning_rate=fv.client_learning_rate)
           for a in fv.approaches]
  print(f"compare: {len(plans)} approach(es), model {fv.model}, dataset {fv.dataset}, "
        f"budget {fv.budget_examples} examples each, {fv.num_workers} workers; in {root}",
        file=console, flush=True)
  done, failed = [], []
  for i, (name, plan) in enumerate(zip(fv.approaches, plans), 1):
    run_dir = os.path.join(root, name)
    argv = ["launch", f"--approach={plan.approach}", *plan.launcher_args,
            f"--run_dir={run_dir}", f"--timeout={fv.timeout}", "--", *common,
            *plan.trainer_args]
    print(f"compare: [{i}/{len(plans)}] {name}: {plan.description} "
          f"({plan.examples} examples) ...", file=console, flush=True)
    t = time.time()
    code = local.main(argv, console=console)
    status = "ok" if code == 0 else f"FAILED (exit {code})"
    print(f"compare: [{i}/{len(plans)}] {name}: {status} in {time.time() - t:.0f}s",
          file=console, flush=True)
    (done if code == 0 else failed).append(run_dir if code == 0 else name)
  if done:
    preamble = (f"Model `{fv.model}`, dataset `{fv.dataset}`, {fv.num_workers} workers, "
                f"budget {fv.budget_examples} training examples per approach:\n\n" +
                "\n".join(f"- {n}: {p.description} = {p.examples} examples"
                          for n, p in zip(fv.approaches, plans)))
    rows = report_lib.build_report(done, root, title="Four ways to distribute MNIST training",
                                   preamble=preamble)
    print(report_lib.markdown(rows, "Comparison"), file=console)
    print(f"compare: report in {root}/report.md, report.json, report.png", file=console,
          flush=True)
  if failed:
    print(f"compare: failed: {', '.join(failed)}", file=console, flush=True)
    return 1
  return 0


def run_paper_preset(fv: flags.FlagValues, root: str, console) -> int:
  """Runs the Table 2 settings one after another and reports rounds to 99 %."""
  runs = budget_lib.paper_preset(fv.paper_max_rounds, fv.client_learning_rate)
  data_args = [f"--dataset={fv.dataset}"] + ([f"--data_dir={fv.data_dir}"] if fv.data_dir
                                             else [])
  lines = ["| setting | rounds to 99 % (here) | paper | final test acc | rounds run | "
           "wall s |", "|---|---|---|---|---|---|"]
  code_all = 0
  for i, (name, args, paper) in enumerate(runs, 1):
    run_dir = os.path.join(root, name)
    print(f"compare: [{i}/{len(runs)}] {name} (paper: {paper} rounds to 99 %) ...",
          file=console, flush=True)
    code = local.main(["launch", f"--approach={approaches.FEDAVG.name}",
                       f"--num_workers={fv.num_workers}",
                       f"--run_dir={run_dir}", f"--timeout={fv.timeout}", "--", *data_args,
                       *args], console=console)
    code_all = code_all or code
    if code != 0:
      lines.append(f"| {name} | failed (exit {code}) | {paper} | | | |")
      continue
    s = report_lib.load_run(run_dir)["summary"]
    reached = s["rounds_to_target"] or f"not in {s['rounds_run']}"
    lines.append(f"| {name} | {reached} | {paper} | {100 * s['test_accuracy']:.2f}% | "
                 f"{s['rounds_run']} | {s['wall_time_s']:.0f} |")
  table = "\n".join(lines)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write("# FedAvg, McMahan et al. 2017 Table 2 (CNN, C=0.1, B=10)\n\n" + table + "\n")
  print(table, file=console)
  return 1 if code_all else 0


if __name__ == "__main__":
  sys.exit(main())
