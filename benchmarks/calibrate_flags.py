"""Calibrate ``infer``'s low-confidence flags on the shipped weights: fit on val, report rates on test.

    PYTHONPATH=. python benchmarks/calibrate_flags.py --data ../shared/data --out benchmarks/results/flags [--write]

A flag is raised when a landmark's heatmap peak is below its minimum confidence, when the detected layout's
affine residual against the anatomy's typical layout is above the limit, or when the layout is mirrored
(:mod:`landmark_edge.plausibility`). For each anatomy the shipped weights are fit for (head, chest) the script
runs ``infer``'s own pipeline (``run_inference``, ONNX Runtime on the CPU: 5-6x faster than eager torch here and
equal to it within 1e-4) over

* in-distribution images: the anatomy's own val split (calibration, at most ``--max-own``) and its
  test split (report): the whole split where ``fp16_storage.py`` already made its predictions with the shipped
  file (``--test-predictions``, its ``.npz``), else ``--max-own-test`` images run here;
* wrong-anatomy images: the other anatomies' X-rays run as this one (chest as head, head as chest, hand as
  head and as chest), their val images (calibration, at most ``--max-wrong`` each) and test images
  (report, at most ``--max-wrong-test`` each).

Where a set is larger than its limit it is thinned evenly over the sorted ids (the CPU is shared: 380 images
run here with the defaults).

Calibration uses the val split only: the network peaks far higher on the images it was trained on (head train
images: median peak 0.87, none below 0.1; head test images: 16 of 40 had a landmark below 0.1), so minimums fitted
on training images would flag too many new ones. Thresholds are set on the calibration images only: per landmark, its median peak times one factor chosen so
that ``--budget`` of the calibration images get a confidence flag (:func:`confidence_thresholds`); the layout
limit is the ``1 - budget`` quantile of the calibration residuals, but never below the label rule of
``scripts/make_layouts.py`` (training images fit their own labels better than new images will). The report gives the flag rates those thresholds
give on the test images. The measured peaks and residuals are kept in ``OUT.npz`` (a rerun reuses them);
``--write`` stores the thresholds in ``landmark_edge/layouts.json``, where ``infer`` reads them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
from pathlib import Path

import numpy as np

from landmark_edge.anatomy import get_anatomy
from landmark_edge.backends import BackendChoice, open_backend
from landmark_edge.data import load_split
from landmark_edge.io.atomic import atomic_path, atomic_write_text
from landmark_edge.plausibility import LAYOUTS_FILE, affine_residual, typical_layouts
from landmark_edge.results import ImageResult
from landmark_edge.runtime.pipeline import run_inference
from landmark_edge.weights import DEFAULT_WEIGHTS, file_sha256
from scripts.make_layouts import layouts_document

TARGETS = ("head", "chest")  # the anatomies the shipped weights are fit for
SOURCES = ("head", "chest", "hand")


def case_images(data: Path, source: str, role: str, limit: int | None) -> list[Path]:
    """Image paths of ``source``: val for calibration (unseen in training), test for the report; evenly thinned."""
    splits = ("val",) if role == "calibration" else ("test",)
    paths = [s.image for split in splits for s in load_split(data, source, split).samples]
    if limit is not None and len(paths) > limit:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    return paths


def measure(backend, paths: list[Path], target: str) -> dict[str, np.ndarray]:
    """Peak confidences (N, C), layout residuals and determinants (N,) as ``infer`` computes them."""
    anatomy = get_anatomy(target)
    layout = typical_layouts()[target]
    confidence, residual, determinant = [], [], []
    for outcome in run_inference(paths, anatomy, backend, batch_size=2):  # small: the machine is shared
        if not isinstance(outcome, ImageResult):
            raise SystemExit(f"{outcome.path}: {outcome.error}")
        points = np.array([(lm.x, lm.y) for lm in outcome.landmarks])
        ratio, det = affine_residual(points, layout.mean)
        confidence.append([lm.confidence for lm in outcome.landmarks])
        residual.append(ratio)
        determinant.append(det)
    return {"confidence": np.array(confidence), "residual": np.array(residual), "determinant": np.array(determinant)}


def from_predictions(xy: np.ndarray, confidence: np.ndarray, target: str) -> dict[str, np.ndarray]:
    """The measured fields of a case from predictions already made (original pixels, heatmap peaks)."""
    fits = [affine_residual(points.astype(np.float64), typical_layouts()[target].mean) for points in xy]
    return {"confidence": confidence, "residual": np.array([f[0] for f in fits]),
            "determinant": np.array([f[1] for f in fits])}  # fmt: skip


def own_test_cases(test_predictions: Path) -> dict[str, np.ndarray]:
    """The in-distribution test cases, from the shipped file's test-split predictions of ``fp16_storage.py``."""
    arrays = {}
    if not test_predictions.is_file():
        return arrays
    with np.load(test_predictions) as stored:
        for target in (t for t in TARGETS if f"{t}/xy" in stored):
            case_arrays = from_predictions(stored[f"{target}/xy"], stored[f"{target}/confidence"], target)
            arrays |= {f"{target}/{target}/test/{k}": v for k, v in case_arrays.items()}
    return arrays


