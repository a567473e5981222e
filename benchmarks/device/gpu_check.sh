#!/usr/bin/env bash
# Issue 14's GPU check as ONE device call (benchmarks/device/README.md, "GPU check"). Run ON the GPU machine from the
# repository root, after `benchmarks/device/prepare_device.sh` here:
#
#   run(command="bash benchmarks/device/gpu_check.sh", carry=[".carry"], timeout_s=420)
#
# Phases, in priority order (each under `timeout -s INT`, so a bench cut short still writes its finished rows):
#   tests             every CUDA test (pytest -m gpu), sized to ~2 minutes
#   startup_compiled  `infer` of 16 X-rays with --backend compiled fp16 -b 32, from a cold compiler cache:
#                     process start -> every bucket 1..32 compiled -> results (target <= 60 s)
#   bench_main        reference fp32, eager fp16/bf16, compiled fp16/bf16 (defaults), batch 1/8/32
#   compile_pt2       `landmark-edge compile` fp16 with autotuning (falls back to --no-autotune if it runs long)
#   startup_aoti      `infer` of one X-ray from the .pt2: process start -> result (target <= 5 s)
#   bench_aoti        the .pt2 against the reference
#   kernels           benchmarks/gpu_fast_path.py's kernel rows (each Triton kernel vs cuDNN eager / compiled)
#   bench_triton, bench_channels_last, bench_triton_cl   compiled fp16 with Triton kernels and/or channels_last
# Phases that do not fit in GPU_CHECK_BUDGET_S (default 330 s after set-up, so that the call, ~6 minutes, can be
# run twice in a 15-minute device lease) are skipped and the log ends with the command that runs just those.
#
# usage: bash benchmarks/device/gpu_check.sh [PHASE,PHASE,...]     (default: all, in the order above)
#        bash benchmarks/device/gpu_check.sh --dry-run [PHASES]     here, on a CPU: print and parse every command,
#                                                                   check the rest
#        GPU_CHECK_DEVICE=cpu bash benchmarks/device/gpu_check.sh tests,kernels   here: the phase machinery for real
# Writes to $OUT (7 files): gpu_check.log, environment.txt, cuda_tests.xml, timings.tsv, bench.tar.gz (every
# bench's bench.json/.md/.png and the compile report), gpu_fast_path_<gpu>_<time>.json and .md.
set -uo pipefail
export PYTHONUNBUFFERED=1
ALL_PHASES=tests,startup_compiled,bench_main,compile_pt2,startup_aoti,bench_aoti,kernels,bench_triton,bench_channels_last,bench_triton_cl
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
phases=",${1:-$ALL_PHASES},"
budget=${GPU_CHECK_BUDGET_S:-330}
out=${OUT:-/tmp/gpu_check_out}
work=/tmp/gpu_check_work
py=python3
device=${GPU_CHECK_DEVICE:-cuda}  # GPU_CHECK_DEVICE=cpu: a smoke run of the phases here (the GPU ones skip or crawl)

