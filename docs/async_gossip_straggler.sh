#!/usr/bin/env bash
# Issue 25's measurements: synchronous against asynchronous gossip, with and without a
# 3x straggler (worker:1), side by side in one run. Writes one run directory per cell
# under $1 (default runs/async-gossip) and prints a table (docs/async_gossip_table.py).
#   bash docs/async_gossip_straggler.sh [root]
set -euo pipefail
root=${1:-runs/async-gossip}
py=${PYTHON:-python}
mkdir -p "$root"
run() {  # name, launcher args, trainer args
  local dir=$root/$1; rm -rf "$dir"
  $py -m launch.local --approach=gossip --run_dir="$dir" $2 -- $3 > "$dir.log" 2>&1 \
    || echo "failed: $1 (see $dir.log)"
}
for n in 2 4; do
  for mode in sync async; do
    for s in none straggler; do
      extra=""; [ $s = straggler ] && extra="--straggler=worker:1:3"
      run "mlp-n$n-$mode-$s" "--num_workers=$n $extra" "--model=mlp --epochs=1 --gossip_mode=$mode"
    done
  done
done
for mode in sync async; do
  for s in none straggler; do
    extra=""; [ $s = straggler ] && extra="--straggler=worker:1:3"
    run "small_cnn-n2-$mode-$s" "--num_workers=2 $extra" "--model=small_cnn --epochs=2 --gossip_mode=$mode"
  done
done
$py docs/async_gossip_table.py "$root"
