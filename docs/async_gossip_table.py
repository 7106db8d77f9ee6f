"""The table of docs/async_gossip_straggler.sh: per cell, each worker's step time (ms;
the training loop's time over its steps), its steps, the test accuracy (the mean
replica), staleness and measured/analytic bytes sent per worker."""
import json
import os
import sys

root = sys.argv[1]
print("| model | N | mode | straggler | step ms per worker | steps per worker | test acc | "
      "staleness mean / max | sent / analytic |")
print("|---|---|---|---|---|---|---|---|---|")
for name in sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))):
  try:
    with open(os.path.join(root, name, "summary.json")) as f:
      s = json.load(f)
  except OSError:
    print(f"| {name} | failed |")
    continue
  model, n, mode, strag = name.rsplit("-", 3)
  n = int(n[1:])
  if s.get("worker_step_time_s"):
    ms, steps = [1e3 * t for t in s["worker_step_time_s"]], s["worker_steps"]
  else:  # synchronous: every worker steps together
    ms, steps = [1e3 * s["train_time_s"] / s["steps"]] * n, [s["steps"]] * n
  stale = (f"{s['staleness_mean']:.1f} / {s['staleness_max']}"
           if s.get("staleness_mean") is not None else "-")
  ratio = s["bytes_sent_per_worker"] / s["bytes_analytic_per_worker"]
  print(f"| {model} | {n} | {mode} | {strag} | {' / '.join(f'{x:.1f}' for x in ms)} | "
        f"{' / '.join(map(str, steps))} | {100 * s['test_accuracy']:.2f}% | {stale} | "
        f"{ratio:.2f}x |")
