#!/usr/bin/env bash
# Run ON the GPU machine from the repository root (see benchmarks/device/README.md): installs the carried wheels,
# then benchmarks every registered backend at fp32/fp16/bf16/int8 on chest, batch 1/8/32, against the eager fp32
# reference. Results go to $OUT (the device tool's folder that comes back) or benchmarks/results/nvidia-h200-chest.
# Extra arguments are passed on to `landmark-edge bench` (a later one wins, e.g. --iters 20).
set -euo pipefail
export PYTHONUNBUFFERED=1
site=/tmp/landmark-edge-site
if compgen -G ".carry/whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .carry/whl/*.whl
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
out=${OUT:-benchmarks/results/nvidia-h200-chest}
weights=()  # the shipped default weights unless prepare_device.sh was given a weights file
if [ -f .carry/bench/weights.safetensors ]; then weights=(--weights .carry/bench/weights.safetensors); fi
mkdir -p "$out"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/nvidia-smi.csv"
# The CUDA paths' tests first (pinned uploads, GPU decoding, CUDA-event timing): they skip on CPU-only machines.
python3 -m pytest -q -p no:cacheprovider -m gpu \
  || echo "GPU tests failed: the numbers below need a second look"
# `timeout -s INT` stops a run that would outlast the device call's 10 minutes (set-up and tests included); bench then still writes the
# finished backends' results (table, JSON, plot) before it exits.
timeout -s INT "${BENCH_TIMEOUT:-480}" python3 -m landmark_edge bench --anatomy chest --device cuda \
  --backends all --precisions fp32,fp16,bf16,int8 --batch-sizes 1,8,32 --iters 100 --warmup 10 \
  --images .carry/bench/images --max-images 32 "${weights[@]}" \
  --out-dir "$out" "$@"
