"""Calibrate ``infer``'s flags on the shipped weights: measure val and test images, fit on val, report test.

    PYTHONPATH=. python benchmarks/calibrate_flags.py --data ../shared/data --out benchmarks/results/flags [--write]

A thin runner: the rule is :mod:`landmark_edge.plausibility`'s and the fitting :mod:`landmark_edge.flag_thresholds`'
(how the thresholds are chosen and why on val images is said there). This script measures each image's evidence
through ``infer``'s own pipeline (``run_inference``, ONNX Runtime on the CPU, equal to eager torch within 1e-4:
``benchmarks/results/fp16_storage.md``) for each anatomy the shipped weights are fit for (head, chest), over

* in-distribution images: the anatomy's own val split (calibration, at most ``--max-own``) and its
  test split (report): the whole split where ``fp16_storage.py`` already made its predictions with the shipped
  file (``--test-predictions``, its ``.npz``), else ``--max-own-test`` images run here;
* wrong-anatomy images: the other anatomies' X-rays run as this one (chest as head, head as chest, hand as
  head and as chest), their val images (calibration, at most ``--max-wrong`` each) and test images
  (report, at most ``--max-wrong-test`` each).

Where a set is larger than its limit it is thinned evenly over the sorted ids. The evidence is kept in
``OUT.npz`` (a rerun measures only what is missing); the record is ``OUT.json`` / ``OUT.md``; ``--write`` stores
the thresholds in the package's ``layouts.json`` (:func:`landmark_edge.flag_thresholds.store_thresholds`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from landmark_edge.anatomy import get_anatomy
from landmark_edge.backends import BackendChoice, open_backend
from landmark_edge.bench.records import write_record
from landmark_edge.data import load_split
from landmark_edge.flag_thresholds import EvidenceSet, Thresholds, calibrate, store_thresholds
from landmark_edge.io.atomic import atomic_path
from landmark_edge.plausibility import evidence, result_evidence
from landmark_edge.results import ImageResult
from landmark_edge.runtime.pipeline import run_inference
from landmark_edge.weights import DEFAULT_WEIGHTS, file_sha256
from scripts.make_layouts import layouts_document

TARGETS = ("head", "chest")  # the anatomies the shipped weights are fit for
SOURCES = ("head", "chest", "hand")
ROLES = ("calibration", "test")


def case_images(data: Path, source: str, role: str, limit: int | None) -> list[Path]:
    """Image paths of ``source``: val for calibration (unseen in training), test for the report; evenly thinned."""
    paths = [s.image for s in load_split(data, source, "val" if role == "calibration" else "test").samples]
    if limit is not None and len(paths) > limit:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    return paths


def measure(backend, paths: list[Path], target: str) -> EvidenceSet:
    """The evidence of ``paths`` run as ``target`` through ``infer``'s pipeline."""
    anatomy = get_anatomy(target)
    found = []
    for outcome in run_inference(paths, anatomy, backend, batch_size=2):  # small: the machine is shared
        if not isinstance(outcome, ImageResult):
            raise SystemExit(f"{outcome.path}: {outcome.error}")
        found.append(result_evidence(outcome, anatomy))
    return EvidenceSet.of(found)


def own_test_cases(test_predictions: Path, data: Path) -> dict[str, np.ndarray]:
    """The in-distribution test cases from the shipped file's test-split predictions (``fp16_storage.py``),
    with each image's size from the split, so the geometry check is replayed too."""
    arrays = {}
    if not test_predictions.is_file():
        return arrays
    with np.load(test_predictions) as stored:
        for target in (t for t in TARGETS if f"{t}/xy" in stored):
            anatomy = get_anatomy(target)
            sizes = {s.id: s.original_size for s in load_split(data, target, "test").samples}
            found = [evidence(points, peaks, sizes[str(image_id)], anatomy) for image_id, points, peaks in
                     zip(stored[f"{target}/ids"], stored[f"{target}/xy"], stored[f"{target}/confidence"])]  # fmt: skip
            arrays |= EvidenceSet.of(found).arrays(f"{target}/{target}/test")
    return arrays


