#!/usr/bin/env bash
# Fine-tune the shipped weights on this machine's CPU in two resumable phases (issue 26, item 4).
#
#   benchmarks/finetune_cpu.sh pack   # once: the packed data (grid-sized JPEGs) -> $PACKED
#   benchmarks/finetune_cpu.sh hand   # phase 1: start, or continue where it stopped
#   benchmarks/finetune_cpu.sh head   # phase 2: start from phase 1's best.safetensors, or continue
#
# In the background, niced, with the cores to itself (two jobs sharing 2 cores slow each other ~30x):
#   mkdir -p runs && nohup nice -n 10 benchmarks/finetune_cpu.sh hand > runs/finetune-hand.log 2>&1 &
# Each phase is one `train` run directory under $RUNS (git-ignored /runs/): config.json, metrics.jsonl,
# loss.png, the checkpoint in parts and best.safetensors. Running the same command again continues the run from
# its last checkpoint (`train --resume`); MINUTES=N stops a chunk after N minutes (exit 75: run it again).
#
# Phase 1, the hand: only the hand's own layers train (`--anatomies hand` gives the run no head or chest
# batches, so those heads are kept bit-identical; `--freeze shared` keeps the layers every anatomy shares), from
# the shipped weights, robust recipe by default (92 training images: the augmentation's reframings are cheap on
# the packed copy, benchmarks/results/augmentation.md). Phase 2, the head: robust recipe on the head's own
# layers with the BatchNorm statistics frozen too (`--freeze shared,bn-stats`), from phase 1's best weights, so
# the result carries both phases. Both use the fine-tune schedule (linear warm-up to LR, cosine decay to 1e-6),
# bf16 autocast and channels_last on the CPU.
# A smoke test (tiny network, a few images, a minute): WEIGHTS=tiny.safetensors (random, widths 4,4,8,8,8 and 8)
#   SMOKE="--limit 8 --local-widths 4,4,8,8,8 --global-width 8" HAND_EPOCHS=1 HEAD_EPOCHS=1 RUNS=/tmp/smoke ...
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data}
PACKED=${PACKED:-data_packed}            # git-ignored
RUNS=${RUNS:-runs/finetune}              # git-ignored
WEIGHTS=${WEIGHTS:-landmark_edge/weights/gu2net_default.safetensors}
MINUTES=${MINUTES:-}                     # stop each chunk after this many minutes (resumable); empty: no limit
WORKERS=${WORKERS:-1}
HAND_EPOCHS=${HAND_EPOCHS:-30}           # 23 iterations each (92 images, batch 4)
HAND_LR=${HAND_LR:-3e-4}
HAND_RECIPE=${HAND_RECIPE:-robust}
HEAD_EPOCHS=${HEAD_EPOCHS:-20}           # 32 iterations each (130 images, batch 4)
HEAD_LR=${HEAD_LR:-1e-4}
WARMUP=${WARMUP:-30}
# Precision/layout of a new run: bf16 autocast + channels_last only where the CPU computes bf16 natively
# (AVX512_BF16/AMX); on an AVX2-only CPU oneDNN emulates bf16 and it is slower than fp32 (measured with
# benchmarks/cpu_training.py: a first hand iteration took over 30 minutes niced on a shared AVX2 machine).
if grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo 2>/dev/null; then NATIVE_BF16="--amp bf16 --channels-last"; else NATIVE_BF16=""; fi
FAST=${FAST-$NATIVE_BF16}
SMOKE=${SMOKE:-}                         # extra options of a new run (smoke tests only)
train() { python -m landmark_edge train "$@"; }

limit() { if [[ -n "$MINUTES" ]]; then echo "--max-minutes $MINUTES"; fi; }

# run_phase NAME OPTIONS...: a new run with OPTIONS, or the existing one resumed (its config.json fixes them).
run_phase() {
  local name=$1 dir=$RUNS/$1
  shift
  local status=0
  if [[ -f $dir/config.json ]]; then
    # shellcheck disable=SC2046
    train --resume "$dir" --workers "$WORKERS" --no-progress $(limit) || status=$?
  else
    mkdir -p "$RUNS"
    # shellcheck disable=SC2046
    train --data "$PACKED" --out "$dir" "$@" $FAST --device cpu --workers "$WORKERS" \
      --checkpoint-every 10 --warmup "$WARMUP" --no-progress $SMOKE $(limit) || status=$?
  fi
  if [[ $status == 75 ]]; then
    echo "$name: stopped with a checkpoint; continue with: $0 $name" >&2
  fi
  return $status
}

case ${1:-} in
  pack)
    python -m landmark_edge pack --data "$DATA" --out "$PACKED" ;;
  hand)
    run_phase hand --init "$WEIGHTS" --anatomies hand --freeze shared --recipe "$HAND_RECIPE" \
      --epochs "$HAND_EPOCHS" --lr "$HAND_LR" --val-every 1 ;;
  head)
    run_phase head --init "$RUNS/hand/best.safetensors" --anatomies head --freeze shared,bn-stats \
      --recipe robust --epochs "$HEAD_EPOCHS" --lr "$HEAD_LR" --val-every 1 ;;
  *)
    sed -n '2,23p' "$0" >&2
    exit 2 ;;
esac
