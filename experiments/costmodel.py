"""A cost model of time to accuracy, checked against this machine's runs, for clusters
it cannot hold.

    python -m experiments.costmodel --validate     # predict the grid's capped-link cells
    python -m experiments.costmodel --predict      # the planning table and heatmaps
    tfdist-plan --predict --params=1e8             # also a model of 10^8 parameters

    time to target = start-up + units to target x (compute per unit + communication per unit)

A unit is a step (all-reduce, sync PS, gossip), a worker's step (async PS, where the
workers do not wait for each other) or a round (FedAvg). Communication per unit is
the bytes on the busiest task's link over the link's rate, in the approach's pattern:

  all-reduce (ring)  2(N-1)/N x model each way on every worker; both ways at once
                     (reduce-scatter and all-gather send and receive together);
                     2(N-1) messages in sequence;
  PS, sync           N x model into the ps (gradients) and N x model out (variables)
                     per step, over the ps tasks: in turn (push, then pull);
  PS, async          each worker step: model in and out of the ps; the workers do
                     not wait for each other, so the job runs at the slower of the
                     workers' own rate (compute + their pull and push) and the ps
                     link's (one model each way per worker step, both at once);
  gossip, sync       degree x model each way per worker, both at once;
  gossip, async      the same puts, made beside the compute: a step costs the larger
                     of the two (a slow link means fewer, staler mixes, not waits);
  FedAvg             per round, the model to each service that hosts a sampled client
                     (S = min(N, C)) and one aggregate back from each, on the chief's
                     link, in turn; the clients' compute runs on those services in
                     parallel: ceil(C/S) clients each.

Latency (per message in sequence) is a parameter: this kernel has no netem, so no
run here measured it. Steps to target at N beyond the sweep come from the sweep's
trend (examples to target = a N^b, least squares in log-log per approach; FedAvg's
rounds do not depend on how many services host the clients): an assumption, named
in every table. The arithmetic is pure and unit-tested (tests/test_costmodel.py).

Validation (--validate) predicts each capped-link cell of the regime grid from the
same approach's uncapped run alone: its time to target, plus its units to target times
the link time of its busiest task's measured bytes per unit, in the approach's
pattern. No figure of a capped run enters a prediction.
"""

import dataclasses
import json
import math
import os
import sys
from typing import Sequence

from absl import flags

from cluster import approaches, cli
from trainers.common import volume

# The comparison's variants, each looked up by its own name (a reorder of
# cluster.approaches.VARIANTS changes nothing here).
ALLREDUCE, PS_ASYNC, PS_SYNC, GOSSIP, GOSSIP_ASYNC, FEDAVG = (
    v.name for v in (approaches.ALLREDUCE_V, approaches.PS_ASYNC_V, approaches.PS_SYNC_V,
                     approaches.GOSSIP_V, approaches.GOSSIP_ASYNC_V, approaches.FEDAVG_V))
LINK_RE_UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
# Which way a task's link is used per unit: at once (max of the two directions) or
# in turn (their sum); and what a unit is: the variant records say.
AT_ONCE, IN_TURN = approaches.AT_ONCE, approaches.IN_TURN
PATTERNS = {v.name: v.link_pattern for v in approaches.VARIANTS.values()}
UNITS = {v.name: v.unit for v in approaches.VARIANTS.values()}


def link_seconds(sent: float, received: float, bytes_per_s: float, pattern: str) -> float:
  """Seconds a task's link needs for `sent` and `received` bytes, each way capped at
  `bytes_per_s`."""
  if pattern == AT_ONCE:
    return max(sent, received) / bytes_per_s
  return (sent + received) / bytes_per_s


@dataclasses.dataclass(frozen=True)
class Cluster:
  """What a prediction is for."""
  n: int                      # workers (FedAvg: executor services)
  num_params: int
  link_bits_per_s: float      # every task's link, each way
  latency_s: float = 0.0      # per message in sequence
  degree: int = 2             # gossip: neighbours per worker (ring)
  num_ps: int = 1
  clients_per_round: int = 10
  examples_per_client: int = 600
  local_epochs: int = 1
  messages: int = 1           # model-sized messages each way per exchange (SCAFFOLD: 2)

  @property
  def model_bytes(self) -> float:
    return volume.model_bytes(self.num_params)

  @property
  def bytes_per_s(self) -> float:
    return self.link_bits_per_s / 8