def cases() -> list[tuple[str, str, str]]:
    """(target, source, role) in the order they are measured: what the thresholds are fitted on first."""
    wrong = {role: [(t, s, role) for t in TARGETS for s in SOURCES if s != t] for role in ROLES}
    own = {role: [(t, t, role) for t in TARGETS] for role in ROLES}
    return own["calibration"] + wrong["calibration"] + own["test"] + wrong["test"]


def measure_all(data: Path, weights: Path, limits: dict[str, int], cache: Path) -> dict[str, np.ndarray]:
    """The evidence of every case, as flat arrays keyed ``target/source/role/field``.

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
            if EvidenceSet.from_arrays(arrays, f"{target}/{source}/{role}") is not None:
                continue
            if target not in backends:
                anatomy = get_anatomy(target)
                choice = BackendChoice("onnxruntime", options={"threads": 1})  # busy CPU: one thread
                backends[target] = open_backend(choice, weights, anatomy, max_batch_size=2)
            paths = case_images(data, source, role, limits[f"own {role}" if source == target else f"wrong {role}"])
            print(f"{source} as {target}, {role}: {len(paths)} images", flush=True)
            arrays |= measure(backends[target], paths, target).arrays(f"{target}/{source}/{role}")
            with atomic_path(cache) as tmp, open(tmp, "wb") as handle:
                np.savez_compressed(handle, **arrays)
    finally:
        for backend in backends.values():
            backend.close()
    return arrays


def measured(arrays: dict[str, np.ndarray], target: str) -> dict[tuple[str, str], EvidenceSet]:
    """Every measured case of ``target``, keyed (source, role)."""
    found = {(s, r): EvidenceSet.from_arrays(arrays, f"{target}/{s}/{r}") for s in SOURCES for r in ROLES}
    return {key: value for key, value in found.items() if value is not None}


def markdown(report: dict) -> str:
    lines = [
        "# Flag thresholds calibrated on the shipped weights",
        "",
        f"ONNX Runtime (CPU) through `infer`'s pipeline, weights sha256 {report['weights_sha256'][:12]}..., raw "
        f"data `{report['data']}`. Fitted on val images only (unseen in training; budget {report['budget']:.0%} "
        "of them per check); rates below on the test images. An image is flagged when its size is implausible "
        "for the anatomy, any landmark's peak is below its threshold, the layout residual is above the limit, or "
        "the layout is mirrored (`landmark_edge/plausibility.py`, replayed by `landmark_edge/flag_thresholds.py`).",
        "",
        "| run as | images | role | images | flagged now (any / geometry / confidence / layout) | flagged before "
        "(0.1, label limit) | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for target, entry in report["anatomies"].items():
        for key, now in entry["rates"].items():
            source, role = key.split("/")
            goal = ("≤ 5 %" if source == target else "≥ 95 %") if role == "test" else "(fit)"
            counts = " / ".join(_pct(now, k) for k in ("any", "geometry", "confidence", "layout"))
            lines.append(f"| {target} | {source} | {role} | {now['images']} | {counts} | "
                         f"{_pct(entry['before'][key], 'any')} | {goal} |")  # fmt: skip
    lines += ["", "Thresholds (stored in `landmark_edge/layouts.json` with `--write`):", ""]
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
        arrays |= own_test_cases(args.test_predictions, args.data)
    label_rules = {name: entry["threshold"] for name, entry in layouts_document(args.data)["anatomies"].items()}
    calibration = {
        target: calibrate(measured(arrays, target), get_anatomy(target), args.budget, label_rules[target])
        for target in TARGETS if (target, "calibration") in measured(arrays, target)
    }  # fmt: skip
    if not calibration:
        raise SystemExit(f"{cache}: no anatomy's val images measured with their image sizes (a cache from before "
                         "the geometry check was fitted is measured again: run without --fit-only)")
    report = {"data": str(args.data), "weights_sha256": file_sha256(args.weights), "budget": args.budget,
              "anatomies": calibration}  # fmt: skip
    record = write_record(args.out, report, markdown)
    if args.write:
        fitted = {t: Thresholds(tuple(e["min_confidence"]), e["max_residual"]) for t, e in calibration.items()}
        store_thresholds(fitted, f"benchmarks/calibrate_flags.py, budget {args.budget}, {record['record']['created']}")
    print(markdown(record))


if __name__ == "__main__":
    main()
