"""Build the comparison report from run directories.

    python -m experiments.report RUN_DIR [RUN_DIR ...] [--out_dir=DIR]

Writes report.md (one row per run), report.json (the same figures) and report.png
(test accuracy against wall time and against training examples processed, one
curve per run), plus fedavg_clients.png (per-client loss curves) for runs that
record clients. Every approach writes the same summary core and the same
"epoch"/"round" records (trainers/common/session.py, progress.py), so nothing
here depends on which approach a run was.
"""

import json
import math
import os
import sys
from typing import Any, Sequence

from absl import flags

TARGETS = (0.97, 0.98)


def load_run(run_dir: str) -> dict:
  """summary.json, config.json and metrics.jsonl of one run."""
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  config = {}
  if os.path.exists(os.path.join(run_dir, "config.json")):
    with open(os.path.join(run_dir, "config.json")) as f:
      config = json.load(f)
  records = []
  if os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f if line.strip()]
  return {"run_dir": run_dir, "summary": summary, "config": config, "records": records}


def label(run: dict) -> str:
  return run["summary"].get("label") or run["summary"]["approach"]


def accuracy_curve(run: dict) -> list[tuple[float, int, float]]:
  """(seconds since the trainer started, examples processed, test accuracy) per evaluation."""
  return [(float(r["elapsed_s"]), int(r["examples_seen"]), float(r["test_accuracy"]))
          for r in run["records"]
          if r["kind"] in ("eval", "epoch", "round") and "test_accuracy" in r]


def time_to(curve, target: float) -> float | None:
  return next((t for t, _, acc in curve if acc >= target), None)


def row(run: dict) -> dict[str, Any]:
  """The figures of one report row."""
  s = run["summary"]
  curve = accuracy_curve(run)
  return {
      "approach": label(run), "workers": s.get("num_workers"), "model": s.get("model"),
      "dataset": s.get("dataset"), "test_accuracy": s.get("test_accuracy"),
      "test_loss": s.get("test_loss"), "wall_time_s": s.get("wall_time_s"),
      "train_time_s": s.get("train_time_s"), "examples_processed": s.get("examples_processed"),
      "examples_per_sec": s.get("examples_per_sec"),
      **{f"time_to_{int(t * 100)}_s": time_to(curve, t) for t in TARGETS},
      "bytes_per_worker": s.get("bytes_sent_per_worker"), "notes": s.get("notes", ""),
      "run_dir": run["run_dir"],
  }


def _fmt(value, kind: str = "") -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  if kind == "pct":
    return f"{100 * value:.2f}%"
  if kind == "s":
    return f"{value:.1f}"
  if kind == "bytes":
    return f"{value / 1e6:.1f} MB"
  if isinstance(value, float):
    return f"{value:.0f}" if value >= 100 else f"{value:.4f}"
  return str(value)


def markdown(rows: Sequence[dict], title: str = "Comparison") -> str:
  head = ["approach", "workers", "test acc", "test loss", "wall s", "train s", "examples",
          "ex/s", "to 97% s", "to 98% s", "bytes/worker", "notes"]
  lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [r["approach"], _fmt(r["workers"]), _fmt(r["test_accuracy"], "pct"),
             _fmt(r["test_loss"]), _fmt(r["wall_time_s"], "s"), _fmt(r["train_time_s"], "s"),
             _fmt(r["examples_processed"]), _fmt(r["examples_per_sec"]),
             _fmt(r["time_to_97_s"], "s"), _fmt(r["time_to_98_s"], "s"),
             _fmt(r["bytes_per_worker"], "bytes"), r["notes"]]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Wall s: trainer process start to summary (includes TF's import, start-up, "
            "data loading and evaluation); train s: time in training steps/rounds only, which "
            "ex/s divides. Time to 97/98 %: trainer process start to the first evaluation at "
            "or above it "
            "(evaluations at each epoch's end or round, and every --eval_every_examples). "
            "Bytes/worker: payload a gossip "
            "worker sent to its neighbours, or a FedAvg client uploaded on average; '-' "
            "where TF's runtime moves the data (all-reduce, PS).", ""]
  return "\n".join(lines)


def plot(runs: Sequence[dict], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
  for run in runs:
    curve = accuracy_curve(run)
    if not curve:
      continue
    t, ex, acc = zip(*curve)
    a.plot(t, acc, marker="o", label=label(run))
    b.plot(ex, acc, marker="o", label=label(run))
  for ax, xlabel in ((a, "wall time since start (s)"), (b, "training examples processed")):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle("Test accuracy per approach")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_clients(run: dict, path: str) -> bool:
  """Federated runs: one loss curve per client, over the rounds it took part in;
  False (nothing written) for a run that records no clients."""
  per_client: dict[int, list[tuple[int, float]]] = {}
  for r in run["records"]:
    for c in r.get("clients", ()):
      per_client.setdefault(c["client"], []).append((r["round"], c["loss"]))
  if not per_client:
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for client, points in sorted(per_client.items()):
    rounds, losses = zip(*points)
    ax.plot(rounds, losses, marker=".", alpha=0.6, linewidth=0.8)
  ax.set_xlabel("round")
  ax.set_ylabel("loss of the broadcast model on the client's data")
  ax.set_title(f"FedAvg: per-client loss ({len(per_client)} clients)")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def build_report(run_dirs: Sequence[str], out_dir: str, title: str = "Comparison",
                 preamble: str = "") -> list[dict]:
  """Writes report.md, report.json, report.png (+ fedavg_clients.png); returns the rows."""
  runs = [load_run(d) for d in run_dirs]
  rows = [row(r) for r in runs]
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write((preamble + "\n\n" if preamble else "") + markdown(rows, title))
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump({"title": title, "rows": rows}, f, indent=2)
  plot(runs, os.path.join(out_dir, "report.png"))
  for run in runs:
    plot_clients(run, os.path.join(out_dir, "fedavg_clients.png"))
  return rows


def main(argv: list[str] | None = None) -> int:
  fv = flags.FlagValues()
  flags.DEFINE_string("out_dir", None, "Where to write the report (default: the first "
                      "run's parent directory).", flag_values=fv)
  try:
    dirs = fv(sys.argv if argv is None else argv)[1:]
  except flags.Error as e:
    print(f"experiments.report: error: {e}", file=sys.stderr)
    return 2
  missing = [d for d in dirs if not os.path.exists(os.path.join(d, "summary.json"))]
  if not dirs or missing:
    print(f"experiments.report: error: need run directories with a summary.json"
          f"{'; missing in ' + ', '.join(missing) if missing else ''}", file=sys.stderr)
    return 2
  out_dir = fv.out_dir or os.path.dirname(os.path.abspath(dirs[0]))
  rows = build_report(dirs, out_dir)
  print(markdown(rows))
  print(f"report written to {out_dir}/report.md, report.json, report.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