def cases() -> list[tuple[str, str, str]]:
    """(target, source, role) in the order they are measured: what the thresholds are fitted on first."""
    wrong = {role: [(t, s, role) for t in TARGETS for s in SOURCES if s != t] for role in ("calibration", "test")}
    own = {role: [(t, t, role) for t in TARGETS] for role in ("calibration", "test")}
    return own["calibration"] + wrong["calibration"] + own["test"] + wrong["test"]


def measure_all(data: Path, weights: Path, limits: dict[str, int], cache: Path) -> dict[str, np.ndarray]:
    """The cases this script runs, as flat arrays keyed ``target/source/role/field``.

    ``cache`` is rewritten after every case and a rerun measures only the cases missing from it, so an
    interrupted run resumes.
    """
    arrays = {}
    if cache.is_file():
        with np.load(cache) as stored:
            arrays = dict(stored)
    backends = {}
    try:
        for target, source, role in cases():
            if f"{target}/{source}/{role}/residual" in arrays:
                continue
            if target not in backends:
                anatomy = get_anatomy(target)
                choice = BackendChoice("onnxruntime", options={"threads": 1})  # busy CPU: one thread
                backends[target] = open_backend(choice, weights, anatomy, max_batch_size=2)
            paths = case_images(data, source, role, limits[f"own {role}" if source == target else f"wrong {role}"])
            print(f"{source} as {target}, {role}: {len(paths)} images", flush=True)
            for key, value in measure(backends[target], paths, target).items():
                arrays[f"{target}/{source}/{role}/{key}"] = value
            with atomic_path(cache) as tmp, open(tmp, "wb") as handle:
                np.savez_compressed(handle, **arrays)
    finally:
        for backend in backends.values():
            backend.close()
    return arrays


def confidence_thresholds(confidence: np.ndarray, budget: float) -> np.ndarray:
    """Per-landmark minimum peaks ``t * median_c`` with one ``t``, so that ``budget`` of the images get a flag.

    Landmarks differ in how sharp their peaks are (gonion is the weakest head landmark), so each is scaled by its
    median peak; an image is flagged when its weakest scaled peak is below ``t``, one score per image. (A
    separate quantile per landmark would, on a few dozen images, sit at each landmark's minimum and flag a new
    image about C / (n + 1) of the time.)
    """
    scale = np.median(confidence, axis=0)
    score = (confidence / scale).min(axis=1)
    return np.quantile(score, budget, method="lower") * scale