def unit_traffic(approach: str, c: Cluster) -> tuple[float, float, int]:
  """(bytes sent, bytes received, messages in sequence) per unit on the busiest
  task's link (the analytic side; volume.py's formulas at cluster scale)."""
  p, n, k = c.num_params, c.n, c.messages
  if approach == ALLREDUCE:
    b = volume.ring_allreduce(p, n, steps=1) * k
    return b, b, 2 * (n - 1)
  if approach == PS_SYNC:  # N workers' pushes (and pulls) per step, over the ps tasks
    b = volume.parameter_server(p, worker_steps=n) * k / c.num_ps
    return b, b, 2
  if approach == PS_ASYNC:  # per worker step, on a ps
    b = volume.parameter_server(p, worker_steps=1) * k / c.num_ps
    return b, b, 2
  if approach in (GOSSIP, GOSSIP_ASYNC):
    d = min(c.degree, n - 1)
    b = volume.gossip(p, d, exchanges=1) * k
    return b, b, d
  if approach == FEDAVG:  # only the services that host a sampled client take part
    s = min(n, c.clients_per_round)
    b = s * volume.fedavg_service(p, rounds_served=1, messages=k)
    return b, b, 2
  raise ValueError(f"unknown approach {approach!r}; valid: {', '.join(PATTERNS)}")


@dataclasses.dataclass(frozen=True)
class Work:
  """What the job needs: units to target and what one costs in compute."""
  units: float                 # steps, worker steps or rounds to target
  step_compute_s: float        # one worker's step, alone
  client_example_s: float = 0.0  # FedAvg: one example at the client batch, alone
  startup_s: float = 0.0


def predict(approach: str, c: Cluster, w: Work) -> dict:
  """Predicted seconds to target and their parts (compute, communication)."""
  sent, received, messages = unit_traffic(approach, c)
  comm = link_seconds(sent, received, c.bytes_per_s, PATTERNS[approach]) + \
      messages * c.latency_s
  if approach == FEDAVG:
    per_service = math.ceil(c.clients_per_round / max(1, min(c.n, c.clients_per_round)))
    compute = per_service * c.examples_per_client * c.local_epochs * w.client_example_s
    per_unit = compute + comm
  elif approach == PS_ASYNC:
    # Worker steps: N workers each at (compute + its own pull then push), or the ps
    # link's rate, whichever is slower.
    own = w.step_compute_s + link_seconds(c.model_bytes, c.model_bytes, c.bytes_per_s,
                                          IN_TURN) + 2 * c.latency_s
    per_unit = max(own / c.n, comm)
    compute = w.step_compute_s / c.n
  elif approach == GOSSIP_ASYNC:
    compute = w.step_compute_s
    per_unit = max(compute, comm)
  else:
    compute = w.step_compute_s
    per_unit = compute + comm
  return {"approach": approach, "seconds": w.startup_s + w.units * per_unit,
          "startup_s": w.startup_s, "compute_s": w.units * compute,
          "communication_s": w.units * (per_unit - compute), "units": w.units}


# --- validation against the regime grid ------------------------------------------------
def parse_rate(text: str) -> float:
  """'10mbit' -> 1e7 bits per second."""
  for suffix, scale in LINK_RE_UNITS.items():
    if text.endswith(suffix):
      return float(text[:-len(suffix)]) * scale
  raise ValueError(f"not a link rate: {text!r} (e.g. 10mbit, 1gbit)")


def predict_capped(base: dict, approach: str, bits_per_s: float) -> float:
  """A capped-link cell from the same approach's uncapped run (`base`: its summary
  fields) alone: its time to target plus, per unit to target, the link time of its
  busiest task's measured bytes per unit, in the approach's pattern."""
  units = base["steps_to_target"]
  per_task = [link_seconds(t["sent"], t["received"], bits_per_s / 8, PATTERNS[approach])
              for t in base["bytes_by_task"].values()]
  # The uncapped run's own transfers ran at loopback speed: counted as free.
  return base["time_to_target_s"] + max(per_task) if units else float("nan")


