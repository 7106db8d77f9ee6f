#!/usr/bin/env bash
# Where an all-reduce step's time goes (issue 33): every worker traces itself with TF's
# profiler for 2 s from step 200 (--profile_ms, trainers/common/profiling.py LocalWindow)
# and splits its TF compute threads' time into compute (op kernels), transfer, runtime
# (the executor around the kernels) and idle, plus the time a collective op is in flight
# (`collective`, any thread) and the collective ops launched a step. mlp and cnn, batch 64
# a worker, 600 steps a row: the plain Keras fit (batch 64 and 128), all-reduce N = 1 and
# N = 2, side by side in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/allreduce-profile}
MODELS=${MODELS:-mlp cnn}
COMMON=(--dataset=mnist --epochs=1 --log_every=300 --steps_per_epoch=600
        --profile_ms=2000 --profile_at_step=200)
show() {
  $PY - "$1" "$2" <<'PYEOF'
import glob, json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
print(f"{sys.argv[2]}: {s['examples_per_sec']:.0f} ex/s")
for path in sorted(glob.glob(sys.argv[1] + "/profile/breakdown-*.json")):
  p = json.load(open(path))
  for task, b in p["per_step_ms"].items():
    top = p["tasks"][task].get("top_ops_ms", {})
    print(f"  {task:9s} " + (b["error"] if "error" in b else "  ".join(
        f"{k} {b[k]:6.2f}" for k in ("compute", "transfer", "runtime", "idle", "collective"))
        + f" ms per {b['wall']:.2f} ms step, {b['collectives']:.1f} collective ops a step "
        f"({b['threads']} TF threads; top ops ms: " +
        ", ".join(f"{o} {t:.0f}" for o, t in list(top.items())[:4]) + ")"))
PYEOF
}
for model in $MODELS; do
  for row in "1 64 plain" "1 128 plain" "1 64 allreduce" "2 64 allreduce"; do
    set -- $row
    d=$OUT/$model-$3-n$1-b$2
    extra=(); [ "$3" = plain ] && extra=(--plain_keras)
    $PY -m launch.local --approach=allreduce --num_workers=$1 --run_dir=$d -- \
      "${COMMON[@]}" --model=$model --batch_size=$2 "${extra[@]}" >/dev/null
    show $d "$model $3 N=$1 batch $2/worker"
  done
done