def flagged(case: dict[str, np.ndarray], min_confidence: np.ndarray, max_residual: float) -> dict[str, np.ndarray]:
    weak = (case["confidence"] < min_confidence).any(axis=1)
    layout = (case["residual"] > max_residual) | (case["determinant"] < 0)
    return {"confidence": weak, "layout": layout, "any": weak | layout}


def case(arrays: dict, target: str, source: str, role: str) -> dict[str, np.ndarray] | None:
    """One case's arrays, None where it was not measured (an interrupted run)."""
    keys = {k: f"{target}/{source}/{role}/{k}" for k in ("confidence", "residual", "determinant")}
    return {k: arrays[key] for k, key in keys.items()} if all(key in arrays for key in keys.values()) else None


def measured(arrays: dict, target: str) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """(source, role, arrays) of every measured case of ``target``."""
    found = [(s, r, case(arrays, target, s, r)) for s in SOURCES for r in ("calibration", "test")]
    return [(s, r, c) for s, r, c in found if c is not None]


def rates(arrays: dict, target: str, min_confidence: np.ndarray, max_residual: float) -> dict:
    """Flag rates per source and role (own anatomy: in-distribution; the others: wrong anatomy)."""
    out = {}
    for source, role, measured_case in measured(arrays, target):
        flags = flagged(measured_case, min_confidence, max_residual)
        out[f"{source}/{role}"] = {"images": int(len(flags["any"])), **{k: int(v.sum()) for k, v in flags.items()}}
    return out


def calibrate(arrays: dict, target: str, budget: float, label_rule: float) -> dict:
    own = case(arrays, target, target, "calibration")
    # stored with 4 decimals, rounded towards fewer flags so the stored values flag what was fitted
    min_confidence = np.floor(confidence_thresholds(own["confidence"], budget) * 1e4) / 1e4
    # never tighter than the label rule: training images fit their labels better than new images will
    max_residual = float(np.ceil(max(np.quantile(own["residual"], 1 - budget), label_rule) * 1e4) / 1e4)
    return {
        "min_confidence": min_confidence.tolist(),
        "max_residual": max_residual,
        "rates": rates(arrays, target, min_confidence, max_residual),
        "before": rates(arrays, target, np.full(own["confidence"].shape[1], 0.1), label_rule),
        "distribution": distribution(arrays, target),
    }


def distribution(arrays: dict, target: str) -> dict:
    """Quantiles of the lowest peak per image and of the layout residual, per source and role."""
    out = {}
    for source, role, c in measured(arrays, target):
        out[f"{source}/{role}"] = {
            "min_peak_q05_q50_q95": np.quantile(c["confidence"].min(axis=1), [0.05, 0.5, 0.95]).round(3).tolist(),
            "residual_q05_q50_q95": np.quantile(c["residual"], [0.05, 0.5, 0.95]).round(3).tolist(),
            "mirrored": int((c["determinant"] < 0).sum()),
        }
    return out


def write_layouts(calibration: dict, note: str) -> None:
    document = json.loads(LAYOUTS_FILE.read_text())
    for target, entry in calibration.items():
        document["anatomies"][target]["threshold"] = entry["max_residual"]
        document["anatomies"][target]["min_confidence"] = entry["min_confidence"]
        document["anatomies"][target]["calibrated"] = note
    atomic_write_text(LAYOUTS_FILE, json.dumps(document, indent=1) + "\n")


