"""Which NNCF recipe for OpenVINO int8, and what does accuracy control keep float? One run, one record.

    nice -n 10 env PYTHONPATH=. python benchmarks/openvino_int8.py --anatomy chest --data ../shared/data \
        --calibration '../shared/data/chest/pngs/CHNCXR_0[01]*_0.png' \
        --validation '../shared/data/chest/pngs/CHNCXR_02[5-7]?_0.png' --out benchmarks/results/openvino_int8

(chest train ids for calibration; validation ids 0246-0281, never test; `--ir chest.int8.xml` keeps the IR for
`landmark-edge bench --artifact openvino:int8=chest.int8.xml`)

The shipped weights' graph (sub-pixel decoding in the graph) becomes a float IR; then

1. **recipe by measurement:** each candidate recipe (range estimator x bias correction) quantizes the whole
   network with plain ``nncf.quantize`` (calibration: the profile's train images), and its largest and mean
   landmark move from the float IR is measured on the profile's *validation* images;
2. **accuracy control** (:func:`landmark_edge.export.openvino.quantize_int8`) runs with the recipe that moved the
   landmarks least, bounded by the profile's max drift (chest 1 px, head 0.5 mm by default); the record lists
   every layer that stayed float and why;
3. the result's drift is then measured on the anatomy's **test** split, which no step above saw (reported, not
   used), with milliseconds per image at batch 1 for orientation (the speed record is the bench's).

Writes ``OUT.json`` and ``OUT.md``; the whole run is bounded by the profile's ``max_iterations`` (~15 minutes on
2 quiet cores for chest).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from landmark_edge.anatomy import get_anatomy
from landmark_edge.data import load_split
from landmark_edge.export.onnx import check_onnx, onnx_graph
from landmark_edge.export.openvino import (
    DEFAULT_MAX_DRIFT,
    DriftImages,
    Int8Report,
    _quiet_nncf,
    _record_float_layers,
    describe_ir,
    drift_images,
    drift_unit,
    float_tail_ops,
    ir_runner,
    ov_read,
    quantization_arguments,
    quantize_int8,
    save_ir,
    to_ir,
    validation_paths,
)
from landmark_edge.bench.records import write_record
from landmark_edge.contracts import read_onnx_info
from landmark_edge.export.profiles import load_profile, with_overrides
from landmark_edge.export.quantize import calibration_paths
from landmark_edge.weights import DEFAULT_WEIGHTS, file_sha256

RECIPES = [
    {"range_estimator": "minmax", "fast_bias_correction": True},
    {"range_estimator": "minmax", "fast_bias_correction": False},
    {"range_estimator": "mean_quantile", "fast_bias_correction": True},
]


def progress(text: str) -> None:
    """A timestamped progress line on stderr: NNCF's runs redirect stdout (its progress bars), which would swallow
    it."""
    print(time.strftime("%H:%M:%S"), text, file=sys.stderr, flush=True)


def int8_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every int8 record shares (also ``int8_onnx_nncf.py``'s): anatomy, profile, images, output."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--anatomy", default="chest")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="test split for the final drift")
    parser.add_argument("--profile", default="cpu-openvino-int8")
    parser.add_argument("--calibration", type=Path, required=True, help="train images (the profile names none)")
    parser.add_argument("--validation", type=Path, required=True, help="validation images, never test")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = int8_parser(__doc__.splitlines()[0])
    parser.add_argument("--skip-recipes", action="store_true", help="use the profile's recipe without comparing")
    parser.add_argument("--ir", type=Path, help="also save the accuracy-controlled IR (MODEL.xml) for bench --artifact")
    parser.add_argument("--from-ir", type=Path, help="describe an IR saved earlier with --ir instead of quantizing "
                        "again (minutes, not tens: the recipe comparison and the accuracy control's time are not "
                        "remeasured)")  # fmt: skip
    args = parser.parse_args(argv)
    anatomy = get_anatomy(args.anatomy)
    settings = with_overrides(load_profile(args.profile), args.profile, calibration_images=args.calibration,
                              validation_images=args.validation)  # fmt: skip
    control, calibration = settings.accuracy_control, settings.calibration
    start = time.perf_counter()
    test_images = DriftImages.read([sample.image for sample in load_split(args.data, anatomy, "test").samples],
                                   anatomy)  # read first: a bad --data fails now, not after the quantization
    graph, _ = onnx_graph(DEFAULT_WEIGHTS, anatomy, decode=settings.decode)
    model = describe_ir(to_ir(check_onnx(graph)), read_onnx_info(graph), "fp32")
    validation = drift_images(validation_paths(control), anatomy, model)
    if args.from_ir:
        recipes, quantized = [], ov_read(args.from_ir)
        report = saved_report(model, quantized, anatomy, calibration, control, validation)
    else:
        recipes = [] if args.skip_recipes else compare_recipes(model, anatomy, calibration, control, validation)
        if recipes:
            best = min(recipes, key=lambda r: (r["max"], r["mean"]))
            control = control.model_copy(update={k: best[k] for k in ("range_estimator", "fast_bias_correction")})
        quantized, report = quantize_int8(model, anatomy, calibration, control, step=progress)
    if args.ir:
        save_ir(describe_ir(quantized, read_onnx_info(graph), "int8"), args.ir)
    test = test_drift(model, quantized, test_images)
    data = {
        "weights_sha256": file_sha256(DEFAULT_WEIGHTS), "anatomy": anatomy.name, "profile": args.profile,
        "unit": drift_unit(anatomy), "default_max_drift": DEFAULT_MAX_DRIFT[drift_unit(anatomy)],
        "recipes": recipes, "accuracy_control": asdict(report), "test": test,
        "from_ir": None if args.from_ir is None else str(args.from_ir),
        "seconds": time.perf_counter() - start, "versions": versions(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_record(args.out, data, markdown)
    return 0 if report.met else 1


def compare_recipes(model, anatomy, calibration, control, validation: DriftImages) -> list[dict]:
    """Every candidate recipe's whole-network int8 drift on the validation images (no accuracy control)."""
    import nncf

    train = DriftImages.read(calibration_paths(calibration), anatomy)
    results = []
    for recipe in RECIPES:
        started = time.perf_counter()
        print(f"recipe {recipe}", flush=True)
        arguments = quantization_arguments(float_tail_ops(model), train, control.model_copy(update=recipe))
        arguments["advanced_parameters"] = arguments.pop("advanced_quantization_parameters")  # quantize's name
        with _quiet_nncf():
            quantized = nncf.quantize(model, **arguments)
        drifts = validation.drifts(ir_runner(quantized, "int8"))
        results.append({**recipe, "max": float(drifts.max()), "mean": float(drifts.mean()),
                        "seconds": time.perf_counter() - started})  # fmt: skip
    return results


