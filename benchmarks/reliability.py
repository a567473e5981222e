"""Long runs: flat memory over thousands of inputs, killed or interrupted runs resumed to byte-identical outputs,
and a damaged cache rebuilt.

    PYTHONPATH=. python benchmarks/reliability.py [--images 2000] [--work DIR] [--out FILE.md]   (and FILE.json)

1. ``landmark-edge infer FOLDER --backend onnxruntime --out-dir D -f jsonl -o D.jsonl`` over 200 and over
   ``--images`` small synthetic images; peak RSS of each run (``wait4``'s ``ru_maxrss`` of that process alone).
   The pipeline streams (a bounded read-ahead window, JSONL written line by line), so the peak must not grow
   with the number of inputs.
2. The same run over all images, killed with SIGKILL once half of the per-image results exist, then resumed
   with ``--skip-existing``: its JSONL and every per-image JSON must be byte-identical to the uninterrupted run's.
3. The same run stopped with SIGTERM (a job scheduler's stop) once half the results exist: it must stop within
   one batch, say in one line how many results are on disk and the command that resumes, keep every complete
   JSONL line; that command's outputs must be byte-identical to the uninterrupted run's.
4. A damaged cache: ``infer`` from the *weights* (so the graph comes from the cache), then the cached graph
   truncated, and then ~100 of its bytes flipped at the same size: each later run must exit 0 with one warning
   naming the file and give the clean run's outputs byte for byte.

The network is a *tiny random-architecture* GU2Net (the widths of ``tests/conftest.py`` ``TINY``), exported once
to ONNX and run by ONNX Runtime (faster than eager torch on a CPU: ``benchmarks/results/cpu-2core-chest``):
this measures memory and resume, not accuracy, and the network always runs at the anatomy's full grid (512 x 512 for chest), so every stage of a real
run is exercised at a fraction of the CPU cost.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from landmark_edge.bench.records import write_record
from landmark_edge.model import gu2net
from landmark_edge.weights import save_weights

TINY_WIDTHS = {"local_widths": (4, 4, 8, 8, 8), "global_width": 8}  # tests/conftest.py TINY
IMAGE_SIDE = 192
ANATOMY = "chest"


def make_images(folder: Path, count: int) -> Path:
    """``count`` distinct 8-bit PNGs (a gradient plus seeded noise, so no two are alike)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, columns = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE]
    base = (rows + columns) * 255.0 / (2 * IMAGE_SIDE)
    for index in range(count):
        noise = np.random.default_rng(index).normal(0, 20, base.shape)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index:05d}.png")
    return folder


def make_tiny_weights(path: Path) -> Path:
    torch.manual_seed(0)
    save_weights(gu2net([ANATOMY], **TINY_WIDTHS), path, source="random init: reliability benchmark (not accuracy)")
    return path


