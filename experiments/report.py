"""Build the comparison report from run directories.

    python -m experiments.report RUN_DIR [RUN_DIR ...] [--out_dir=DIR]

Writes report.md (one row per run; with several seeds per approach, one row per
approach with mean and min/max too), report.json (the same figures) and report.png:
test error (log scale) against seconds since the launcher's start, against
training examples and against the measured bytes on the busiest task's link (sent +
received), and a bar chart of
the time to the target split into start-up (launcher start to first step) and
training; plus fedavg_clients.png (per-client loss curves) for runs that record
clients. Every approach writes the same summary core and the same "eval"/"epoch"/
"round" records (trainers/common/session.py, progress.py), so nothing here depends
on which approach a run was.
"""

import json
import math
import os
import statistics
import sys
from typing import Any, Sequence

from absl import flags

from cluster import cli
from experiments import outcome

# report.json row fields every run has (None where unknown).
ROW_KEYS = ("approach", "seed", "workers", "model", "dataset", "test_accuracy", "test_loss",
            "target_accuracy", "reached_target", "time_to_target_s",
            "train_time_to_target_s", "startup_s", "examples_to_target", "steps_to_target",
            "bytes_sent_per_worker", "bytes_received_per_worker", "bytes_analytic_per_worker",
            "bytes_sent_per_worker_to_target", "busiest_task", "bytes_busiest_task",
            "bytes_analytic_busiest_task", "bytes_total_sent", "bytes_analytic_total_sent",
            "wall_time_s", "train_time_s",
            "examples_processed", "examples_per_sec", "notes", "run_dir")


def load_run(run_dir: str) -> dict:
  """summary.json, config.json and metrics.jsonl of one run."""
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  config = {}
  if os.path.exists(os.path.join(run_dir, "config.json")):
    with open(os.path.join(run_dir, "config.json")) as f:
      config = json.load(f)
  return {"run_dir": run_dir, "summary": summary, "config": config,
          "records": load_records(run_dir)}


def load_records(run_dir: str) -> list[dict]:
  """metrics.jsonl of one run ([] when it has none)."""
  if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
    return []
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


PEER_COLOURS = ("black", "#b8860b")  # the peers' own colours (outside matplotlib's cycle)


def is_peer(run: dict) -> bool:
  """A run of a tool beside the suite (peers/): its summary names the peer."""
  return bool(run["summary"].get("peer"))


def label(run: dict) -> str:
  return run["summary"].get("label") or run["summary"]["approach"]


def accuracy_curve(run: dict) -> list[dict]:
  """Per evaluation: seconds (since the launcher's start, else the trainer's),
  examples processed, measured bytes sent per worker and the busiest task's sent +
  received (None: not measured), accuracy."""
  return [{"t": float(r.get("since_launch_s", r["elapsed_s"])),
           "examples": int(r["examples_seen"]), "bytes": r.get("bytes_sent_per_worker"),
           "busiest": r.get("bytes_busiest_task"), "accuracy": float(r["test_accuracy"])}
          for r in run["records"]
          if r["kind"] in ("eval", "epoch", "round") and r.get("test_accuracy") is not None]


def row(run: dict) -> dict[str, Any]:
  """The figures of one report row."""
  s = run["summary"]
  fields = {k: s.get(k) for k in ROW_KEYS}
  fields.update(approach=label(run), seed=run["config"].get("seed"),
                workers=s.get("num_workers"), startup_s=s.get("first_step_since_launch_s"),
                notes=s.get("notes", ""), run_dir=run["run_dir"])
  if fields["reached_target"] is not None:
    fields["reached_target"] = bool(fields["reached_target"])
  ended = outcome.Outcome(s, None)
  if not ended.ok:  # e.g. diverged: shown as failed, never as reached
    fields.update(reached_target=False,
                  notes=f"FAILED ({ended.status}): {s.get('error', '')}".strip())
  return fields


def aggregate(rows: Sequence[dict]) -> list[dict]:
  """One row per approach over its seeds: mean, min and max of time to target and of
  final accuracy (over the seeds that reached it, for the time), reached k of n."""
  out = []
  for name in dict.fromkeys(r["approach"] for r in rows):
    group = [r for r in rows if r["approach"] == name]
    agg = {"approach": name, "runs": len(group),
           "reached": sum(bool(r["reached_target"]) for r in group)}
    for key in ("time_to_target_s", "test_accuracy", "examples_to_target",
                "bytes_sent_per_worker_to_target", "startup_s"):
      values = [r[key] for r in group if r[key] is not None]
      agg[key] = _spread(values)
    out.append(agg)
  return out


