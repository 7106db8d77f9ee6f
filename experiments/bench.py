"""Benchmarks (not tests): throughput, launch latency and time-to-accuracy, on this machine.

    python -m experiments.bench       # or: make bench

For each approach and N in --num_workers (default 1,2,4) it trains --budget_examples
examples through the launcher and records training throughput (examples/s over
training time), the launcher's start-to-first-step latency and the final test
accuracy, beside a single-process Keras `fit` of the same model and data (the
practical ceiling on one machine). Writes bench.json in the bench directory and the
table into BENCHMARKS.md (between the BENCH markers), with the machine and command.
"""

import datetime
import json
import os
import platform
import sys
import time

from absl import flags

from cluster import approaches, exits
from experiments import budget as budget_lib
from experiments import compare
from launch import local

BEGIN, END = "<!-- BENCH:BEGIN -->", "<!-- BENCH:END -->"


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_list("approaches", list(approaches.VARIANTS), "Approaches to measure.",
                    flag_values=fv)
  flags.DEFINE_list("num_workers", ["1", "2", "4"], "Worker counts.", flag_values=fv)
  flags.DEFINE_string("model", "mlp", "Model.", flag_values=fv)
  flags.DEFINE_string("dataset", "mnist", "Dataset.", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data directory.", flag_values=fv)
  flags.DEFINE_integer("budget_examples", 60_000, "Training examples per measurement.",
                       flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "Per-worker batch.", flag_values=fv)
  flags.DEFINE_string("run_dir", None, "Bench directory (default runs/bench-<time>).",
                      flag_values=fv)
  flags.DEFINE_string("markdown", "BENCHMARKS.md", "File whose BENCH section is rewritten "
                      "('' to skip).", flag_values=fv)


def first_step_latency(run_dir: str, launched_at: float) -> float | None:
  """Seconds from the launcher's start to the trainer's first finished step/round."""
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    for line in f:
      rec = json.loads(line)
      if rec["kind"] == "first_step":
        return rec["time"] - launched_at
  return None


def machine() -> str:
  cpus = os.cpu_count()
  mem = ""
  try:
    with open("/proc/meminfo") as f:
      mem = f", {int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
  except OSError:
    pass
  model = ""
  try:
    with open("/proc/cpuinfo") as f:
      model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
  except OSError:
    pass
  return f"{platform.node()}: {cpus} CPU core(s) {model}{mem}, {platform.platform()}"


def _measure(name: str, argv: list[str], run_dir: str) -> dict:
  launched = time.time()
  code = local.main(argv)
  row = {"approach": name, "exit_code": code, "run_dir": run_dir}
  if code == 0:
    with open(os.path.join(run_dir, "summary.json")) as f:
      s = json.load(f)
    row.update(examples_per_sec=s["examples_per_sec"], test_accuracy=s["test_accuracy"],
               wall_time_s=s["wall_time_s"], examples=s.get("examples_processed"),
               first_step_latency_s=first_step_latency(run_dir, launched),
               launcher_total_s=time.time() - launched)
  return row


def table(rows: list[dict], baseline: dict | None) -> str:
  base = baseline.get("examples_per_sec") if baseline else None
  lines = ["| approach | N | examples/s | vs 1-process fit | start→first step s | "
           "test acc | wall s |", "|---|---|---|---|---|---|---|"]
  for r in ([baseline] if baseline else []) + rows:
    if r.get("exit_code") != 0:
      lines.append(f"| {r['approach']} | {r.get('n', '-')} | failed (exit {r['exit_code']}) "
                   "| | | | |")
      continue
    ratio = f"{r['examples_per_sec'] / base:.2f}x" if base else "-"
    lat = r.get("first_step_latency_s")
    lines.append(f"| {r['approach']} | {r.get('n', 1)} | {r['examples_per_sec']:.0f} | "
                 f"{ratio} | {lat:.1f} | {100 * r['test_accuracy']:.2f}% | "
                 f"{r['wall_time_s']:.1f} |" if lat is not None else
                 f"| {r['approach']} | {r.get('n', 1)} | {r['examples_per_sec']:.0f} | "
                 f"{ratio} | - | {100 * r['test_accuracy']:.2f}% | {r['wall_time_s']:.1f} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv if argv is None else argv
  fv = flags.FlagValues()
  define_flags(fv)
  try:
    fv(argv)
    counts = [int(n) for n in fv.num_workers]
  except (flags.Error, ValueError) as e:
    print(f"experiments.bench: error: {e}", file=sys.stderr)
    return 2
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  root = os.path.abspath(fv.run_dir or os.path.join("runs", f"bench-{stamp}"))
  try:
    num_train = compare.num_train_examples(fv.dataset, fv.data_dir, 0)
  except compare.DataError as e:
    print(f"experiments.bench: error: {e}", file=sys.stderr)
    return exits.DATA
  common = [f"--model={fv.model}", f"--dataset={fv.dataset}"] + (
      [f"--data_dir={fv.data_dir}"] if fv.data_dir else [])
  # Baseline: the same trainer code as all-reduce, one process, plain Keras (no strategy).
  base_plan = budget_lib.plan_budget(approaches.ALLREDUCE.name, fv.budget_examples, num_train,
                                     1, fv.batch_size)
  base_dir = os.path.join(root, "baseline")
  print(f"bench: baseline single-process Keras fit ({base_plan.description})", flush=True)
  baseline = _measure("keras fit (1 process)", [
      "launch", f"--approach={approaches.ALLREDUCE.name}", "--num_workers=1", f"--run_dir={base_dir}", "--",
      *common, *base_plan.trainer_args, "--plain_keras"], base_dir)
  rows = []
  for name in fv.approaches:
    for n in counts:
      plan = budget_lib.plan_budget(name, fv.budget_examples, num_train, n, fv.batch_size)
      run_dir = os.path.join(root, f"{name}-n{n}")
      print(f"bench: {name} N={n} ({plan.description})", flush=True)
      row = _measure(name, ["launch", f"--approach={plan.approach}", *plan.launcher_args,
                            f"--run_dir={run_dir}", "--", *common, *plan.trainer_args],
                     run_dir)
      row["n"] = n
      rows.append(row)
  os.makedirs(root, exist_ok=True)
  cmd = "python -m experiments.bench " + " ".join(argv[1:])
  with open(os.path.join(root, "bench.json"), "w") as f:
    json.dump({"machine": machine(), "command": cmd, "baseline": baseline, "rows": rows}, f,
              indent=2)
  text = (f"Measured {datetime.date.today()} on {machine()}.\n\nCommand: `{cmd.strip()}` "
          f"(model `{fv.model}`, dataset `{fv.dataset}`, {fv.budget_examples} training "
          f"examples per row, per-worker batch {fv.batch_size}; FedAvg: E=1, B=10, 10 "
          f"clients/round, N = executor services).\n\n" + table(rows, baseline))
  print(text)
  if fv.markdown:
    _splice(fv.markdown, text)
    print(f"bench: table written to {fv.markdown}")
  return 0 if all(r["exit_code"] == 0 for r in rows + [baseline]) else 1


def _splice(path: str, text: str) -> None:
  old = open(path).read() if os.path.exists(path) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
  if BEGIN not in old:
    old += f"\n{BEGIN}\n{END}\n"
  head, rest = old.split(BEGIN, 1)
  tail = rest.split(END, 1)[1] if END in rest else ""
  with open(path, "w") as f:
    f.write(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
  sys.exit(main())