def export_onnx(weights: Path, path: Path) -> Path:
    """The tiny network as an ONNX graph, exported once: every run then loads it instead of exporting again."""
    command = [sys.executable, "-m", "landmark_edge", "export", "-a", ANATOMY, "-w", str(weights), "-o", str(path)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return path


def infer_command(images: Path, model: Path, out_dir: Path, jsonl: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "landmark_edge", "infer", str(images), "-a", ANATOMY, "--backend", "onnxruntime",
            "--artifact", str(model), "--out-dir", str(out_dir), "-f", "jsonl", "-o", str(jsonl), *extra]  # fmt: skip


def run_measured(command: list[str], log: Path, kill_when=None) -> tuple[int, int, float]:
    """Run ``command``; (exit status, peak RSS in MiB, seconds). ``kill_when()`` true: SIGKILL the process."""
    start = time.perf_counter()
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        while kill_when is not None and process.poll() is None:
            if kill_when():
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss // 1024, time.perf_counter() - start


def interrupted_case(command: list[str], out_dir: Path, jsonl: Path, total: int, log: Path) -> dict:
    """SIGTERM once half the results exist; then the resume command the run printed, run as printed."""
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        while process.poll() is None and count_results(out_dir) < total // 2:
            time.sleep(0.05)
        at_signal = count_results(out_dir)
        process.send_signal(signal.SIGTERM)
        status = process.wait()
    at_exit = count_results(out_dir)
    line = next((x for x in log.read_text().splitlines() if x.startswith("interrupted")), "")
    lines = jsonl.read_text().splitlines() if jsonl.exists() else []
    whole_lines = sum(1 for x in lines if x.endswith("}"))
    resume = shlex.split(line.split("resume with: ", 1)[1]) if "resume with: " in line else []
    resumed_status = subprocess.run([sys.executable, "-m", "landmark_edge", *resume[1:]], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL).returncode if resume else None  # fmt: skip
    return {"status": status, "at_signal": at_signal, "at_exit": at_exit, "line": line,
            "jsonl_lines": len(lines), "whole_lines": whole_lines, "resumed_status": resumed_status}  # fmt: skip


def damaged_cache_case(images: Path, weights: Path, work: Path) -> list[dict]:
    """``infer`` from the weights on a fresh cache, then after each damage to the cached graph."""
    env = {**os.environ, "LANDMARK_EDGE_CACHE": str(work / "cache")}
    command = [sys.executable, "-m", "landmark_edge", "infer", str(images), "-a", ANATOMY, "-w", str(weights),
               "-f", "jsonl"]  # fmt: skip
    clean = subprocess.run(command, env=env, capture_output=True, text=True)
    (graph,) = (work / "cache" / "onnx").glob("*.onnx")
    cases = []
    for name, damage in (("truncated to half", _truncate), ("100 bytes flipped, same size", _flip)):
        damage(graph)
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        warnings = [x for x in run.stderr.splitlines() if x.startswith("warning: cache entry")]
        cases.append({"damage": name, "status": run.returncode, "warnings": warnings,
                      "identical": run.stdout == clean.stdout and clean.returncode == 0})  # fmt: skip
    return cases


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(100):
        data[len(data) // 2 + 97 * i] ^= 0x55
    path.write_bytes(bytes(data))


def count_results(out_dir: Path) -> int:
    return sum(1 for entry in os.scandir(out_dir) if entry.name.endswith(".json")) if out_dir.is_dir() else 0


def same_outputs(first: Path, second: Path) -> tuple[bool, int]:
    """Whether two --out-dir folders hold the same per-image files, byte for byte; and how many there are."""
    names = sorted(p.name for p in first.glob("*.json"))
    if names != sorted(p.name for p in second.glob("*.json")):
        return False, len(names)
    return all((first / n).read_bytes() == (second / n).read_bytes() for n in names), len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a new temp folder).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reliability.md"))
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="reliability-"))
    small, large = min(200, args.images), args.images
    model = export_onnx(make_tiny_weights(work / "tiny_chest.safetensors"), work / "tiny_chest.onnx")
    folders = {n: make_images(work / f"images{n}", n) for n in sorted({small, large})}

    rss = {}
    for n, folder in folders.items():
        status, rss[n], seconds = run_measured(
            infer_command(folder, model, work / f"out{n}", work / f"out{n}.jsonl"), work / f"out{n}.log"
        )
        print(f"{n} inputs: exit {status}, peak RSS {rss[n]} MiB, {seconds:.0f} s", flush=True)
        assert status == 0, (work / f"out{n}.log").read_text()[-2000:]

    killed_dir, killed_jsonl = work / "killed", work / "killed.jsonl"
    command = infer_command(folders[large], model, killed_dir, killed_jsonl)
    half_done = lambda: count_results(killed_dir) >= large // 2  # noqa: E731
    status, _, _ = run_measured(command, work / "killed.log", kill_when=half_done)
    done_at_kill = count_results(killed_dir)
    jsonl_after_kill = killed_jsonl.exists()
    status_resumed, rss_resumed, seconds = run_measured([*command, "--skip-existing"], work / "resumed.log")
    identical_files, files = same_outputs(work / f"out{large}", killed_dir)
    identical_jsonl = killed_jsonl.read_bytes() == (work / f"out{large}.jsonl").read_bytes()
    print(f"killed (status {status}) with {done_at_kill} of {large} results; resumed: exit {status_resumed}, "
          f"{seconds:.0f} s; per-image JSON identical {identical_files} ({files}), JSONL identical {identical_jsonl}")
    stopped_dir, stopped_jsonl = work / "stopped", work / "stopped.jsonl"
    stopped = interrupted_case(infer_command(folders[large], model, stopped_dir, stopped_jsonl), stopped_dir,
                               stopped_jsonl, large, work / "stopped.log")  # fmt: skip
    stopped["identical"] = (same_outputs(work / f"out{large}", stopped_dir)[0]
                            and stopped_jsonl.read_bytes() == (work / f"out{large}.jsonl").read_bytes())  # fmt: skip
    print(f"SIGTERM: {stopped}", flush=True)
    damaged = damaged_cache_case(folders[small], work / "tiny_chest.safetensors", work)
    print(f"damaged cache: {damaged}", flush=True)
    results = {"small": small, "large": large, "image_side": IMAGE_SIDE, "peak_rss_mib": rss,
               "resumed_peak_rss_mib": rss_resumed, "killed_status": status, "done_at_kill": done_at_kill,
               "jsonl_after_kill": jsonl_after_kill, "resumed_status": status_resumed,
               "identical_files": identical_files, "files": files, "identical_jsonl": identical_jsonl,
               "stopped": stopped, "damaged_cache": damaged}  # fmt: skip
    write_record(args.out.with_suffix(""), results, report, markdown_path=args.out)
    print(f"wrote {args.out} and its .json")


