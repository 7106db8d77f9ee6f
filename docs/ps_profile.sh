#!/usr/bin/env bash
# Where a parameter-server step's time goes (issue 33): TF's profiler traces every task
# of a run at once for 2 s from step 200 (--profile_ms, trainers/common/profiling.py) and
# splits each task's TF thread time into compute (op kernels), transfer (_Send/_Recv,
# RPCs: waiting on another task) and runtime (the executor around the kernels), and the
# coordinator's time inside remote calls (remote_call), per global step. small_cnn,
# batch 64, 600 steps a row: PS async at N = 1 with 1 and 10
# steps per closure, PS async and sync at N = 2, and a plain fit's step for scale (traced
# the same way).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/ps-profile}
COMMON=(--model=small_cnn --dataset=mnist --batch_size=64 --epochs=1 --log_every=25
        --steps_per_epoch=600)
PROFILE=(--profile_ms=2000 --profile_at_step=200)
show() {
  $PY - "$1" "$2" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
p = json.load(open(sys.argv[1] + "/profile/breakdown.json"))
print(f"{sys.argv[2]}: {s['examples_per_sec']:.0f} ex/s; {p['steps_in_window']:.0f} steps in the window")
for task, b in p["per_step_ms"].items():
  top = p["tasks"][task].get("top_ops_ms", {})
  print(f"  {task:9s} " + (b["error"] if "error" in b else "  ".join(
      f"{k} {b[k]:6.2f}" for k in ("compute", "transfer", "runtime", "remote_call")) +
      f" ms per {b['wall']:.2f} ms step ({b['threads']} TF threads; top ops ms: " +
      ", ".join(f"{o} {t:.0f}" for o, t in list(top.items())[:4]) + ")"))
PYEOF
}
# The plain fit traces itself the same way (all-reduce's LocalWindow), for its kernels'
# time with the same instrument.
$PY -m launch.local --approach=allreduce --num_workers=1 --run_dir=$OUT/plain -- \
  "${COMMON[@]}" "${PROFILE[@]}" --plain_keras >/dev/null
$PY - "$OUT/plain" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
b = s["profile"]["per_step_ms"]["worker:0"]
print(f"plain keras fit: {s['examples_per_sec']:.0f} ex/s = {64e3 / s['examples_per_sec']:.1f} ms a "
      f"step; traced: compute {b['compute']:.2f} runtime {b['runtime']:.2f} ms per {b['wall']:.2f} ms step")
PYEOF
for row in "1 async 1" "1 async 10" "2 async 10" "2 sync 1"; do
  set -- $row
  d=$OUT/n$1-$2-k$3
  $PY -m launch.local --approach=ps --num_workers=$1 --run_dir=$d -- "${COMMON[@]}" \
    "${PROFILE[@]}" --ps_mode=$2 --steps_per_closure=$3 >/dev/null
  show $d "ps $2 N=$1 steps_per_closure=$3"
done