def validate(runs: dict, regimes: Sequence[str] = ("link_100mbit", "link_10mbit")
             ) -> list[dict]:
  """Predicted against measured for every capped cell that has an uncapped run."""
  rows = []
  for regime in regimes:
    rate = parse_rate(regime.split("_", 1)[1])
    for approach, measured in sorted(runs.get(regime, {}).items()):
      base = runs.get("baseline", {}).get(approach)
      if not base or not base.get("reached_target") or not measured.get("reached_target"):
        continue
      predicted = predict_capped(base, approach, rate)
      rows.append({"regime": regime, "approach": approach, "predicted_s": predicted,
                   "measured_s": measured["time_to_target_s"],
                   "error": predicted / measured["time_to_target_s"] - 1,
                   "units_uncapped": base["steps_to_target"],
                   "units_capped": measured["steps_to_target"]})
  return rows


def validation_markdown(rows: Sequence[dict], tolerance: float = 0.3) -> str:
  lines = ["| regime | approach | predicted s | measured s | error | units to target "
           "(uncapped / capped) |", "|---|---|---|---|---|---|"]
  for r in rows:
    mark = "" if abs(r["error"]) <= tolerance else " **miss**"
    lines.append(f"| {r['regime']} | {r['approach']} | {r['predicted_s']:.0f} | "
                 f"{r['measured_s']:.0f} | {100 * r['error']:+.0f}%{mark} | "
                 f"{r['units_uncapped']} / {r['units_capped']} |")
  within = sum(abs(r["error"]) <= tolerance for r in rows)
  lines.append("")
  lines.append(f"{within} of {len(rows)} cells within {tolerance:.0%} "
               f"({100 * within / max(1, len(rows)):.0f}%).")
  return "\n".join(lines)


# --- planning: clusters this machine cannot hold ------------------------------------------
@dataclasses.dataclass(frozen=True)
class Calibration:
  """From the scaling sweep (experiments/scaling.py's scaling.json)."""
  model: str
  num_params: int
  batch_size: int
  step_compute_s: float
  client_example_s: float
  examples_fit: dict           # approach -> (a, b): examples to target = a N^b
  rounds: float                # FedAvg rounds to target (mean over N)
  startup_s: dict              # approach -> seconds (at the sweep's smallest N)
  train_flops_per_example: float


def calibrate(sweep: dict, model: str, num_params: int, flops_per_example: float
              ) -> Calibration:
  """The sweep's measurements as the model's inputs (pure)."""
  from experiments import scaling  # pylint: disable=g-import-not-at-top
  fits, startups, rounds = {}, {}, []
  for approach in sweep["approaches"]:
    pts, ups = [], []
    for n in sweep["counts"]:
      c = sweep["cells"].get(str(n), {}).get(approach, {})
      if c.get("ok") and c.get("reached"):
        pts.append((n, c["examples_to_target"]))
        if c.get("startup_s") is not None:
          ups.append(c["startup_s"])
        if approach == FEDAVG:
          rounds.append(c["steps_to_target"])
    if pts:
      fits[approach] = scaling.power_law(pts)
    if ups:  # the smallest N's: the least contended start-up this host measured
      startups[approach] = ups[0]
  compute = sweep["compute"]
  return Calibration(model, num_params, compute["batch_size"], compute["step_s"],
                     compute["client_example_s"], fits,
                     sum(rounds) / len(rounds) if rounds else float("nan"), startups,
                     flops_per_example)


def work_for(approach: str, cal: Calibration, n: int, flops_scale: float = 1.0) -> Work:
  """Units to target at N (the sweep's trend) and the compute per unit (scaled by the
  model's FLOPs against the calibrated model's)."""
  startup = cal.startup_s.get(approach, 0.0)
  if approach == FEDAVG:
    return Work(cal.rounds, 0.0, cal.client_example_s * flops_scale, startup)
  a, b = cal.examples_fit[approach]
  examples = a * n ** b
  per_unit = cal.batch_size * (1 if approach == PS_ASYNC else n)
  return Work(examples / per_unit, cal.step_compute_s * flops_scale, 0.0, startup)