def markdown(report: dict) -> str:
    lines = [
        "# Flag thresholds calibrated on the shipped weights",
        "",
        f"{report['date']}, {report['machine']}, ONNX Runtime (CPU) through `infer`'s pipeline, weights sha256 "
        f"{report['weights_sha256'][:12]}..., raw data `{report['data']}`. Command:",
        "",
        "```bash",
        report["command"],
        "```",
        "",
        f"Fitted on val images only (unseen in training; budget {report['budget']:.0%} of them per check); rates "
        "below on the test images. An image is flagged when any landmark's peak is below its threshold, the layout residual is "
        "above the limit, or the layout is mirrored.",
        "",
        "| run as | images | role | images | flagged now (any / confidence / layout) | flagged before (0.1, "
        "label limit) | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for target, entry in report["anatomies"].items():
        for key, now in entry["rates"].items():
            source, role = key.split("/")
            before = entry["before"][key]
            goal = ("≤ 5 %" if source == target else "≥ 95 %") if role == "test" else "(fit)"
            lines.append(
                f"| {target} | {source} | {role} | {now['images']} | {_pct(now, 'any')} / {_pct(now, 'confidence')} "
                f"/ {_pct(now, 'layout')} | {_pct(before, 'any')} | {goal} |"
            )
    lines += ["", "Thresholds (stored in `landmark_edge/layouts.json`):", ""]
    for target, entry in report["anatomies"].items():
        lines.append(f"* **{target}**: layout residual ≤ {entry['max_residual']}; per-landmark minimum peak "
                     f"{', '.join(f'{v:.3f}' for v in entry['min_confidence'])}")  # fmt: skip
    lines += ["", "Distributions (lowest peak per image; layout residual), quantiles 5 / 50 / 95 %:", ""]
    for target, entry in report["anatomies"].items():
        for key, d in entry["distribution"].items():
            lines.append(f"* {key.split('/')[0]} as {target} ({key.split('/')[1]}): min peak "
                         f"{d['min_peak_q05_q50_q95']}, residual {d['residual_q05_q50_q95']}, mirrored {d['mirrored']}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _pct(entry: dict, key: str) -> str:
    return f"{entry[key]} ({100 * entry[key] / max(entry['images'], 1):.0f} %)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/flags"))
    parser.add_argument("--budget", type=float, default=0.02, help="Share of calibration images each check may flag.")
    parser.add_argument("--test-predictions", type=Path,
                        help="Test predictions of the shipped file made elsewhere (fp16_storage.py's .npz): the whole "
                        "test split is then not run here.")
    parser.add_argument("--max-own", type=int, default=100, help="In-distribution calibration images.")
    parser.add_argument("--max-own-test", type=int, default=30,
                        help="In-distribution test images run here (the whole split replaces them where "
                        "--test-predictions has it).")
    parser.add_argument("--max-wrong", type=int, default=20, help="Wrong-anatomy calibration images per source.")
    parser.add_argument("--max-wrong-test", type=int, default=25, help="Wrong-anatomy test images per source.")
    parser.add_argument("--write", action="store_true", help="Store the thresholds in landmark_edge/layouts.json.")
    parser.add_argument("--fit-only", action="store_true", help="Fit on the cases measured so far; run nothing.")
    args = parser.parse_args()

    limits = {"own calibration": args.max_own, "own test": args.max_own_test, "wrong calibration": args.max_wrong,
              "wrong test": args.max_wrong_test}  # fmt: skip
    cache = args.out.with_suffix(".npz")
    if args.fit_only:
        with np.load(cache) as stored:
            arrays = dict(stored)
    else:
        arrays = measure_all(args.data, args.weights, limits, cache)
    if args.test_predictions is not None:
        arrays |= own_test_cases(args.test_predictions)
    label_rules = {name: entry["threshold"] for name, entry in layouts_document(args.data)["anatomies"].items()}
    calibration = {target: calibrate(arrays, target, args.budget, label_rules[target]) for target in TARGETS
                   if case(arrays, target, target, "calibration") is not None}  # fmt: skip
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, 2 CPU cores",
        "command": "PYTHONPATH=. python benchmarks/calibrate_flags.py " + shlex.join(sys.argv[1:]),
        "data": str(args.data),
        "weights_sha256": file_sha256(args.weights),
        "budget": args.budget,
        "anatomies": calibration,
    }
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown(report))
    if args.write:
        write_layouts(calibration, f"benchmarks/calibrate_flags.py, budget {args.budget}, {report['date']}")
    print(markdown(report))


if __name__ == "__main__":
    main()