def saved_report(model, saved, anatomy, calibration, control, validation: DriftImages) -> Int8Report:
    """The report :func:`quantize_int8` gave when it made ``saved`` (``--from-ir``): its all-int8 starting point is
    NNCF's plain quantize with the same recipe and images (MinMax statistics: deterministic), so what accuracy
    control reverted is the difference; its time is not remeasured (``seconds`` 0)."""
    import nncf

    train = DriftImages.read(calibration_paths(calibration), anatomy)
    unit, ignored = drift_unit(anatomy), float_tail_ops(model)
    arguments = quantization_arguments(ignored, train, control)
    arguments["advanced_parameters"] = arguments.pop("advanced_quantization_parameters")  # quantize's name
    with _quiet_nncf():
        initial = nncf.quantize(model, **arguments)
    recipe = {"range_estimator": control.range_estimator, "fast_bias_correction": control.fast_bias_correction,
              "preset": "performance", "max_iterations": control.max_iterations,
              "ranking_images": control.ranking_images}  # fmt: skip
    limit = control.max_drift or DEFAULT_MAX_DRIFT[unit]
    report = Int8Report(unit, limit, len(validation.inputs), len(train.inputs), recipe, ignored=ignored)
    report.initial_drift = float(validation.drifts(ir_runner(initial, "int8")).max())
    report.final_drift = float(validation.drifts(ir_runner(saved, "int8")).max())
    report.met = report.final_drift <= limit
    _record_float_layers(report, initial, saved, set(ignored))
    return report


def test_drift(model, quantized, images: DriftImages) -> dict:
    """The accuracy-controlled model's drift from the float IR on the test split, and ms per image of each."""
    float_run, int8_run = ir_runner(model, "fp32"), ir_runner(quantized, "int8")
    images.set_reference(float_run)
    drifts = images.drifts(int8_run)
    timing = {}
    for name, run in (("fp32", float_run), ("int8", int8_run)):
        started = time.perf_counter()
        for batch in images.inputs[:8]:
            run(batch)
        timing[name] = (time.perf_counter() - started) * 1e3 / min(8, len(images.inputs))
    return {"images": len(images.inputs), "max": float(drifts.max()), "mean": float(drifts.mean()),
            "per_image_max": [round(float(d), 4) for d in drifts], "ms_per_image": timing}  # fmt: skip


def versions() -> dict:
    """NNCF's version (the record's environment has OpenVINO's, torch's and numpy's)."""
    import nncf

    return {"nncf": nncf.__version__}


def markdown(record: dict) -> str:
    control, unit, test = record["accuracy_control"], record["unit"], record["test"]
    lines = [f"# OpenVINO int8 for {record['anatomy']}: NNCF accuracy control bounded by landmark drift", "",
             f"- NNCF {record['versions']['nncf']}; weights sha256 {record['weights_sha256'][:12]}; drift in {unit}, "
             "original-image space, against the float IR", ""]  # fmt: skip
    if record["recipes"]:
        lines += ["## Recipe by measurement (whole network int8, validation images)", "",
                  "| range estimator | fast bias correction | max drift | mean drift | s |", "|---|---|---|---|---|"]
        lines += [f"| {r['range_estimator']} | {r['fast_bias_correction']} | {r['max']:.3f} | {r['mean']:.3f} | "
                  f"{r['seconds']:.0f} |" for r in record["recipes"]]  # fmt: skip
        lines.append("")
    lines += ["## Accuracy control", "",
              f"- recipe: {control['recipe']}; bound {control['max_drift']:g} {unit} on "
              f"{control['validation_images']} validation images; {control['calibration_images']} calibration images",
              f"- validation drift: all int8 {control['initial_drift']:.3f} {unit} -> after accuracy control "
              f"{control['final_drift']:.3f} {unit} ({'met' if control['met'] else 'NOT met'}); "
              f"{control['quantized']} layers int8; " + (f"{control['seconds']:.0f} s" if not record.get("from_ir")
              else f"described from the saved IR `{record['from_ir']}` (its recipe comparison and time not "
              "remeasured)"),
              f"- test split ({test['images']} images, unseen): max {test['max']:.3f} {unit}, mean {test['mean']:.3f}; "
              f"ms/image at batch 1 (orientation only): {test['ms_per_image']}", "",
              "| layer that stayed float | why |", "|---|---|"]  # fmt: skip
    lines += [f"| {name} | {why} |" for name, why in control["float_layers"].items()]
    lines += ["", f"Kept f32 by the ignored scope (heatmap product and decoder): {len(control['ignored'])} operations."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
