#!/usr/bin/env bash
# The paper's GU2Net training run on one NVIDIA GPU (issue 6), as a sequence of resumable steps.
#
#   benchmarks/device/train_gpu.sh pack       # raw data ($DATA) -> $PACKED (~26 MiB, CPU, about 30 s, once)
#   benchmarks/device/train_gpu.sh speed      # iterations/s and early loss of fp32 / bf16 / bf16+channels_last / fp16
#   benchmarks/device/train_gpu.sh chunk      # start or continue $RUN for at most $CHUNK_MINUTES; exit 0 = finished,
#                                      # 75 = stopped with a checkpoint (run `chunk` again, on this or another box)
#   benchmarks/device/train_gpu.sh evaluate   # both protocols on the test splits + the run record -> $RECORD
#   benchmarks/device/train_gpu.sh all        # pack (if missing), chunks until done, evaluate: one machine, no limit
#
# A run directory moves between machines as it is: the checkpoint is parts of at most 16 MiB plus
# checkpoint.json, and the run's hyper-parameters live in its config.json (a resumed chunk takes only --data,
# --device and --workers). Choose AMP / CHANNELS_LAST from `speed` before the first chunk; they are fixed for
# the run's life. Nothing here writes weights into the package: shipping them is a separate, reviewed step.
set -euo pipefail
cd "$(dirname "$0")/../.."

DATA=${DATA:-../shared/data}
PACKED=${PACKED:-data_packed}          # git-ignored
RUN=${RUN:-runs/gu2net}                # git-ignored
RECORD=${RECORD:-benchmarks/results/training}
DEVICE=${DEVICE:-cuda}
AMP=${AMP:-none}                       # none | bf16 | fp16 (forward only; the loss is always fp32)
CHANNELS_LAST=${CHANNELS_LAST:-0}
WORKERS=${WORKERS:-8}
CHUNK_MINUTES=${CHUNK_MINUTES:-9}
LE=${LE:-landmark-edge}                # the installed command (pip install -e . first)

pack() {
  [ -f "$PACKED/manifest.json" ] || $LE pack --data "$DATA" --out "$PACKED"
}

speed() {
  # One minute per setting from the same seed: iterations/s after warm-up, and the mean loss per image of the
  # first iterations, to check that a faster setting keeps the fp32 loss curve.
  pack
  local tmp
  tmp=$(mktemp -d)
  for setting in "none 0" "bf16 0" "bf16 1" "fp16 1"; do
    set -- $setting
    local flags=(--amp "$1")
    [ "$2" = 1 ] && flags+=(--channels-last)
    $LE train --data "$PACKED" --out "$tmp/$1-$2" --device "$DEVICE" --workers "$WORKERS" "${flags[@]}" \
      --max-minutes 1 --no-progress >/dev/null 2>&1 || [ $? -eq 75 ]
  done
  python - "$tmp" <<'PY'
import json, pathlib, sys
for run in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    timed = rows[20:]  # skip warm-up (cuDNN autotuning, first allocations)
    speed = (len(timed) - 1) / (timed[-1]["elapsed_s"] - timed[0]["elapsed_s"]) if len(timed) > 1 else float("nan")
    early = rows[:200]
    loss = sum(r["loss_per_image"] for r in early) / max(len(early), 1)
    print(f"{run.name:8s} {speed:7.2f} it/s   mean loss/image over iterations 1-{len(early)}: {loss:,.0f}")
PY
  rm -rf "$tmp"
}

chunk() {
  pack
  local flags=(--device "$DEVICE" --workers "$WORKERS" --max-minutes "$CHUNK_MINUTES" --no-progress)
  if [ -f "$RUN/config.json" ]; then
    $LE train --resume "$RUN" --data "$PACKED" "${flags[@]}"
  else
    local cl=()
    [ "$CHANNELS_LAST" = 1 ] && cl=(--channels-last)
    $LE train --data "$PACKED" --out "$RUN" --amp "$AMP" "${cl[@]}" "${flags[@]}"
  fi
}

evaluate() {
  local data=$DATA
  [ -d "$data/ISBI2015_ceph" ] || data=$PACKED  # the raw images give the truest original-resolution errors
  mkdir -p "$RECORD"
  $LE evaluate --data "$data" --weights "$RUN/best.safetensors" --device "$DEVICE" --split test \
    --out "$RECORD/evaluation_test.json" --overlay "$RECORD/overlays" --per-landmark | tee "$RECORD/evaluation_test.txt"
  cp "$RUN/config.json" "$RUN/metrics.jsonl" "$RUN/loss.png" "$RUN/lr.png" "$RECORD/"
  {
    echo "command: benchmarks/device/train_gpu.sh (AMP=$AMP CHANNELS_LAST=$CHANNELS_LAST WORKERS=$WORKERS)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    python -c "import torch, landmark_edge; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| landmark-edge', landmark_edge.__version__)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    python -c "import json; r=[json.loads(l) for l in open('$RUN/metrics.jsonl')]; print('training time (s):', max((x['elapsed_s'] for x in r if 'elapsed_s' in x), default=None))"
  } > "$RECORD/environment.txt"
}

all() {
  pack
  until chunk; do
    [ $? -eq 75 ] || exit 1
  done
  evaluate
}

"${1:-all}"
