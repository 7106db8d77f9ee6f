#!/usr/bin/env bash
# The GPU path on a lent GPU machine (one short, bounded script; `run` of the device
# tool). What it finds goes to $OUT/gpu_check.txt: the GPU, whether TF sees it, and
# - if a TF with CUDA is there - all-reduce on the GPU at N = 1 (one GPU per worker) and
# the launcher's GPU plan for N = 2 (one GPU: both workers share it; NCCL refuses two
# ranks on one device, so N = 2 runs the ring over gRPC).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"; exec > >(tee "$OUT/gpu_check.txt") 2>&1
echo "== machine"; nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
lscpu | grep -E "Model name|^CPU\(s\)"; python3 --version
PY=python3
for cand in .venv/bin/python /opt/conda/bin/python python3.11 python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import tensorflow" 2>/dev/null; then PY=$cand; break; fi
done
echo "== python with TF: $PY"
$PY - <<'PYEOF' || true
import tensorflow as tf
print("tf", tf.__version__, "built with CUDA:", tf.test.is_built_with_cuda())
print("GPUs:", tf.config.list_physical_devices("GPU"))
PYEOF
echo "== launcher's plan for 2 workers on this host (GPU assignment; pure)"
$PY -m launch.local --approach=allreduce --num_workers=2 --dry_run -- --model=small_cnn --communication=nccl 2>&1 | grep -E "worker|GPU|CUDA" | head -8 || true
if $PY -c "import tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" 2>/dev/null; then
  D=$(mktemp -d)
  export TFDS_DATA_DIR=${TFDS_DATA_DIR:-$PWD/../shared/data/tensorflow_datasets}
  echo "== all-reduce N=1 on the GPU, NCCL, small_cnn, 1 epoch"
  timeout 200 $PY -m launch.local --approach=allreduce --num_workers=1 --run_dir=$D/n1 --timeout=180 -- --model=small_cnn --communication=nccl --epochs=1 --batch_size=256 2>&1 | tail -4
  echo "== all-reduce N=2 sharing the GPU, ring over gRPC"
  timeout 200 $PY -m launch.local --approach=allreduce --num_workers=2 --run_dir=$D/n2 --timeout=180 -- --model=small_cnn --communication=ring --epochs=1 --batch_size=256 2>&1 | tail -4
  cp $D/*/summary.json "$OUT"/ 2>/dev/null; for f in $D/*/summary.json; do cp $f "$OUT/$(basename $(dirname $f))_summary.json"; done
else
  echo "== no TF with a GPU here: pip list (tensorflow, nvidia)"; $PY -m pip list 2>/dev/null | grep -iE "tensorflow|nvidia|jax|torch" | head
fi
