#!/usr/bin/env bash
# PS async's per-step tax, side by side in one run (issue 33): the plain Keras fit, then
# PS async at N = 1 and 2 with 1, 10 and 50 steps per closure (small_cnn, 30,000
# examples each). Prints examples/s and the ratio to the plain fit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/ps-closure}
COMMON=(--model=small_cnn --dataset=mnist --batch_size=64 --epochs=1 --log_every=100000)
rate() { $PY -c "import json,sys; print(json.load(open(sys.argv[1]))['examples_per_sec'])" "$1/summary.json"; }
$PY -m launch.local --approach=allreduce --num_workers=1 --run_dir=$OUT/plain -- "${COMMON[@]}" --steps_per_epoch=468 --plain_keras >/dev/null
base=$(rate $OUT/plain); echo "plain keras fit: $base ex/s"
for n in 1 2; do
  steps=$((468))
  for k in 1 10 50; do
    d=$OUT/n$n-k$k
    $PY -m launch.local --approach=ps --num_workers=$n --run_dir=$d -- "${COMMON[@]}" --ps_mode=async --steps_per_epoch=$steps --steps_per_closure=$k >/dev/null
    r=$(rate $d); echo "ps async N=$n steps_per_closure=$k: $r ex/s ($(python3 -c "print(f'{$r/$base:.2f}')")x)"
  done
done
