"""Benchmarks (not tests): throughput, launch latency and time-to-accuracy, on this machine.

    python -m experiments.bench       # or: make bench

For each approach and N in --num_workers (default 1,2,4) it trains --budget_examples
examples through the launcher and records training throughput (examples/s over
training time), the launcher's start-to-first-step latency and the final test
accuracy, beside a single-process Keras `fit` of the same model and data (the
practical ceiling on one machine). Writes bench.json in the bench directory and the
table into BENCHMARKS.md (between the BENCH markers), with the machine and command.

FedAvg's round is set beside the same client work (batch 10, SGD) in one plain Keras
process twice: with TF's default kernels (oneDNN) and with oneDNN off
(TF_ENABLE_ONEDNN_OPTS=0), the kernels TFF's prebuilt worker_binary runs (measured:
the variable changes nothing there, and its rounds run at the oneDNN-off rate).
"""

import dataclasses
import datetime
import functools
import json
import os
import platform
import sys
import time

from absl import flags

from cluster import approaches, cli, exits
from experiments import budget as budget_lib
from experiments import compare
from experiments import machine as machine_lib
from experiments import outcome
from experiments import peers as peers_lib
from experiments import runspec
from trainers.federated import config as fed_config

BEGIN, END = "<!-- BENCH:BEGIN -->", "<!-- BENCH:END -->"


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_list("approaches", list(approaches.VARIANTS), "Approaches to measure.",
                    flag_values=fv)
  flags.DEFINE_list("num_workers", ["1", "2"], "Worker counts.", flag_values=fv)
  flags.DEFINE_list("models", ["cnn", "mlp"], "Models, one table each.", flag_values=fv)
  flags.DEFINE_string("dataset", "mnist", "Dataset.", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data directory.", flag_values=fv)
  flags.DEFINE_integer("budget_examples", 60_000, "Training examples per measurement.",
                       flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "Per-worker batch.", flag_values=fv)
  flags.DEFINE_string("run_dir", None, "Bench directory (default runs/bench-<time>).",
                      flag_values=fv)
  flags.DEFINE_bool("cpu_budget", True, "Launch every run (the baseline too) with the "
                    "launcher's CPU budget per task (--nocpu_budget: TF's own pool sizes).",
                    flag_values=fv)
  flags.DEFINE_bool("peers", False, "Also measure the peers on the same work: Horovod's "
                    "all-reduce at each N beside allreduce's, Flower's steady FedAvg round "
                    "beside fedavg's (needs `make peers`).", flag_values=fv)
  flags.DEFINE_list("fedavg_backends", ["native", "mapreduce"], "FedAvg rows: one per "
                    "backend (--fedavg_backend: native = TFF's worker_binary, mapreduce = "
                    "TFF's MapReduceForm on TF's runtime), side by side.", flag_values=fv)
  flags.DEFINE_string("markdown", "BENCHMARKS.md", "File whose BENCH section is rewritten "
                      "('' to skip).", flag_values=fv)


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


# Off in the plain process: the kernels of TFF's worker_binary (which ignores it).
SAME_KERNELS_ENV = {"TF_ENABLE_ONEDNN_OPTS": "0"}


@functools.lru_cache(maxsize=None)
def _onednn(env: tuple) -> bool | None:
  return machine_lib.onednn_on(dict(env))


def kernels_of(spec: runspec.RunSpec) -> str:
  """Which kernels the run's training ran on: TF's oneDNN on or off in its processes
  (asked of TF with the run's environment), or, for the suite's FedAvg, in TFF's
  executor services (whose prebuilt worker_binary has its own)."""
  if (spec.approach == approaches.FEDAVG.name and not spec.program and
      fed_config.backend_of_args(spec.trainer_args) == fed_config.NATIVE):
    return f"TFF services: oneDNN {'on' if machine_lib.TFF_SERVICES_ONEDNN else 'off'}"
  return {True: "oneDNN on", False: "oneDNN off", None: "unknown"}[_onednn(spec.env)]


class Stopped(Exception):
  """The user stopped a run (Ctrl-C, SIGTERM): no other run starts."""

  def __init__(self, code: int):
    super().__init__(f"stopped (exit {code})")
    self.code = code


def _measure(spec: runspec.RunSpec) -> dict:
  """Launches `spec` (its environment goes to its tasks; this process's stays as it
  is) and returns its bench row; Stopped when the user stopped it."""
  launched = time.time()
  code = runspec.launch(spec)
  if code in exits.STOPPED_BY_SIGNAL:
    raise Stopped(code)
  ended = outcome.of_run(spec.run_dir)
  row = {"approach": spec.name, "exit_code": code if code or ended.ok else 1,
         "run_dir": spec.run_dir, "kernels": kernels_of(spec)}
  if code == 0 and ended.ok:
    s = ended.summary
    row.update(examples_per_sec=s["examples_per_sec"], test_accuracy=s["test_accuracy"],
               wall_time_s=s["wall_time_s"], examples=s.get("examples_processed"),
               # The launcher passes its start to the trainer (TFDIST_LAUNCH_TIME).
               first_step_latency_s=s.get("first_step_since_launch_s"),
               launcher_total_s=time.time() - launched, startup_s=s.get("startup_s"),
               round_time_s=s.get("round_time_s"),
               steady_round_time_s=s.get("steady_round_time_s"),
               examples_per_round=s.get("examples_per_round"))
  return row


def cpu_peak_flops(info: str | None = None, cores: int | None = None
                   ) -> tuple[float | None, str]:
  """(theoretical fp32 FLOP/s of the usable cores, how it was computed), from
  /proc/cpuinfo (or `info`): cores x SIMD lanes x 2 (FMA) x 2 FMA units x clock."""
  if info is None:
    try:
      with open("/proc/cpuinfo") as f:
        info = f.read()
    except OSError:
      return None, "no /proc/cpuinfo"
  flags_line = next((l for l in info.splitlines() if l.startswith("flags")), "")
  mhz = next((float(l.split(":")[1]) for l in info.splitlines() if l.startswith("cpu MHz")),
             None)
  lanes = 16 if " avx512f" in flags_line else 8 if " avx2" in flags_line else 4
  cores = cores or len(os.sched_getaffinity(0))
  if mhz is None:
    return None, "no clock in /proc/cpuinfo"
  peak = cores * lanes * 2 * 2 * mhz * 1e6
  return peak, f"{cores} cores x {lanes} fp32 lanes x 2 (FMA) x 2 units x {mhz / 1e3:.2f} GHz"


def matmul_flops(size: int = 1024, seconds: float = 2.0) -> float:
  """Measured fp32 FLOP/s of a square matmul on every core: the practical roofline."""
  with cli.quiet_tf_startup():  # TF's start-up lines stay off the console
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a = tf.random.normal((size, size))
  b = tf.random.normal((size, size))
  f = tf.function(lambda x, y: tf.matmul(x, y))
  f(a, b).numpy()
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    f(a, b).numpy()
    n += 1
  return 2 * size ** 3 * n / (time.perf_counter() - t0)


def model_train_flops(model: str) -> int:
  with cli.quiet_tf_startup():
    from models import build_model, flops  # pylint: disable=g-import-not-at-top
  return flops.train_flops_per_example(build_model(model))


def table(rows: list[dict], baseline: dict | None, flops_per_example: int | None = None,
          peaks: tuple[float | None, float | None] = (None, None),
          client_baseline: dict | None = None, kernel_baseline: dict | None = None) -> str:
  """The bench table: throughput and its ratio to the single-process fit, achieved
  FLOP/s against the measured peak, where the seconds to the first step went, and
  FedAvg's steady round time against the same client work in one plain process (with
  TF's default kernels; and with worker_binary's, oneDNN off)."""
  base = baseline.get("examples_per_sec") if baseline else None
  theory, measured = peaks
  lines = ["| approach | N | examples/s | vs 1-process fit | achieved GFLOP/s | % of peak "
           "(measured) | start→first step s | launcher / import / peers / cluster / data / "
           "first step s | FedAvg round s (vs same work, 1 process) | test acc | wall s | "
           "kernels |", "|" + "---|" * 12]
  if client_baseline:
    client_baseline = dict(client_baseline, approach="keras fit (1 process), B=10, SGD")
  if kernel_baseline:
    kernel_baseline = dict(kernel_baseline,
                           approach="keras fit (1 process), B=10, SGD, oneDNN off")
  for r in [x for x in (baseline, client_baseline, kernel_baseline) if x] + rows:
    if r.get("exit_code") != 0:
      lines.append(f"| {r['approach']} | {r.get('n', '-')} | failed (exit {r['exit_code']}) "
                   "|" + " |" * 9)
      continue
    ratio = f"{r['examples_per_sec'] / base:.2f}x" if base else "-"
    achieved = r["examples_per_sec"] * flops_per_example if flops_per_example else None
    gflops = "-" if achieved is None else f"{achieved / 1e9:.1f}"
    of_peak = f"{100 * achieved / measured:.0f}%" if achieved and measured else "-"
    lat = r.get("first_step_latency_s")
    phases = r.get("startup_s") or {}
    split = " / ".join("-" if phases.get(p) is None else f"{phases[p]:.1f}"
                       for p in ("launcher", "import", "peers", "cluster", "data",
                                 "first_step"))
    round_s, vs = r.get("steady_round_time_s"), r.get("round_vs_keras")
    same = r.get("round_vs_keras_same_kernels")
    rounds = "-" if round_s is None else f"{round_s:.2f}" + (
        f" ({vs:.2f}x" + (f"; {same:.2f}x oneDNN off" if same is not None else "") + ")"
        if vs is not None else "")
    lines.append(f"| {r['approach']} | {r.get('n', 1)} | {r['examples_per_sec']:.0f} | "
                 f"{ratio} | {gflops} | {of_peak} | {'-' if lat is None else f'{lat:.1f}'} | "
                 f"{split} | {rounds} | {100 * r['test_accuracy']:.2f}% | "
                 f"{r['wall_time_s']:.1f} | {r.get('kernels', '-')} |")
  lines += ["", "Peak of this machine (fp32): " + ", ".join(
      x for x in (f"{theory / 1e9:.0f} GFLOP/s theoretical" if theory else "",
                  f"{measured / 1e9:.0f} GFLOP/s measured (1024² matmul, every core)"
                  if measured else "") if x) + "." if (theory or measured) else ""]
  return "\n".join(lines)


def _fedavg_round_ratio(row: dict, client_base: dict | None) -> float | None:
  """A FedAvg round's time over the same client work (examples, batch, epochs) done
  by one plain Keras process: steady round time / (examples per round / its rate)."""
  rate = client_base.get("examples_per_sec") if client_base else None
  if not rate or not row.get("steady_round_time_s") or not row.get("examples_per_round"):
    return None
  return row["steady_round_time_s"] / (row["examples_per_round"] / rate)


def _backends(suite: runspec.RunSpec, backends: list[str]) -> list[runspec.RunSpec]:
  """A FedAvg row once per --fedavg_backends (named by backend when there are several;
  the first in the row's own directory), any other row as it is."""
  if approaches.variant(suite.name).approach is not approaches.FEDAVG:
    return [suite]
  return [dataclasses.replace(
      suite.with_args(trainer_args=(f"--fedavg_backend={b}",)),
      name=suite.name if len(backends) == 1 else f"{suite.name} ({b})",
      run_dir=suite.run_dir if i == 0 else f"{suite.run_dir}-{b}")
          for i, b in enumerate(backends)]


def _peer_specs(chosen, suite: runspec.RunSpec, root: str, model: str, n: int
                ) -> list[runspec.RunSpec]:
  """Each chosen peer on `suite`'s work; Flower also with oneDNN off, the kernels TFF's
  worker_binary runs: the suite's FedAvg against Flower with the same kernels."""
  out = []
  for p in chosen:
    if p.beside.name != suite.name:
      continue
    out.append(peers_lib.beside(p, suite, run_dir=os.path.join(root, model, f"{p.name}-n{n}")))
    if p is peers_lib.FLOWER:
      off = peers_lib.beside(p, suite, run_dir=os.path.join(
          root, model, f"{p.name}-onednn-off-n{n}")).with_args(env=SAME_KERNELS_ENV)
      out.append(dataclasses.replace(off, name=f"{p.name} (oneDNN off)"))
  return out


def bench_model(fv: flags.FlagValues, model: str, root: str, counts: list[int],
                num_train: int) -> dict:
  """Every row for one model: the single-process baselines, then each approach at each
  N. Returns the model's results; Stopped when the user stopped a run."""
  data = runspec.Data(model, fv.dataset, fv.data_dir)
  # The same CPU budget rules for every run, the single-process baselines included.
  budget_flag = () if fv.cpu_budget else ("--nocpu_budget",)

  def baseline(name: str, batch: int, extra, env: dict | None = None) -> dict:
    spec = compare.plain_keras_spec(data, num_train, batch, fv.budget_examples,
                                    os.path.join(root, model, name), extra, budget_flag, env)
    print(f"bench: {model}: single-process Keras fit, batch {batch} ({spec.description})",
          flush=True)
    return _measure(spec)

  base = baseline("baseline", fv.batch_size, [])
  # FedAvg's client work as one plain process does it: batch B=10, plain SGD; and the
  # same with the kernels TFF's worker_binary runs.
  client_base = kernel_base = None
  chosen = [p for p in peers_lib.PEERS.values() if fv.peers and p.beside.name in fv.approaches]
  if approaches.FEDAVG.name in fv.approaches:  # (and Flower's, beside it)
    recipe = budget_lib.FEDAVG_DEFAULT
    client_base = baseline("baseline_b10", recipe.local_batch_size, recipe.plain_args())
    kernel_base = baseline("baseline_b10_onednn_off", recipe.local_batch_size,
                           recipe.plain_args(), SAME_KERNELS_ENV)
  rows = []
  for name in fv.approaches:
    for n in counts:
      plan = budget_lib.plan_budget(name, fv.budget_examples, num_train, n, fv.batch_size)
      run_dir = os.path.join(root, model, f"{name}-n{n}")
      print(f"bench: {model}: {name} N={n} ({plan.description})", flush=True)
      suite = runspec.of_budget(name, plan, run_dir, data).with_args(budget_flag)
      # The suite's row (FedAvg: one per backend), then each peer's on the same work.
      for spec in _backends(suite, fv.fedavg_backends) + _peer_specs(chosen, suite, root,
                                                                      model, n):
        if spec.name != name:
          print(f"bench: {model}: {spec.name} N={n} beside {name}", flush=True)
        row = _measure(spec)
        row["n"] = n
        if approaches.variant(name).approach is approaches.FEDAVG:
          row["round_vs_keras"] = _fedavg_round_ratio(row, client_base)
          row["round_vs_keras_same_kernels"] = _fedavg_round_ratio(row, kernel_base)
        rows.append(row)
  return {"model": model, "baseline": base, "client_baseline": client_base,
          "kernel_baseline": kernel_base, "rows": rows}


def _parse(argv: list[str]) -> tuple[flags.FlagValues, list[int]]:
  """The flags and worker counts, checked; ValueError (one line) otherwise."""
  fv = flags.FlagValues()
  define_flags(fv)
  cli.exit_if_answered(argv, fv, cli.prog("experiments.bench"), __doc__)
  try:
    fv(argv)
  except flags.Error as e:
    raise ValueError(str(e)) from e
  try:
    counts = [int(n) for n in fv.num_workers]
  except ValueError:
    raise ValueError(f"--num_workers={','.join(fv.num_workers)}: not a list of integers "
                     "(e.g. 1,2,4)") from None
  if any(n < 1 for n in counts):
    raise ValueError(f"--num_workers={','.join(fv.num_workers)}: every count must be >= 1")
  for name in fv.approaches:
    approaches.variant(name)  # ConfigError (a ValueError) names a bad one
  if bad := [b for b in fv.fedavg_backends if b not in fed_config.BACKENDS] or (
      not fv.fedavg_backends):
    raise ValueError(f"--fedavg_backends={','.join(fv.fedavg_backends)}: give one or more "
                     f"of {', '.join(fed_config.BACKENDS)}")
  if not fv.models:
    raise ValueError("--models is empty")
  if fv.peers and (why := peers_lib.missing()):
    raise ValueError(f"--peers: {why}")
  return fv, counts


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv if argv is None else argv
  try:
    fv, counts = _parse(argv)
  except ValueError as e:
    print(f"experiments.bench: error: {e}", file=sys.stderr)
    return 2
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  root = os.path.abspath(fv.run_dir or os.path.join("runs", f"bench-{stamp}"))
  try:
    num_train = compare.num_train_examples(fv.dataset, fv.data_dir, 0)
  except compare.DataError as e:
    print(f"experiments.bench: error: {e}", file=sys.stderr)
    return exits.DATA
  results = []
  for model in fv.models:
    try:
      results.append(bench_model(fv, model, root, counts, num_train))
    except Stopped as e:  # the user stopped a run: not the next one either
      print(f"bench: {e}", flush=True)
      return e.code
  _write(fv, results, root, "python -m experiments.bench " + " ".join(argv[1:]))
  ok = all(row["exit_code"] == 0 for r in results
           for row in r["rows"] + [r["baseline"]] + [
               b for b in (r["client_baseline"], r["kernel_baseline"]) if b])
  return 0 if ok else 1


def _write(fv: flags.FlagValues, results: list[dict], root: str, cmd: str) -> None:
  """bench.json and the table (printed, and into --markdown), with the machine line."""
  # After the runs: TF in this process, and every core, only now.
  theory, how = cpu_peak_flops()
  peaks = (theory, matmul_flops())
  where = machine_lib.this_machine(peaks[1] / 1e9)
  for r in results:
    r["train_flops_per_example"] = model_train_flops(r["model"])
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "bench.json"), "w") as f:
    json.dump({"machine": machine(), "machine_line": where.line(),
               "kernels": dataclasses.asdict(where), "command": cmd, "models": results,
               "peak_flops": {"theoretical": peaks[0], "matmul": peaks[1]}}, f, indent=2)
  parts = [f"Measured {datetime.date.today()} on {machine()}: {where.line()}.\n\n"
           f"Command: `{cmd.strip()}` "
           f"(dataset `{fv.dataset}`, {fv.budget_examples} training examples per row, "
           f"per-worker batch {fv.batch_size}; FedAvg: E=1, B=10, 10 clients/round, "
           f"N = executor services; FedAvg's round is compared with one plain Keras "
           f"process doing the same client work: batch 10, SGD; with TF's default "
           f"kernels, and with oneDNN off as in TFF's worker_binary). Theoretical peak: "
           f"{how}."]
  for r in results:
    parts.append(f"### `{r['model']}` ({r['train_flops_per_example'] / 1e6:.2f} MFLOP per "
                 f"training example)\n\n" + table(r["rows"], r["baseline"],
                                                    r["train_flops_per_example"], peaks,
                                                    r["client_baseline"],
                                                    r["kernel_baseline"]))
  text = "\n\n".join(parts)
  print(text)
  if fv.markdown:
    _splice(fv.markdown, text)
    print(f"bench: table written to {fv.markdown}")


def _splice(path: str, text: str) -> None:
  old = open(path).read() if os.path.exists(path) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
  if BEGIN not in old:
    old += f"\n{BEGIN}\n{END}\n"
  head, rest = old.split(BEGIN, 1)
  tail = rest.split(END, 1)[1] if END in rest else ""
  with open(path, "w") as f:
    f.write(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def run_main() -> None:
  """The console script's entry."""
  sys.exit(main())


if __name__ == "__main__":
  sys.exit(main())
