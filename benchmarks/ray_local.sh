#!/usr/bin/env bash
# infer --executor ray (local mode, this machine's CPUs) against the single-process path, same backend, weights and images:
# ISBI test images from 151 on (COUNT of them, 250 = the whole test split), head, ONNX Runtime on the CPU, the
# shipped default weights, batch 2 (the recorded run's setting; batch 8 once took 7 GB through ONNX Runtime's CPU
# arena, which the backend now turns off: 0.9 GB). Each run once, nice'd. Reports the wall time of the whole command (start-up included), the
# steady rate (between the first and the last per-image JSON written) and the Ray run's own summary line.
# Usage: bash benchmarks/ray_local.sh [OUT_DIR] [COUNT]   (the record: $RECORD.json/.md, default
# benchmarks/results/ray_local; the discussion of the recorded run: benchmarks/results/ray.md)
set -euo pipefail
out=${1:-/tmp/ray_local_bench}
count=${2:-250}
record=${RECORD:-benchmarks/results/ray_local}
images=$(for i in $(seq 151 $((150 + count))); do echo "../shared/data/ISBI2015_ceph/raw/$i.jpg"; done)
rm -rf "$out" && mkdir -p "$out"
run() {  # NAME ARGS...: time one infer run; its stderr in OUT_DIR/NAME.log, its row in OUT_DIR/rows.jsonl
  local name=$1 start end
  shift
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  nice -n 10 landmark-edge infer $images -a head --backend onnxruntime -b 2 -f jsonl -o "$out/$name.jsonl" \
    --out-dir "$out/$name" "$@" 2>"$out/$name.log" || true
  end=$(date +%s.%N)
  python3 - "$out/$name" "$start" "$end" "$count" "$name" <<'PY' | tee -a "$out/rows.jsonl"
import json, sys
from pathlib import Path
folder, start, end, count, name = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
times = sorted(p.stat().st_mtime for p in folder.rglob("*.json"))
print(json.dumps({"path": name, "images": len(times), "of": count, "wall_s": round(end - start, 1),
                  "wall_images_per_s": round(count / (end - start), 3),
                  "steady_images_per_s": round((len(times) - 1) / (times[-1] - times[0]), 3)}))
PY
}
run process
run ray --executor ray --ray-address local
if cmp -s "$out/process.jsonl" "$out/ray.jsonl"; then identical=true; else identical=false; fi
PYTHONPATH=. python3 - "$out" "$record" "$identical" "$@" <<'PY'
import json, sys
from pathlib import Path
from landmark_edge.bench.records import write_record
out, record, identical = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "true"
rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
summary = next((l for l in (out / "ray.log").read_text().splitlines() if l.startswith("ray:")), None)

def markdown(made: dict) -> str:
    lines = ["# `infer --executor ray` (local mode) against the single-process path", "",
             f"Outputs byte-identical: **{made['identical']}**. Ray's summary: `{made['ray_summary']}`.", "",
             "| path | images | wall s (start-up included) | images/s (wall) | images/s (steady) |", "|---|---|---|---|---|"]
    lines += [f"| {r['path']} | {r['images']} of {r['of']} | {r['wall_s']} | {r['wall_images_per_s']} | "
              f"{r['steady_images_per_s']} |" for r in made["rows"]]
    return "\n".join(lines) + "\n"

write_record(record, {"rows": rows, "identical": identical, "ray_summary": summary}, markdown,
             argv=["benchmarks/ray_local.sh", *sys.argv[4:]])
print(f"wrote {record}.json and .md")
PY