def _spread(values: Sequence[float]) -> dict | None:
  if not values:
    return None
  return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def _fmt(value, kind: str = "") -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  if isinstance(value, dict):  # a spread
    return (f"{_fmt(value['mean'], kind)} ({_fmt(value['min'], kind)}–"
            f"{_fmt(value['max'], kind)})")
  if kind == "pct":
    return f"{100 * value:.2f}%"
  if kind == "s":
    return f"{value:.1f}"
  if kind == "bytes":
    return f"{value / 1e6:.1f} MB"
  if kind == "ratio":
    return f"{value:.2f}x"
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    return f"{value:.0f}" if value >= 100 else f"{value:.4f}"
  return str(value)


def _ratio(measured, analytic):
  return measured / analytic if measured is not None and analytic else None


def markdown(rows: Sequence[dict], title: str = "Comparison", seeds: int = 1) -> str:
  head = ["approach", "workers", "test acc", "reached", "to target s", "start-up s",
          "train s to target", "examples to target", "steps/rounds", "sent/worker",
          "received/worker", "analytic/worker", "measured/analytic", "busiest task",
          "its sent+received", "its analytic", "its measured/analytic", "wall s",
          "to target vs 1 process", "start-up vs 1 process", "ex/s vs 1 process", "notes"]
  lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [r["approach"] + (f" (seed {r['seed']})" if seeds > 1 else ""),
             _fmt(r["workers"]), _fmt(r["test_accuracy"], "pct"), _fmt(r["reached_target"]),
             _fmt(r["time_to_target_s"], "s"), _fmt(r["startup_s"], "s"),
             _fmt(r["train_time_to_target_s"], "s"), _fmt(r["examples_to_target"]),
             _fmt(r["steps_to_target"]), _fmt(r["bytes_sent_per_worker"], "bytes"),
             _fmt(r["bytes_received_per_worker"], "bytes"),
             _fmt(r["bytes_analytic_per_worker"], "bytes"),
             _fmt(_ratio(r["bytes_sent_per_worker"], r["bytes_analytic_per_worker"]), "ratio"),
             _fmt(r["busiest_task"]), _fmt(r["bytes_busiest_task"], "bytes"),
             _fmt(r["bytes_analytic_busiest_task"], "bytes"),
             _fmt(_ratio(r["bytes_busiest_task"], r["bytes_analytic_busiest_task"]), "ratio"),
             _fmt(r["wall_time_s"], "s"), _fmt(r.get("time_to_target_vs_single"), "ratio"),
             _fmt(r.get("startup_vs_single"), "ratio"),
             _fmt(r.get("examples_per_sec_vs_single"), "ratio"), r["notes"]]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "To target s: launcher start to the first evaluation at or above the target "
            "(start-up included); start-up s: launcher start to the first training step; "
            "train s to target: first step to the target. Evaluations every "
            "--eval_every_examples (FedAvg: every round). Sent/received per worker: bytes "
            "on the wire measured by the task shim (TCP payload incl. gRPC framing, mean over "
            "worker tasks, whole run); analytic: the algorithm's own volume per worker "
            "(trainers/common/volume.py). Busiest task: the task whose link carried the "
            "most, sent + received (PS: a ps task; FedAvg: the chief), beside the "
            "algorithm's volume on that link. Wall s: trainer process start to summary. 'vs 1 "
            "process': the figure over the single-process row's (plain Keras, one process, "
            "the all-reduce row's global batch and recipe), measured in the same run: below "
            "1x for time, above 1x for examples/s, distributing paid off on this machine.", ""]
  if seeds > 1:
    lines += _aggregate_markdown(aggregate(rows))
  return "\n".join(lines)


