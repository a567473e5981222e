"""Robustness benchmark: weights under controlled framing changes (`landmark-edge evaluate --shift zoom`).

Runs the evaluation for one weights file, keeps its JSON as ``benchmarks/results/robustness/<name>.json`` and
rewrites ``benchmarks/results/robustness.md`` from every JSON there, so a second weights file (the robust
recipe's) adds its columns beside the first (the shipped reference-recipe weights).

    python benchmarks/robustness.py --name reference-default                      # the shipped weights
    python benchmarks/robustness.py --name robust --weights runs/robust/best.safetensors
    python benchmarks/robustness.py --render                                      # only rewrite the markdown

Defaults: ONNX Runtime on the CPU (equal to eager torch within 1e-4, and faster:
``benchmarks/results/cpu-2core-chest``), head and chest, the first 50 test images of each split (head 151-200 of
ISBI Test1; chest: all 41), batch 1. The recorded run's command and machine are in each record
(``benchmarks/results/robustness/<name>.json``): a small ``--limit`` where memory is short.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from pathlib import Path

from landmark_edge.bench.records import machine, write_record
from landmark_edge.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
FOLDER = RESULTS / "robustness"


def run(args: argparse.Namespace) -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    out = FOLDER / f"{args.name}.json"
    command = ["landmark-edge", "evaluate", "--data", args.data, "--anatomies", args.anatomies, "--shift", "zoom",
               "--backend", args.backend, "--limit", str(args.limit), "--batch-size", str(args.batch_size),
               "--out", str(out)]  # fmt: skip
    if args.weights:
        command += ["--weights", args.weights]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    report = json.loads(out.read_text()) | {"evaluate": shlex.join(command),
                                            "wall_s": round(time.perf_counter() - started)}  # fmt: skip
    write_record(out.with_suffix(""), report, lambda made: render({args.name: made}))


def render(reports: dict[str, dict]) -> str:
    lines = [
        "# Robustness under framing changes (`landmark-edge evaluate --shift zoom`)",
        "",
        "Each condition moves every test image and its annotations by one affine map (about the image centre, or",
        "keeping the bottom edge for the crops that cut the top: the tighter field of view of another device), in",
        "the stored image's pixels, before the usual resize to the grid. Errors are the *original* protocol in the",
        "shifted image's geometry: head in mm with the shifted image's spacing (0.1 mm/px over the magnification,",
        "i.e. anatomical mm), hand with the 50 mm wrist width measured in the shifted image, chest in pixels of the",
        "unshifted 512 x 512 image (shifted pixels over the magnification). Zoom-outs and rotations fill the",
        "uncovered border with black. Landmarks moved out of the frame would be left out and counted (`out`).",
        "",
    ]
    for name, report in reports.items():
        lines += [f"- **{name}**: `{Path(report['weights']).name}`, backend {report['backend']}, {_provenance(report)}"]
    anatomies = sorted({a for r in reports.values() for a in r["anatomies"]}, key=["head", "hand", "chest"].index)
    for anatomy in anatomies:
        present = {n: r["anatomies"][anatomy] for n, r in reports.items() if anatomy in r["anatomies"]}
        first_name = next(iter(present))
        first, conditions = present[first_name], reports[first_name]["shift"]["conditions"]
        unit, images = first["none"]["unit"], first["none"]["images"]
        lines += ["", f"## {anatomy} ({images} test images, MRE {unit} / SDR at 2 {unit} for head/hand, 3 px for chest)",
                  "", "| condition | " + " | ".join(f"{n} MRE | {n} SDR | out" for n in present) + " |",
                  "|---|" + "---:|---:|---:|" * len(present)]  # fmt: skip
        threshold = "3.0" if unit == "px" else "2.0"
        for condition in first:
            cells = []
            for result in present.values():
                entry = result[condition]
                sdr = entry["SDR"].get(threshold)
                cells += [f"{entry['MRE']:.2f}", "-" if sdr is None else f"{100 * sdr:.1f} %",
                          str(entry["landmarks_out_of_frame"])]
            lines.append(f"| {condition}: {conditions[condition]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _provenance(report: dict) -> str:
    """When, where and how a column was made; a JSON written before ``bench/records.py`` keeps it all in its
    ``record`` as plain text."""
    made = report["record"]
    if "environment" not in made:
        return (f"{made['date']}, {made['machine']}, {made['wall_s']} s; command `{made['command']}` "
                f"(runs `{made['evaluate']}`)")  # fmt: skip
    return (f"{made['created']}, {machine(report)}, {report['wall_s']} s; command `{made['command']}` "
            f"(runs `{report['evaluate']}`)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="Name of this weights file's columns (and JSON file).")
    parser.add_argument("--weights", help="Weights file (default: the shipped default weights).")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    parser.add_argument("--anatomies", default="head,chest")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--limit", type=int, default=50, help="First N test images per anatomy (deterministic).")
    parser.add_argument("--batch-size", type=int, default=1, help="1 keeps ONNX Runtime's memory near 1 GiB "
                        "(batch 8 of the full-width head network took ~7 GiB and was killed on a shared machine).")
    parser.add_argument("--render", action="store_true", help="Only rewrite robustness.md from the JSON files.")
    args = parser.parse_args()
    if not args.render:
        if not args.name:
            parser.error("--name is needed to run")
        run(args)
    reports = {path.stem: json.loads(path.read_text()) for path in sorted(FOLDER.glob("*.json"))}
    atomic_write_text(RESULTS / "robustness.md", render(reports))  # every weights file's record side by side


if __name__ == "__main__":
    main()
