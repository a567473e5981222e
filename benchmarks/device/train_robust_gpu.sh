#!/usr/bin/env bash
# The robust-recipe training of all three anatomies (issue 15, item 3) in ONE device call, and its acceptance.
#
#   benchmarks/device/train_robust_gpu.sh prepare   # HERE: packed data + missing wheels -> .carry/ (git-ignored, ~30 MiB)
#   benchmarks/device/train_robust_gpu.sh device    # ON the GPU machine (one `run`, carry [".carry"], timeout_s 600):
#                                            #   train, evaluate (packed test split, --shift zoom), and put into
#                                            #   $OUT best.safetensors in 15 MiB parts + record.tar.gz + log
#   benchmarks/device/train_robust_gpu.sh accept DIR  # HERE, DIR = the files that came back: join and check the parts,
#                                            #   evaluate on the raw data (ONNX Runtime), robustness.md, the
#                                            #   acceptance check of item 4; record -> benchmarks/results/training-robust
#
# Budget of the device call (10 minutes, set-up included): training stops by itself after TRAIN_MINUTES (6.5)
# with best.safetensors from the best validation so far (exit 75 is expected then); EPOCHS=40 is 4120 iterations
# (103 per epoch with the hand subset), the end of the first CyclicLR cycle (4000), about 4.5 minutes at the
# 15.5 it/s of bf16 + channels_last. The rest (about 2 minutes) is set-up and evaluation on the GPU.
#
# The device call sends the checkout the session started in (not a helper's worktree): run `prepare` there.
# A CPU smoke test of `device` (tiny network, a few images): DEVICE=cpu FAST="" SMOKE="--limit 4 --local-widths
# 4,4,8,8,8 --global-width 8" EVAL_LIMIT=2 EPOCHS=1 OUT=/tmp/smoke benchmarks/device/train_robust_gpu.sh device
set -euo pipefail
cd "$(dirname "$0")/../.."

DATA=${DATA:-../shared/data}
CARRY=.carry
EPOCHS=${EPOCHS:-40}
TRAIN_MINUTES=${TRAIN_MINUTES:-6.5}
WORKERS=${WORKERS:-8}
DEVICE=${DEVICE:-cuda}
FAST=${FAST---amp bf16 --channels-last}  # the measured 15.5 it/s setting
SMOKE=${SMOKE:-}                          # extra `train` options (smoke tests only)
EVAL_LIMIT=${EVAL_LIMIT:-}               # evaluate only the first N test images (smoke tests only)
RECORD=${RECORD:-benchmarks/results/training-robust}

prepare() {
  rm -rf "$CARRY/packed" "$CARRY/whl"
  mkdir -p "$CARRY/whl"
  landmark-edge pack --data "$DATA" --out "$CARRY/packed"
  version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
  # What the GPU image lacks (its package list: /work/.library/device/KINDS.md), for its Python 3.12.
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$CARRY/whl" \
    "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
    "annotated-types==$(version annotated-types)" "typing-inspection==$(version typing-inspection)" \
    "pydicom==$(version pydicom)"
  du -sh "$CARRY"
}