def plan_table(cal: Calibration, models: dict, counts: Sequence[int],
               rates_bits: Sequence[float], approaches: Sequence[str],
               latency_s: float) -> list[dict]:
  """Every (model, N, rate): each approach's predicted seconds, the first, and its
  margin (second's time / first's). `models`: name -> (params, train FLOPs/example)."""
  out = []
  for name, (params, flops) in models.items():
    scale = flops / cal.train_flops_per_example
    for n in counts:
      for rate in rates_bits:
        c = Cluster(n, params, rate, latency_s)
        times = {a: predict(a, c, work_for(a, cal, n, scale))["seconds"]
                 for a in approaches if a == FEDAVG or a in cal.examples_fit}
        order = sorted(times, key=times.get)
        out.append({"model": name, "n": n, "link_bits_per_s": rate, "seconds": times,
                    "first": order[0], "margin": (times[order[1]] / times[order[0]]
                                                  if len(order) > 1 else 1.0)})
  return out


def _rate_text(bits: float) -> str:
  return f"{bits / 1e9:g} Gbit/s" if bits >= 1e9 else f"{bits / 1e6:g} Mbit/s"


def plan_markdown(rows: Sequence[dict]) -> str:
  lines = ["| model | N | link | predicted first | by (second / first) | every approach, s |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    every = ", ".join(f"{a} {t:.3g}" for a, t in sorted(r["seconds"].items(),
                                                          key=lambda kv: kv[1]))
    lines.append(f"| {r['model']} | {r['n']} | {_rate_text(r['link_bits_per_s'])} | "
                 f"{r['first']} | {r['margin']:.2f}x | {every} |")
  return "\n".join(lines)


