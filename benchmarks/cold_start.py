"""Cold start of a one-image ``infer`` from the shell: the first call on a fresh install against a cached call.

    PYTHONPATH=. python benchmarks/cold_start.py --out benchmarks/results/cold_start

Runs ``landmark-edge infer landmark_edge/examples/chest_CHNCXR_0282_0.png --anatomy chest`` as a new process
(``python -m landmark_edge``, so the checkout on ``PYTHONPATH`` is what runs), in ``--repeat`` pairs: a first
call with an empty cache folder (the default ONNX Runtime backend makes the graph from the weights and caches it),
then at once a call with that cache. Each pair gives the ratio first / cached; pairs taken back to back share the
machine's load, so the ratio holds on a shared machine where the absolute seconds do not. Then ``--repeat`` calls
with ``--backend torch``. Each call's wall time and CPU time (user + sys of the child) are recorded with the load
average. ``python -X importtime`` of a first call and of a cached call give the biggest modules each imports
(all of them, those the command imports as it runs included: torch on a first call, ONNX Runtime on both).
Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from landmark_edge.bench.records import write_record
from landmark_edge.io.cache import CACHE_ENV

EXAMPLE = Path("landmark_edge/examples/chest_CHNCXR_0282_0.png")
ARGUMENTS = ["infer", str(EXAMPLE), "--anatomy", "chest"]
# The "before" (the exporter ran on every first call), kept as a pointer to its own record.
BEFORE = (
    "Before the graph templates (the same command, 2026-12-01, record at commit fea1b6e: `git show "
    "fea1b6e:benchmarks/results/cold_start.md`): first call 23.01 s wall / 16.26 s CPU (torch's exporter), "
    "cached 1.5-2.18 s wall, 10-15x."
)
COMMAND = [sys.executable, "-m", "landmark_edge", *ARGUMENTS]


def timed_call(arguments: list[str], env: dict[str, str]) -> dict:
    """Wall and CPU seconds of one child process (exit status checked)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(arguments, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load_1min": round(os.getloadavg()[0], 1)}


def import_times(arguments: list[str], env: dict[str, str], top: int = 12) -> list[dict]:
    """The ``top`` modules by cumulative import time of one ``landmark-edge ARGUMENTS`` call, as
    ``python -X importtime -m landmark_edge ARGUMENTS`` reports them."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "landmark_edge", *arguments], env=env,
                            capture_output=True, text=True, check=True)  # fmt: skip
    seconds: dict[str, float] = {}  # a module the command imports in two processes is listed twice: keep one
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        seconds[name] = max(seconds.get(name, 0.0), int(cumulative) / 1e6)
    return [{"module": name, "cumulative_s": round(value, 3)}
            for name, value in sorted(seconds.items(), key=lambda item: -item[1])[:top]]  # fmt: skip


def paired_calls(repeat: int, cache_root: Path) -> list[dict]:
    """``repeat`` pairs of a first call on an empty cache folder and a cached call right after it."""
    pairs = []
    for index in range(repeat):
        env = os.environ | {CACHE_ENV: str(cache_root / f"pair-{index}")}
        first, cached = timed_call(COMMAND, env), timed_call(COMMAND, env)
        pairs.append({"first": first, "cached": cached, "ratio_wall": round(first["wall_s"] / cached["wall_s"], 2),
                      "ratio_cpu": round(first["cpu_s"] / cached["cpu_s"], 2)})  # fmt: skip
    return pairs


def markdown(report: dict) -> str:
    lines = [
        "# Cold start: one-image `infer` from the shell",
        "",
        f"Timed command: `{report['command']}` (each call a new process).",
        "The machine is shared: the 1-minute load average is given per call; CPU time (user + sys) is the figure "
        "that depends least on the load. Each pair is a first call on an empty cache folder (the graph is made "
        "from the weights) and a cached call right after it.",
        "",
        BEFORE,
        "",
        "| pair | first wall s | first CPU s | cached wall s | cached CPU s | first / cached (wall) | (CPU) | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, pair in enumerate(report["pairs"], 1):
        first, cached = pair["first"], pair["cached"]
        lines.append(f"| {index} | {first['wall_s']} | {first['cpu_s']} | {cached['wall_s']} | {cached['cpu_s']} | "
                     f"{pair['ratio_wall']} | {pair['ratio_cpu']} | {first['load_1min']} |")  # fmt: skip
    lines += ["", "| `--backend torch` | wall s | CPU s | load |", "|---|---|---|---|"]
    torch_calls = enumerate(report["torch"], 1)
    lines += [f"| call {i} | {c['wall_s']} | {c['cpu_s']} | {c['load_1min']} |" for i, c in torch_calls]
    for title, rows in report["imports"].items():
        lines += ["", f"Biggest imports of a {title} (cumulative, `python -X importtime -m landmark_edge ...`):", "",
                  "| module | s |", "|---|---|"]  # fmt: skip
        lines += [f"| `{row['module']}` | {row['cumulative_s']} |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cold_start"))
    parser.add_argument("--repeat", type=int, default=3, help="Pairs of first and cached calls; torch calls.")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="landmark-edge-cache-"))
    try:
        pairs = paired_calls(args.repeat, root)
        env = os.environ | {CACHE_ENV: str(root / "pair-0")}
        torch_calls = [timed_call([*COMMAND, "--backend", "torch"], env) for _ in range(args.repeat)]
        imports = {
            "first call": import_times(ARGUMENTS, os.environ | {CACHE_ENV: str(root / "imports")}),
            "cached call": import_times(ARGUMENTS, os.environ | {CACHE_ENV: str(root / "imports")}),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report = {"command": "landmark-edge " + " ".join(ARGUMENTS), "pairs": pairs, "torch": torch_calls, "imports": imports}
    print(markdown(write_record(args.out, report, markdown)))


if __name__ == "__main__":
    main()
