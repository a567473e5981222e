#!/usr/bin/env bash
# Run HERE (the machine with the repository and ../shared), before `benchmarks/device/gpu_check.sh` or
# `benchmarks/device/h200.sh` runs on the GPU machine. Puts what the GPU machine cannot fetch into .carry/ (git-ignored;
# name it in the device call's `carry`) and checks that the tree plus .carry stays under the call's 64 MiB:
#   .carry/bench/weights.safetensors   the weights to benchmark (only when WEIGHTS is given: the shipped default
#                                      weights are in git and travel with the tree)
#   .carry/bench/images/               the first 32 Shenzhen chest X-rays (real images for the drift columns)
#   .carry/whl/                        wheels the GPU image lacks (pydantic, pydicom, onnxslim), for its Python 3.12
#   .carry/commit.txt                  the commit and uncommitted changes being checked
# usage: benchmarks/device/prepare_device.sh [WEIGHTS.safetensors] [IMAGE_DIR]
set -euo pipefail
weights=${1:-}
images=${2:-../shared/data/chest/pngs}
rm -rf .carry/bench .carry/whl
mkdir -p .carry/bench/images .carry/whl
if [ -n "$weights" ]; then cp "$weights" .carry/bench/weights.safetensors; fi
find "$images" -maxdepth 1 -name '*.png' | sort | head -n 32 | xargs -I{} cp {} .carry/bench/images/
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .carry/whl \
  "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
  "annotated-types==$(version annotated-types)" "typing-inspection==$(version typing-inspection)" \
  "typing-extensions==$(version typing-extensions)" "pydicom==$(version pydicom)" "onnxslim==$(version onnxslim)"
{ git rev-parse HEAD && git status --short; } >.carry/commit.txt  # the device machine gets no .git
# What travels: tracked files, untracked files git does not ignore, and .carry (the device call's limit: 64 MiB).
tree_bytes=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null || true; } \
  | awk '{s += $1} END {print s + 0}')
carry_bytes=$(du -sb .carry | cut -f1)
total_mib=$(( (tree_bytes + carry_bytes) / 1048576 ))
echo "tree $((tree_bytes / 1048576)) MiB + .carry $((carry_bytes / 1048576)) MiB = ${total_mib} MiB (limit 64 MiB)"
if [ "$total_mib" -ge 64 ]; then echo "too large for one device call" >&2; exit 1; fi