def _aggregate_markdown(aggs: Sequence[dict]) -> list[str]:
  head = ["approach", "reached", "to target s, mean (min–max)",
          "test acc, mean (min–max)", "examples to target, mean (min–max)"]
  lines = ["## Over seeds", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for a in aggs:
    lines.append(f"| {a['approach']} | {a['reached']}/{a['runs']} | "
                 f"{_fmt(a['time_to_target_s'], 's')} | {_fmt(a['test_accuracy'], 'pct')} | "
                 f"{_fmt(a['examples_to_target'])} |")
  return lines + [""]


def plot(runs: Sequence[dict], path: str, rows: Sequence[dict] | None = None) -> None:
  """Test error (log) against time, examples and bytes; time-to-target bars."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(2, 2, figsize=(13, 9))
  (a_t, a_ex), (a_b, a_bar) = axes
  target = next((r["summary"].get("target_accuracy") for r in runs
                 if r["summary"].get("target_accuracy")), None)
  peer_colours = iter(PEER_COLOURS)
  for run in runs:
    curve = accuracy_curve(run)
    if not curve:
      continue
    # A peer (Flower, Horovod) in its own colour, dashed, beside the suite's rows.
    style = ({"color": next(peer_colours, "black"), "linestyle": "--", "marker": "s"}
             if is_peer(run) else {"marker": "o"})
    err = [max(1 - c["accuracy"], 1e-4) for c in curve]
    a_t.plot([c["t"] for c in curve], err, ms=3, label=label(run), **style)
    a_ex.plot([c["examples"] for c in curve], err, ms=3, label=label(run), **style)
    key = "busiest" if any(c["busiest"] is not None for c in curve) else "bytes"
    measured = [(c[key], e) for c, e in zip(curve, err) if c[key] is not None]
    if measured:
      a_b.plot(*zip(*measured), ms=3, label=label(run), **style)
  for ax, xlabel in ((a_t, "seconds since the launcher's start"),
                     (a_ex, "training examples processed"),
                     (a_b, "bytes on the busiest task's link, sent + received (measured; "
                           "older runs: sent per worker)")):
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test error (1 - accuracy)")
    if target:
      ax.axhline(1 - target, color="grey", linestyle="--", linewidth=1,
                 label=f"target {target:.0%}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
  a_b.set_xscale("log")
  _time_bars(a_bar, rows or [row(r) for r in runs], target, [is_peer(r) for r in runs])
  fig.suptitle("Time to accuracy per approach")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _time_bars(ax, rows: Sequence[dict], target: float | None,
               peers: Sequence[bool] = ()) -> None:
  names = [r["approach"] + (f" s{r['seed']}" if r.get("seed") is not None
                            and sum(x["approach"] == r["approach"] for x in rows) > 1 else "")
           for r in rows]
  startup = [r["startup_s"] or 0.0 for r in rows]
  train = [max((r["time_to_target_s"] or 0.0) - (r["startup_s"] or 0.0), 0.0) for r in rows]
  ax.barh(names, startup, color="#bbbbbb", label="start-up (launch to first step)")
  colours = ["black" if p else "#1f77b4" for p in list(peers) + [False] * len(rows)]
  ax.barh(names, train, left=startup, color=colours[:len(rows)],
          label="training to target (peers: black)")
  for i, r in enumerate(rows):
    if not r["reached_target"]:
      ax.text(startup[i], i, "  not reached", va="center", fontsize=8)
    elif r.get("time_to_target_vs_single") is not None:
      ax.text(startup[i] + train[i], i, f" {r['time_to_target_vs_single']:.2f}x 1 process",
              va="center", fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel("seconds")
  ax.set_title(f"time to {target:.0%}" if target else "time to target")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3, axis="x")


def round_series(run: dict, key: str) -> tuple[list[int], list[float]]:
  """(rounds, values) of a per-round field (test_accuracy, client_drift, ...)."""
  points = [(r["round"], r[key]) for r in run["records"]
            if r.get("kind") == "round" and r.get(key) is not None]
  return [p[0] for p in points], [p[1] for p in points]


def plot_clients(run: dict, path: str) -> bool:
  """Federated runs: one loss curve per client, over the rounds it took part in, and
  below them the round's client drift; False (nothing written) for a run that
  records no clients."""
  per_client: dict[int, list[tuple[int, float]]] = {}
  for r in run["records"]:
    for c in r.get("clients", ()):
      per_client.setdefault(c["client"], []).append((r["round"], c["loss"]))
  if not per_client:
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  drift = round_series(run, "client_drift")
  fig, axes = plt.subplots(2 if drift[0] else 1, 1, figsize=(7, 6.5 if drift[0] else 4.5),
                           sharex=True, squeeze=False)
  ax = axes[0][0]
  for client, points in sorted(per_client.items()):
    rounds, losses = zip(*points)
    ax.plot(rounds, losses, marker=".", alpha=0.6, linewidth=0.8)
  ax.set_ylabel("loss of the broadcast model on the client's data")
  ax.set_title(f"FedAvg: per-client loss ({len(per_client)} clients)")
  ax.grid(alpha=0.3)
  if drift[0]:
    axes[1][0].plot(*drift, color="black")
    axes[1][0].set_ylabel("client drift (RMS distance\nof updates from their mean)")
    axes[1][0].grid(alpha=0.3)
  axes[-1][0].set_xlabel("round")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def plot_rounds(runs: dict[str, dict], path: str, target: float | None = None) -> bool:
  """Several federated runs side by side: test accuracy and client drift per round,
  one line per run (the paper preset's settings and algorithms)."""
  if not any(round_series(r, "test_accuracy")[0] for r in runs.values()):
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (acc, drift) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
  for name, run in runs.items():
    line, = acc.plot(*round_series(run, "test_accuracy"), label=name, linewidth=1)
    drift.plot(*round_series(run, "client_drift"), color=line.get_color(), linewidth=1)
  if target:
    acc.axhline(target, color="grey", linestyle="--", linewidth=0.8)
    acc.set_ylim(max(0.0, target - 0.05), 1.0)
  acc.set_ylabel("test accuracy")
  acc.legend(fontsize=8)
  drift.set_ylabel("client drift")
  drift.set_xlabel("round")
  for ax in (acc, drift):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


# Each row's figures as a ratio to the single-process row measured in the same run (the
# headline that carries between machines): key -> (the figure, "higher is better").
VS_SINGLE = {"time_to_target_vs_single": "time_to_target_s", "startup_vs_single": "startup_s",
             "examples_per_sec_vs_single": "examples_per_sec"}


def with_ratios(rows: Sequence[dict], reference: dict | None) -> list[dict]:
  """The rows, each with VS_SINGLE's ratios to `reference` (None where either figure is
  missing, or the reference run is not given or did not reach the target)."""
  out = []
  for r in rows:
    r = dict(r)
    for key, figure in VS_SINGLE.items():
      base = reference.get(figure) if reference else None
      r[key] = r[figure] / base if base and r.get(figure) is not None else None
    out.append(r)
  return out


def build_report(run_dirs: Sequence[str], out_dir: str, title: str = "Comparison",
                 preamble: str = "", seeds: int = 1, reference: str | None = None,
                 machine: str | None = None) -> list[dict]:
  """Writes report.md, report.json, report.png (+ fedavg_clients.png); returns the rows.
  `reference`: the run directory of the single-process row, whose figures every row is
  also given as a ratio to (VS_SINGLE)."""
  runs = [load_run(d) for d in run_dirs]
  rows = [row(r) for r in runs]
  ref = next((r for r in rows if reference and os.path.abspath(r["run_dir"]) ==
              os.path.abspath(reference)), None)
  rows = with_ratios(rows, ref)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write((preamble + "\n\n" if preamble else "") + markdown(rows, title, seeds))
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump({"title": title, "machine": machine, "rows": rows,
               **({"over_seeds": aggregate(rows)} if seeds > 1 else {})}, f, indent=2)
  plot(runs, os.path.join(out_dir, "report.png"), rows)
  for run in runs:
    plot_clients(run, os.path.join(out_dir, "fedavg_clients.png"))
  return rows


def main(argv: list[str] | None = None) -> int:
  fv = flags.FlagValues()
  flags.DEFINE_string("out_dir", None, "Where to write the report (default: the first "
                      "run's parent directory).", flag_values=fv)
  argv = sys.argv if argv is None else argv
  cli.exit_if_answered(argv, fv, cli.prog("experiments.report"), __doc__)
  try:
    dirs = fv(argv)[1:]
  except flags.Error as e:
    print(f"{cli.prog('experiments.report')}: error: {e}", file=sys.stderr)
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


def run_main() -> None:
  """The console script's entry."""
  sys.exit(main())


if __name__ == "__main__":
  sys.exit(main())
