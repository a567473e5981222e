"""Which exact CPU backend should ``infer`` default to? Wall time of whole cached ``infer`` calls, fp32.

    PYTHONPATH=. python benchmarks/infer_wall.py --out benchmarks/results/infer_wall      # on a quiet machine

For each backend (ONNX Runtime fp32, OpenVINO with the f32 hint) the same command runs as a fresh process, so each
call pays what a user's does: Python and library imports, reading the cached graph, making the session (OpenVINO:
compiling, its compiled-model cache warm), reading and resizing the images, the network, decoding and writing
JSON. One warm-up call fills the caches (graph, compiled model, OpenVINO's machine probe); then ``--repeats``
calls on one chest image and on a 16-image chest folder are timed, alternating backends so drift in the machine's
load hits both alike. The default (:data:`landmark_edge.runtime.registry.CPU_FP32_DEFAULT`) should be the one that
wins the one-image call; the record says which. Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from landmark_edge.bench.records import write_record

BACKENDS = ("onnxruntime", "openvino")
CHEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chest" / "pngs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=CHEST, help="folder of chest X-rays (the first 16 are used)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="--option threads=N for both (0: each decides)")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    files = sorted(args.images.glob("*.png"))[:16]
    with tempfile.TemporaryDirectory(prefix="infer-wall-") as scratch:
        folder = Path(scratch) / "sixteen"
        folder.mkdir()
        for path in files:
            (folder / path.name).symlink_to(path.resolve())
        cases = {"one image": files[0], "16-image folder": folder}
        for backend in BACKENDS:  # warm-up: caches filled, probe done
            run_infer(backend, files[0], args.threads)
        times = {case: {backend: [] for backend in BACKENDS} for case in cases}
        for _ in range(args.repeats):
            for case, target in cases.items():
                for backend in BACKENDS:
                    times[case][backend].append(run_infer(backend, target, args.threads))
    medians = {case: {b: statistics.median(t) for b, t in row.items()} for case, row in times.items()}
    data = {"times_s": times, "median_s": medians,
            "one_image_winner": min(medians["one image"], key=medians["one image"].get)}  # fmt: skip
    print(markdown(write_record(args.out, data, markdown)))
    return 0


def run_infer(backend: str, target: Path, threads: int) -> float:
    """Seconds of one ``infer`` process, start to exit (it must succeed)."""
    command = [sys.executable, "-m", "landmark_edge", "infer", str(target), "-a", "chest", "--backend", backend,
               "--format", "json", *(["--option", f"threads={threads}"] if threads else [])]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def markdown(record: dict) -> str:
    lines = ["# Whole cached `infer` call, fp32 on the CPU: wall seconds (median)", "",
             "| case | " + " | ".join(BACKENDS) + " |", "|---|" + "---|" * len(BACKENDS)]  # fmt: skip
    for case, row in record["median_s"].items():
        lines.append(f"| {case} | " + " | ".join(f"{row[b]:.2f}" for b in BACKENDS) + " |")
    lines += ["", f"One-image winner: **{record['one_image_winner']}** (set `CPU_FP32_DEFAULT` in "
              "landmark_edge/runtime/registry.py to it)."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