def heatmaps(rows: Sequence[dict], root: str) -> list[str]:
  """One PNG per model: N across, link rate down, the predicted first approach and
  its margin in each cell."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  for model in dict.fromkeys(r["model"] for r in rows):
    mine = [r for r in rows if r["model"] == model]
    counts = sorted({r["n"] for r in mine})
    rates = sorted({r["link_bits_per_s"] for r in mine})
    names = sorted({r["first"] for r in mine} | set(mine[0]["seconds"]))
    colours = {a: plt.cm.tab10(i) for i, a in enumerate(names)}
    fig, ax = plt.subplots(figsize=(1.9 * len(counts) + 2, 1.0 * len(rates) + 1.6))
    for r in mine:
      x, y = counts.index(r["n"]), rates.index(r["link_bits_per_s"])
      ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, color=colours[r["first"]],
                                 alpha=0.35 + 0.6 * min(1.0, math.log2(r["margin"]) / 2)))
      ax.text(x, y, f"{r['first']}\n{r['margin']:.2f}x", ha="center", va="center",
              fontsize=8)
    ax.set_xlim(-0.5, len(counts) - 0.5)
    ax.set_ylim(-0.5, len(rates) - 0.5)
    ax.set_xticks(range(len(counts)), [str(n) for n in counts])
    ax.set_yticks(range(len(rates)), [_rate_text(b) for b in rates])
    ax.set_xlabel("workers (N)")
    ax.set_ylabel("link, each way")
    ax.set_title(f"{model}: predicted first to target (x: the runner-up's time / its)",
                 fontsize=9)
    fig.tight_layout()
    path = os.path.join(root, f"plan_{model}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths


# --- the command --------------------------------------------------------------------------
HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), "docs")


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_bool("validate", False, "Predict the regime grid's capped-link cells from "
                    "its uncapped runs and print predicted against measured.",
                    flag_values=fv)
  flags.DEFINE_bool("predict", False, "The planning table and one heatmap per model.",
                    flag_values=fv)
  flags.DEFINE_string("grid_runs", os.path.join(DOCS, "grid_runs.json"), "The regime "
                      "grid's run summaries (--validate).", flag_values=fv)
  flags.DEFINE_string("sweep", os.path.join(DOCS, "scaling.json"), "The scaling sweep's "
                      "scaling.json (--predict's calibration).", flag_values=fv)
  flags.DEFINE_list("counts", ["8", "64", "512"], "Worker counts to plan for.",
                    flag_values=fv)
  flags.DEFINE_list("links", ["1gbit", "10gbit", "100gbit"], "Link rates to plan for.",
                    flag_values=fv)
  flags.DEFINE_list("models", [], "Registry models to plan for (default: every one).",
                    flag_values=fv)
  flags.DEFINE_float("params", None, "Also plan for a model of this many parameters "
                     "(training FLOPs per example taken as 6 x parameters).", flag_values=fv)
  flags.DEFINE_float("latency_us", 25.0, "Per-message latency in sequence, microseconds "
                     "(an assumption: not measurable here).", flag_values=fv)
  flags.DEFINE_string("out", "runs/plan", "Where --predict writes plan.md and the PNGs.",
                      flag_values=fv)


def _models(names: Sequence[str], params: float | None) -> dict:
  with cli.quiet_tf_startup():
    from models import build_model, flops, registry  # pylint: disable=g-import-not-at-top
  out = {}
  for name in names or registry.model_names():
    m = build_model(name)
    out[name] = (m.count_params(), float(flops.train_flops_per_example(m)))
  if params:
    out[f"{params:.3g} params"] = (int(params), 6.0 * params)
  return out


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv if argv is None else argv
  fv = flags.FlagValues()
  define_flags(fv)
  cli.exit_if_answered(argv, fv, cli.prog("experiments.costmodel"), __doc__)
  prog = cli.prog("experiments.costmodel")
  try:
    fv(argv)
    counts = [int(x) for x in fv.counts]
    rates = [parse_rate(x) for x in fv.links]
    if not (fv.validate or fv.predict):
      raise ValueError("give --validate, --predict or both")
    if fv.params is not None and fv.params < 1:
      raise ValueError(f"--params must be >= 1, got {fv.params}")
    if any(n < 1 for n in counts):
      raise ValueError("--counts must be >= 1")
    for path, needed in ((fv.grid_runs, fv.validate), (fv.sweep, fv.predict)):
      if needed and not os.path.exists(path):
        raise ValueError(f"{path} does not exist")
  except (flags.Error, ValueError) as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2
  if fv.validate:
    with open(fv.grid_runs) as f:
      rows = validate(json.load(f)["runs"])
    print(validation_markdown(rows))
  if fv.predict:
    with open(fv.sweep) as f:
      sweep = json.load(f)
    try:
      models = _models(fv.models, fv.params)
    except (KeyError, ValueError) as e:
      print(f"{prog}: error: {e}", file=sys.stderr)
      return 2
    model = sweep.get("model", "small_cnn")
    params, model_flops = _models([model], None)[model]
    cal = calibrate(sweep, model, params, model_flops)
    rows = plan_table(cal, models, counts, rates, list(sweep["approaches"]),
                      fv.latency_us * 1e-6)
    os.makedirs(fv.out, exist_ok=True)
    text = (f"Calibrated on `{model}` ({params} parameters): {cal.step_compute_s * 1e3:.1f} "
            f"ms per step at batch {cal.batch_size}, examples to target a N^b per "
            "approach (" + ", ".join(f"{a}: b={b:.2f}" for a, (_, b) in
                                     cal.examples_fit.items()) +
            f"), FedAvg {cal.rounds:.0f} rounds; latency {fv.latency_us:g} us per "
            "message (assumed).\n\n" + plan_markdown(rows))
    with open(os.path.join(fv.out, "plan.md"), "w") as f:
      f.write("# Planning table\n\n" + text + "\n")
    print(text)
    for path in heatmaps(rows, fv.out):
      print(f"{prog}: {path}")
  return 0


def run_main() -> None:
  sys.exit(main())


if __name__ == "__main__":
  sys.exit(main())
