#!/usr/bin/env bash
# infer --executor ray (local mode, this machine's CPUs) against the single-process path, same backend, weights and images:
# ISBI test images from 151 on (COUNT of them, 250 = the whole test split), head, ONNX Runtime on the CPU, the
# shipped default weights, batch 2 (the recorded run's setting; batch 8 once took 7 GB through ONNX Runtime's CPU
# arena, which the backend now turns off: 0.9 GB). Each run once, nice'd. Reports the wall time of the whole command (start-up included), the
# steady rate (between the first and the last per-image JSON written) and the Ray run's own summary line.
# Usage: bash benchmarks/ray_local.sh [OUT_DIR] [COUNT]   (results recorded in benchmarks/results/ray.md)
set -euo pipefail
out=${1:-/tmp/ray_local_bench}
count=${2:-250}
images=$(for i in $(seq 151 $((150 + count))); do echo "../shared/data/ISBI2015_ceph/raw/$i.jpg"; done)
rm -rf "$out" && mkdir -p "$out"
run() {  # NAME ARGS...: time one infer run, its stderr kept in OUT_DIR/NAME.log
  local name=$1 start end
  shift
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  nice -n 10 landmark-edge infer $images -a head --backend onnxruntime -b 2 -f jsonl -o "$out/$name.jsonl" \
    --out-dir "$out/$name" "$@" 2>"$out/$name.log" || true
  end=$(date +%s.%N)
  python3 - "$out/$name" "$start" "$end" "$count" "$name" <<'PY'
import sys
from pathlib import Path
folder, start, end, count, name = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
times = sorted(p.stat().st_mtime for p in folder.rglob("*.json"))
steady = (len(times) - 1) / (times[-1] - times[0])
print(f"{name}: {len(times)} of {count} images, {end - start:.1f} s wall ({count / (end - start):.3f} images/s "
      f"start-up included), steady {steady:.3f} images/s")
PY
}
run process
run ray --executor ray --ray-address local
grep '^ray:' "$out/ray.log"
cmp "$out/process.jsonl" "$out/ray.jsonl" && echo "outputs identical"