device() {
  export PYTHONUNBUFFERED=1
  local site=/tmp/landmark-edge-site out=${OUT:-/tmp/robust-out} run=/tmp/robust-run
  if ! python3 -c "import pydantic, pydicom" 2>/dev/null; then  # the GPU image lacks them; a dev machine has them
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$CARRY"/whl/*.whl
  fi
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  local le="python3 -m landmark_edge" record=$run/record
  mkdir -p "$out" "$record"
  exec > >(tee "$out/device.log") 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  # shellcheck disable=SC2086
  $le train --data "$CARRY/packed" --out "$run" --recipe robust --epochs "$EPOCHS" $FAST $SMOKE \
    --device "$DEVICE" --workers "$WORKERS" --max-minutes "$TRAIN_MINUTES" --no-progress || [ $? -eq 75 ]
  python3 - "$run" <<'PY' | tee "$record/speed.txt"
import json, pathlib, sys
rows = [json.loads(l) for l in (pathlib.Path(sys.argv[1]) / "metrics.jsonl").read_text().splitlines()]
train = [r for r in rows if r["kind"] == "train"]
timed = train[20:] if len(train) > 40 else train  # after warm-up (cuDNN autotuning, first allocations)
speed = (len(timed) - 1) / max(timed[-1]["elapsed_s"] - timed[0]["elapsed_s"], 1e-9)
best = [r["epoch"] for r in rows if r["kind"] == "val" and r["best"]]
print(f"{len(train)} iterations, {speed:.2f} it/s (validations included), best validation epoch {best[-1:]}")
PY
  local weights=$run/best.safetensors eval="$le evaluate --data $CARRY/packed --device $DEVICE --workers $WORKERS"
  [ -n "$EVAL_LIMIT" ] && eval="$eval --limit $EVAL_LIMIT"
  $eval --weights "$weights" --out "$record/evaluation_test_packed.json" --per-landmark | tee "$record/evaluation_test_packed.txt"
  $eval --weights "$weights" --anatomies head,chest --shift zoom --out "$record/robustness_packed_robust.json" \
    | tee "$record/robustness_packed_robust.txt"
  $eval --anatomies head,chest --shift zoom --out "$record/robustness_packed_reference.json" \
    | tee "$record/robustness_packed_reference.txt"  # the shipped weights under the same (packed) shifts
  cp "$run/config.json" "$run/metrics.jsonl" "$run/loss.png" "$run/lr.png" "$record/"
  {
    echo "command: benchmarks/device/train_robust_gpu.sh device (EPOCHS=$EPOCHS TRAIN_MINUTES=$TRAIN_MINUTES WORKERS=$WORKERS)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown), date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  } > "$record/environment.txt"
  (cd "$run" && sha256sum best.safetensors) | tee "$out/best.safetensors.sha256"
  split -b 15M -d "$weights" "$out/best.safetensors.part"
  tar -czf "$out/record.tar.gz" -C "$run" record
  ls -l "$out"
}

accept() {
  local back=${1:?usage: benchmarks/device/train_robust_gpu.sh accept DIR_OF_RETURNED_FILES}
  local weights=runs/robust/best.safetensors
  mkdir -p runs/robust "$RECORD"
  cat "$back"/best.safetensors.part* > "$weights"
  (cd runs/robust && sha256sum -c -) < "$back/best.safetensors.sha256"
  tar -xzf "$back/record.tar.gz" -C "$RECORD" --strip-components 1
  cp "$back/device.log" "$RECORD/"
  nice -n 10 landmark-edge evaluate --data "$DATA" --weights "$weights" --backend onnxruntime \
    --out "$RECORD/evaluation_test.json" --per-landmark | tee "$RECORD/evaluation_test.txt"
  nice -n 10 python benchmarks/robustness.py --name robust --weights "$weights"
  python3 - "$RECORD/evaluation_test.json" benchmarks/results/robustness <<'PY' | tee "$RECORD/acceptance.txt"
# Item 4's conditions. Head on the original protocol (sub-pixel, original pixels): the reference protocol scores
# against round(p * new / old), the very bias the sub-pixel targets remove, so it is printed but not judged.
import json, pathlib, sys
test = json.loads(pathlib.Path(sys.argv[1]).read_text())["anatomies"]
shift = {p.stem: json.loads(p.read_text())["anatomies"]["head"] for p in pathlib.Path(sys.argv[2]).glob("*.json")}
framing = [c for c in shift["robust"] if c.startswith(("zoom", "crop"))]
mean = {name: sum(r[c]["MRE"] for c in framing) / len(framing) for name, r in shift.items()}
checks = {
    "head ISBI test MRE <= 1.55 mm (original protocol)": test["head"]["original"]["MRE"] <= 1.55,
    "head zoom/crop MRE >= 20 % lower than the shipped weights'": mean["robust"] <= 0.8 * mean["reference-default"],
    "hand test MRE <= 2 mm (25 images, original protocol)": test["hand"]["original"]["MRE"] <= 2.0,
    "chest test MRE <= 4.0 px (original protocol)": test["chest"]["original"]["MRE"] <= 4.0,
}
for name in ("head", "hand", "chest"):
    print(f"{name}: original {test[name]['original']['MRE']:.3f}, reference protocol {test[name]['reference']['MRE']:.3f}")
print(f"head zoom/crop mean MRE: robust {mean['robust']:.3f} mm, shipped {mean['reference-default']:.3f} mm")
for check, ok in checks.items():
    print(("PASS " if ok else "FAIL ") + check)
PY
}

"${1:?usage: benchmarks/device/train_robust_gpu.sh prepare|device|accept DIR}" "${@:2}"
