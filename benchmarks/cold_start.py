"""Cold start of a one-image ``infer`` from the shell: wall and CPU time per call, and where the time goes.

    PYTHONPATH=. python benchmarks/cold_start.py --out benchmarks/results/cold_start

Runs ``landmark-edge infer landmark_edge/examples/chest_CHNCXR_0282_0.png --anatomy chest`` as a new process:
first with an empty cache folder (the default ONNX Runtime backend exports the graph and caches it), then
``--repeat`` times with that cache, then ``--repeat`` times with ``--backend torch``. Each call's wall time and
CPU time (user + sys of the child) are recorded with the load average: on a shared machine the wall time grows
with the load, the CPU time much less. ``python -X importtime`` of a cached call gives the biggest modules it
imports (all of them, those the command imports as it runs included: ONNX Runtime; torch would show here if
the cached path pulled it in). Writes ``OUT.json`` and ``OUT.md``.
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
COMMAND = ["landmark-edge", "infer", str(EXAMPLE), "--anatomy", "chest"]


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
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        rows.append({"module": name, "cumulative_s": int(cumulative) / 1e6})
    return [{"module": r["module"], "cumulative_s": round(r["cumulative_s"], 3)}
            for r in sorted(rows, key=lambda r: -r["cumulative_s"])[:top]]  # fmt: skip


def markdown(report: dict) -> str:
    lines = [
        "# Cold start: one-image `infer` from the shell",
        "",
        f"Timed command: `{report['command']}` (each call a new process).",
        "The machine is shared: the 1-minute load average is given per call; CPU time (user + sys) is the figure "
        "that depends least on the load.",
        "",
        "| call | wall s | CPU s | load |",
        "|---|---|---|---|",
    ]
    for name, calls in report["calls"].items():
        for call in calls:
            lines.append(f"| {name} | {call['wall_s']} | {call['cpu_s']} | {call['load_1min']} |")
    lines += ["", "Biggest imports of a cached call (cumulative, `python -X importtime -m landmark_edge ...`; under "
              "the same load):", "", "| module | s |", "|---|---|"]  # fmt: skip
    lines += [f"| `{row['module']}` | {row['cumulative_s']} |" for row in report["imports"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cold_start"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cache", type=Path, help="Use this cache folder (kept) instead of a new, empty one.")
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="landmark-edge-cache-"))
    env = os.environ | {CACHE_ENV: str(cache)}
    first = "onnxruntime, first call (" + ("graph in the cache)" if any(cache.rglob("*.onnx")) else "empty cache: exports)")
    try:
        calls = {
            first: [timed_call(COMMAND, env)],
            "onnxruntime, cached graph (default)": [timed_call(COMMAND, env) for _ in range(args.repeat)],
            "torch (--backend torch)": [timed_call([*COMMAND, "--backend", "torch"], env) for _ in range(args.repeat)],
        }
        imports = import_times(COMMAND[1:], env)  # a cached call: the default path as users run it
    finally:
        if args.cache is None:
            shutil.rmtree(cache, ignore_errors=True)
    report = {"command": " ".join(COMMAND), "calls": calls, "imports": imports}
    print(markdown(write_record(args.out, report, markdown)))


if __name__ == "__main__":
    main()
