#!/usr/bin/env bash
# Run HERE (the machine with the repository and ../shared), before `benchmarks/h200.sh` runs on the GPU machine.
# Puts what the GPU machine cannot fetch into .carry/ (git-ignored; name it in the device call's `carry`):
#   .carry/bench/weights.safetensors   the weights to benchmark
#   .carry/bench/images/               the first 32 Shenzhen chest X-rays (real images for the drift columns)
#   .carry/whl/                        wheels the GPU image lacks (pydantic), for its Python 3.12
# usage: benchmarks/prepare_device.sh WEIGHTS.safetensors [IMAGE_DIR]
set -euo pipefail
weights=${1:?usage: benchmarks/prepare_device.sh WEIGHTS.safetensors [IMAGE_DIR]}
images=${2:-../shared/data/chest/pngs}
rm -rf .carry/bench .carry/whl
mkdir -p .carry/bench/images .carry/whl
cp "$weights" .carry/bench/weights.safetensors
find "$images" -maxdepth 1 -name '*.png' | sort | head -n 32 | xargs -I{} cp {} .carry/bench/images/
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .carry/whl \
  "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
  "annotated-types==$(version annotated-types)" "typing-inspection==$(version typing-inspection)"
du -sh .carry
