#!/usr/bin/env bash
# infer --engine ray (local mode, 2 CPUs) against the single-process path, same backend, weights and images:
# the 250 ISBI test images (151-400), head, ONNX Runtime on the CPU, the shipped default weights.
# Batch 2 (at batch 8 the process took 7 GB and was OOM-killed on the shared 24 GiB machine). Each run once,
# nice'd; wall time of the whole command (start-up included) and the Ray run's own summary line.
# Usage: bash benchmarks/ray_local.sh [OUT_DIR]   (results recorded in benchmarks/results/ray.md)
set -euo pipefail
out=${1:-/tmp/ray_local_bench}
images=$(for i in $(seq 151 400); do echo "../shared/data/ISBI2015_ceph/raw/$i.jpg"; done)
rm -rf "$out" && mkdir -p "$out"
run() {  # NAME ARGS...: time one infer run, its stderr kept in OUT_DIR/NAME.log
  local name=$1 start end
  shift
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  nice -n 10 landmark-edge infer $images -a head --backend onnxruntime -b 2 -f jsonl -o "$out/$name.jsonl" \
    --out-dir "$out/$name" "$@" 2>"$out/$name.log" || true
  end=$(date +%s.%N)
  echo "$name: $(python3 -c "print(f'{$end - $start:.1f} s, {250 / ($end - $start):.3f} images/s')")"
}
run process
run ray --engine ray --ray-address local
grep '^ray:' "$out/ray.log"
cmp "$out/process.jsonl" "$out/ray.jsonl" && echo "outputs identical"