setup() {
  rm -rf "$work" && mkdir -p "$out" "$work/bench"
  if [ "$dry_run" = 0 ] && ! $py -c "import pydantic, pydicom, onnxslim" 2>/dev/null; then  # the GPU image lacks them
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/landmark-edge-site \
      .carry/whl/*.whl || return 1
    export PYTHONPATH="/tmp/landmark-edge-site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  # One compiler cache for every phase: `cold` in timings.tsv says whether it was empty when the check started.
  export TORCHINDUCTOR_CACHE_DIR=/tmp/landmark-edge-inductor TRITON_CACHE_DIR=/tmp/landmark-edge-inductor/triton
  if [ -d "$TORCHINDUCTOR_CACHE_DIR" ]; then cache=warm; else cache=cold; fi
  weights=()  # the shipped default weights (in git) unless prepare_device.sh was given a weights file
  if [ -f .carry/bench/weights.safetensors ]; then weights=(--weights .carry/bench/weights.safetensors); fi
  images=(.carry/bench/images/*.png)
  # one `landmark-edge bench` (an array, not a function: `timeout` runs programs only); --out-dir per phase
  bench=($py -m landmark_edge bench --anatomy chest --device "$device" --batch-sizes 1,8,32 --iters 20 --warmup 3
    --images .carry/bench/images --max-images 16 "${weights[@]}")
  printf 'phase\trc\tseconds\tcompiler_cache\n' >"$out/timings.tsv"
}

environment() {
  {
    echo "command: bash benchmarks/device/gpu_check.sh $*"
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(cat .carry/commit.txt 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "compiler cache at start: $cache; budget ${budget} s"
    command -v nvidia-smi >/dev/null && nvidia-smi && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
    $py - <<'EOF'
import platform, torch
from importlib.metadata import version
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version(), "| GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for name in ("triton", "onnxruntime", "onnx", "onnxslim", "pydantic", "pydicom", "numpy", "typer", "rich"):
    try:
        print(name, version(name))
    except Exception as error:  # noqa: BLE001 - report whatever is missing and go on
        print(name, "MISSING:", error)
EOF
  } 2>&1 | tee "$out/environment.txt"
}

# phase NAME CAP COMMAND...: COMMAND under `timeout -s INT` for at most CAP s (less if the budget is nearly spent).
phase() {
  local name=$1 cap=$2
  shift 2
  [[ $phases == *",$name,"* ]] || return 0
  local left=$((budget - (SECONDS - t0)))
  if ((cap > left)); then cap=$left; fi
  if ((cap < 20)); then
    echo "== $name: SKIPPED, budget spent"
    skipped+=("$name")
    printf '%s\tskipped\t0\t%s\n' "$name" "$cache" >>"$out/timings.tsv"
    return 0
  fi
  echo "== $name (at most ${cap} s): $*"
  if ((dry_run)); then
    if [[ " $* " == *" -m landmark_edge "* ]]; then  # parsed together at the end of the dry run
      printf '%q ' "${@:4}" >>"$work/commands.txt" && echo >>"$work/commands.txt"
    fi
    return 0
  fi
  local start
  start=$(date +%s.%N)
  timeout -s INT -k 15 "$cap" "$@"
  local rc=$?
  local took
  took=$(awk "BEGIN {print $(date +%s.%N) - $start}")
  echo "== $name: exit $rc after ${took} s"
  printf '%s\t%s\t%.1f\t%s\n' "$name" "$rc" "$took" "$cache" >>"$out/timings.tsv"
  tar -czf "$out/bench.tar.gz" -C "$work" bench  # after every phase: a killed call still brings the results back
  return "$rc"
}

main() {
  setup || { echo "set-up failed"; return 1; }
  environment "$@"
  t0=$SECONDS
  skipped=()
  local pt2=$work/chest_fp16.pt2  # outside bench/: it does not go into bench.tar.gz
  phase tests 150 $py -m pytest -q -p no:cacheprovider -m gpu --durations=0 --junitxml="$out/cuda_tests.xml"
  phase startup_compiled 90 $py -m landmark_edge infer "${images[@]:0:16}" -a chest --device "$device" --backend compiled \
    --precision fp16 -b 32 "${weights[@]}" --format jsonl -o "$work/bench/startup_compiled.jsonl"
  phase bench_main 120 "${bench[@]}" --out-dir "$work/bench/main" --backends torch,compiled --precisions fp16,bf16
  if ! phase compile_pt2 150 $py -m landmark_edge compile -a chest --device "$device" --precision fp16 "${weights[@]}" \
    -o "$pt2" --format json; then
    rm -f "$pt2"
    phase compile_pt2 60 $py -m landmark_edge compile -a chest --device "$device" --precision fp16 "${weights[@]}" \
      -o "$pt2" --format json --no-autotune
  fi
  phase startup_aoti 30 $py -m landmark_edge infer "${images[0]}" -a chest --device "$device" --backend aoti \
    --artifact "$pt2" --format json -o "$work/bench/startup_aoti.json"
  phase bench_aoti 45 "${bench[@]}" --out-dir "$work/bench/aoti" --backends aoti --precisions fp16 \
    --artifact "aoti:$pt2"
  phase kernels 75 $py benchmarks/gpu_fast_path.py --device "$device" --sections kernels --iters 20 --budget-s 55 \
    --out "$out"
  phase bench_triton 75 "${bench[@]}" --out-dir "$work/bench/triton" --backends compiled --precisions fp16 \
    --option compiled:kernels=triton
  phase bench_channels_last 60 "${bench[@]}" --out-dir "$work/bench/channels_last" --backends compiled \
    --precisions fp16 --option compiled:channels_last=true
  phase bench_triton_cl 75 "${bench[@]}" --out-dir "$work/bench/triton_cl" --backends compiled --precisions fp16 \
    --option compiled:kernels=triton --option compiled:channels_last=true
  tar -czf "$out/bench.tar.gz" -C "$work" bench
  echo "== done in $((SECONDS - t0)) s of ${budget} s (+ set-up); files in $out:"
  ls -l "$out"
  if ((${#skipped[@]})); then
    echo "== not run (budget): rerun with  bash benchmarks/device/gpu_check.sh $(IFS=,; echo "${skipped[*]}")"
  fi
}

if ((dry_run)); then
  echo "dry run: commands only (no GPU); checks below"
  main "$@"
  echo "== check: every landmark-edge command line parses as the real run would (an unknown option fails here;"
  echo "   an old spelling prints its deprecation line); nothing runs"
  python - "$work/commands.txt" <<'PY'
import shlex
import sys

import typer

from landmark_edge.cli import make_app

failed = 0
for line in open(sys.argv[1]).read().splitlines():
    name, *args = shlex.split(line)
    try:
        typer.main.get_command(make_app([name])).get_command(None, name).make_context(name, args)
    except Exception as error:  # noqa: BLE001 - Click's usage errors: say which command and why, check the rest
        failed += 1
        print(f"   FAILS: landmark-edge {name}: {getattr(error, 'format_message', error.__str__)()}")
    else:
        print(f"   parses: landmark-edge {name} {shlex.join(args)[:80]}...")
print(f"   {failed} command line(s) do not parse" if failed else "   every command line parses")
PY
  echo "== check: pytest selects the CUDA tests"
  python -m pytest -q -p no:cacheprovider --collect-only -m gpu | tail -n 3
  echo "== check: gpu_fast_path.py --sections kernels runs (kernel rows skip without CUDA)"
  python benchmarks/gpu_fast_path.py --tiny --device cpu --sections kernels --iters 1 --out "$work" | tail -n 1
  echo "== check: carried images and wheels"
  ls .carry/bench/images | wc -l && ls .carry/whl
  exit 0
fi
mkdir -p "$out"
main "$@" 2>&1 | tee "$out/gpu_check.log"