def report(record: dict) -> str:
    small, large, rss = record["small"], record["large"], {int(k): v for k, v in record["peak_rss_mib"].items()}
    rss_resumed, killed_status = record["resumed_peak_rss_mib"], record["killed_status"]
    done_at_kill, jsonl_after_kill = record["done_at_kill"], record["jsonl_after_kill"]
    resumed_status, files = record["resumed_status"], record["files"]
    identical_files, identical_jsonl = record["identical_files"], record["identical_jsonl"]
    return f"""# Reliability: memory over long runs, resume after SIGKILL or SIGTERM, a damaged cache rebuilt

Backend `onnxruntime` (CPU). Each run is `landmark-edge infer FOLDER -a chest --backend onnxruntime --artifact
tiny_chest.onnx --out-dir DIR -f jsonl -o DIR.jsonl` (the graph exported once with `landmark-edge export`) over {IMAGE_SIDE} x {IMAGE_SIDE}
synthetic PNGs. The weights are a tiny random-architecture GU2Net (the test suite's `TINY` widths): the benchmark
is about memory and resume, not accuracy, and the network still runs on the full 512 x 512 chest grid, so reading,
resizing, batching, decoding, flagging and writing are those of a real run.

## Peak RSS does not grow with the number of inputs

| inputs | peak RSS (MiB) |
|---|---|
| {small} | {rss[small]} |
| {large} | {rss[large]} |
| {large}, resumed after the kill below | {rss_resumed} |

Ratio {large} / {small} inputs: {rss[large] / rss[small]:.2f} (`ru_maxrss` of the `infer` process alone, from `wait4`).

## Killed half-way and resumed

* SIGKILL once {large // 2} per-image results existed: exit status {killed_status}, {done_at_kill} results on disk,
  the `-o` JSONL {"present (not expected)" if jsonl_after_kill else "absent (renamed into place only at the end)"}.
* `--skip-existing` run: exit status {resumed_status}.
* Per-image JSON files byte-identical to an uninterrupted run's: **{identical_files}** ({files} files).
* JSONL byte-identical to the uninterrupted run's: **{identical_jsonl}**.
""" + interrupted_report(record["stopped"], large) + damaged_report(record["damaged_cache"], small)


def interrupted_report(stopped: dict, large: int) -> str:
    return f"""
## Stopped with SIGTERM and resumed with the command it printed

* SIGTERM with {stopped["at_signal"]} of {large} results on disk; exit status {stopped["status"]} with
  {stopped["at_exit"]} (the batch in progress finished: `-b` 8 is the default), and one line:
  `{stopped["line"]}`
* The `-o` JSONL kept {stopped["whole_lines"]} whole lines of {stopped["jsonl_lines"]}.
* The printed command: exit status {stopped["resumed_status"]}; per-image JSON and JSONL byte-identical to the
  uninterrupted run's: **{stopped["identical"]}**.
"""


def damaged_report(cases: list[dict], small: int) -> str:
    rows = "".join(f"| {c['damage']} | {c['status']} | {len(c['warnings'])} | {c['identical']} |\n" for c in cases)
    return f"""
## A damaged cached graph is rebuilt

`infer` over {small} images from the weights (the graph exported once into the cache), then the cached graph
damaged and `infer` run again:

| damage | exit status | warning lines naming the file | output identical to the clean run's |
|---|---|---|---|
{rows}"""


if __name__ == "__main__":
    main()
