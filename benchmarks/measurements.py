"""Cephalometric measurements from the model's landmarks against the annotations, on the ISBI 2015 test split.

For each of the eight ISBI 2015 measurements (``landmark_edge.analysis``) over the 250 test images (ids 151-400):
the mean absolute error of the value (deg, mm or ratio) and the class agreement (%) of the model's landmarks
against the ground truth (mean of the senior and junior annotations, the reference's), and the same between the
two annotators (senior vs junior): the floor a model is judged against.

The model run is the expensive part and is done once, outside this script; its JSONL (plain or .gz) is the input:

    landmark-edge infer ../shared/data/ISBI2015_ceph/raw/{151..400}.jpg -a head --backend onnxruntime \\
        -f jsonl -o preds.jsonl
    python benchmarks/measurements.py --predictions preds.jsonl --out benchmarks/results
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from landmark_edge.analysis import MEASUREMENTS, measure, measure_points
from landmark_edge.anatomy import HEAD
from landmark_edge.bench.records import write_record
from landmark_edge.results import ImageResult

TEST_IDS = [f"{i:03d}" for i in range(151, 401)]


def read_predictions(path: Path) -> dict[str, ImageResult]:
    """The infer JSONL by image id (file stem); failures (``ok: false``) are left out and counted by the caller."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return {Path(row["path"]).stem: ImageResult.from_dict(row) for row in rows if row.get("ok", True)}


def annotation(root: Path, who: str, sample: str) -> np.ndarray:
    return np.loadtxt(root / f"400_{who}" / f"{sample}.txt", delimiter=",", dtype=np.float64)


def by_name(measurements) -> dict[str, tuple[float | None, int | None]]:
    return {m.name: (m.value, m.class_) for m in measurements}


def compare(pairs: list[tuple[dict, dict]]) -> dict[str, dict]:
    """MAE and class agreement per measurement over the pairs where both sides have a value."""
    report = {}
    for definition in MEASUREMENTS:
        both = [(a[definition.name], b[definition.name]) for a, b in pairs]
        both = [(x, y) for x, y in both if x[0] is not None and y[0] is not None]
        errors = np.array([abs(x[0] - y[0]) for x, y in both])
        agree = np.array([x[1] == y[1] for x, y in both])
        report[definition.name] = {
            "unit": definition.unit, "n": len(both), "mae": float(errors.mean()), "std": float(errors.std()),
            "class_agreement_pct": float(100 * agree.mean()),
        }  # fmt: skip
    return report


def run(predictions: Path, data: Path) -> dict:
    results = read_predictions(predictions)
    missing = [i for i in TEST_IDS if i not in results]
    spacing = HEAD.default_spacing_mm
    model_pairs, annotator_pairs, senior_pairs, radial = [], [], [], []
    for sample in TEST_IDS:
        senior, junior = annotation(data, "senior", sample), annotation(data, "junior", sample)
        truth = by_name(measure_points(dict(zip(HEAD.landmark_names, (senior + junior) / 2)), spacing))
        by_senior = by_name(measure_points(dict(zip(HEAD.landmark_names, senior)), spacing))
        annotator_pairs.append((by_senior, by_name(measure_points(dict(zip(HEAD.landmark_names, junior)), spacing))))
        senior_pairs.append((by_senior, truth))
        if sample in results:
            result = results[sample]
            model_pairs.append((by_name(measure(result)), truth))
            detected = np.array([[lm.x, lm.y] for lm in result.landmarks])
            radial.append(np.hypot(*((detected - (senior + junior) / 2) * spacing).T))
    radial = np.concatenate(radial)
    return {
        "images": len(TEST_IDS), "predicted": len(TEST_IDS) - len(missing), "missing": missing,
        "landmark_mre_mm": float(radial.mean()), "landmark_sdr_2mm_pct": float(100 * (radial <= 2).mean()),
        "model_vs_annotation_mean": compare(model_pairs), "senior_vs_junior": compare(annotator_pairs),
        "senior_vs_annotation_mean": compare(senior_pairs),
    }  # fmt: skip


def markdown(report: dict) -> str:
    header = report["header"]
    lines = [
        "# Cephalometric measurements on the ISBI 2015 test split", "",
        f"The model run it reads (once, cached; made on {header['machine']}): "
        "`landmark-edge infer ../shared/data/ISBI2015_ceph/raw/{151..400}.jpg -a head --backend onnxruntime -f jsonl -o preds.jsonl --out-dir preds/ --skip-existing`.", "",
        f"Predictions: {header['predictions']} ({report['predicted']} of {report['images']} images; "
        f"{header['model']}). Landmark MRE of these predictions against the annotation mean: "
        f"{report['landmark_mre_mm']:.2f} mm, SDR 2 mm {report['landmark_sdr_2mm_pct']:.1f}%. ONNX Runtime (CPU) "
        "runs the in-memory export of the weights, which the export validates against eager PyTorch (every "
        "heatmap within 1e-4), so these are the eager model's landmarks.", "",
        "Ground truth: the measurements of the mean of the senior and junior annotations (the reference's). "
        "The annotator floor compares the senior's measurements with the junior's. MAE in the measurement's "
        "unit (deg, mm, FHI a ratio); class agreement: the same ISBI class (`landmark_edge/analysis`).", "",
        "The mean lies halfway between the two annotators, so one annotator against it (last columns) differs "
        "by about half the senior-junior gap: the model is compared with the mean, the annotators with each "
        "other and with the mean.", "",
        "| measurement | unit | model vs mean: MAE | class agreement | senior vs junior: MAE | class agreement "
        "| senior vs mean: MAE | class agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, model in report["model_vs_annotation_mean"].items():
        digits = 3 if model["unit"] == "ratio" else 2
        cells = [
            f"{row['mae']:.{digits}f} | {row['class_agreement_pct']:.1f}%"
            for row in (model, report["senior_vs_junior"][name], report["senior_vs_annotation_mean"][name])
        ]
        lines.append(f"| {name} | {model['unit']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=Path, required=True, help="infer JSONL (or .jsonl.gz) of ids 151-400")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ISBI2015_ceph"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--machine", default="this machine", help="Where the predictions were made (recorded as is).")
    parser.add_argument("--model", default="shipped default weights, --backend onnxruntime", help="recorded as is")
    args = parser.parse_args()
    report = run(args.predictions, args.data)
    report["header"] = {"machine": args.machine, "model": args.model, "predictions": str(args.predictions)}
    print(markdown(write_record(args.out / "measurements", report, markdown)))


if __name__ == "__main__":
    main()
