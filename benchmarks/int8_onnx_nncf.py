"""ONNX Runtime int8: the package's recipe against NNCF's accuracy control on the same ONNX graph. One run, one record.

    PYTHONPATH=. python benchmarks/int8_onnx_nncf.py --anatomy chest --data ../shared/data \
        --calibration '../shared/data/chest/pngs/CHNCXR_0[01]*_0.png' \
        --validation '../shared/data/chest/pngs/CHNCXR_02[5-7]?_0.png' --out benchmarks/results/int8_onnx_nncf

The OpenVINO int8 path bounds its quantization by landmark drift with NNCF's ``quantize_with_accuracy_control``
(``benchmarks/results/openvino_int8.md``). NNCF runs the same algorithm on an ``onnx.ModelProto``, so the question
the OpenVINO issue asks is whether ONNX Runtime's int8 graph should be made that way too. Both candidates start
from the shipped weights' graph (sub-pixel decoding in the graph) and use the ``cpu-openvino-int8`` profile's
images and settings (calibration on train images, accuracy control on validation images, never test):

* ``package``: :func:`landmark_edge.export.quantize.quantize_for_cpu` (ONNX Runtime's static quantizer, the full-
  and half-resolution stages and the float tail kept float, moving-average MinMax), what ``export
  --onnx-precision int8`` writes today;
* ``nncf accuracy control``: NNCF on the ONNX graph with the heatmap product and decoder ignored, layers returned
  to float until the validation landmarks move at most the profile's bound.

Each is then run in ONNX Runtime (CPU) on the anatomy's **test** split against the fp32 graph: largest and mean
landmark move in the anatomy's unit, and milliseconds per image at batch 1 (8 images, for orientation; the speed
record is the bench's). The record names the better recipe (within the bound on test, then faster).
"""

from __future__ import annotations

import time

import onnx
import onnxruntime as ort

from landmark_edge.anatomy import get_anatomy
from landmark_edge.bench.records import write_record
from landmark_edge.contracts import INPUT
from landmark_edge.data import load_split
from landmark_edge.export.onnx import check_onnx, onnx_graph
from landmark_edge.export.openvino import (
    DEFAULT_MAX_DRIFT,
    DriftImages,
    _quiet_nncf,
    drift_metric,
    drift_unit,
    quantization_arguments,
    validation_paths,
)
from landmark_edge.export.profiles import load_profile, with_overrides
from landmark_edge.export.quantize import calibration_paths, float_tail_nodes, quantize_for_cpu
from landmark_edge.weights import DEFAULT_WEIGHTS, file_sha256
from openvino_int8 import int8_parser, progress  # beside this script (python benchmarks/int8_onnx_nncf.py)


def runner(model: onnx.ModelProto):
    """A batch -> outputs function over an ONNX Runtime CPU session of ``model`` (2 threads, as deployed)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda batch: dict(zip(names, session.run(None, {INPUT: batch})))


def nncf_accuracy_control(graph: onnx.ModelProto, train: DriftImages, validation: DriftImages, control, limit):
    """NNCF's accuracy-controlled int8 of the ONNX graph with the OpenVINO export's arguments and drift metric."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    with _quiet_nncf():
        return nncf.quantize_with_accuracy_control(
            graph, validation_dataset=nncf.Dataset(list(range(len(validation.inputs)))),
            validation_fn=drift_metric(validation, runner, progress), max_drop=limit, drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=control.max_iterations, ranking_subset_size=control.ranking_images,
                num_ranking_workers=1),
            **quantization_arguments(float_tail_nodes(graph), train, control),
        )  # fmt: skip


def quantized_share(model: onnx.ModelProto) -> tuple[int, int]:
    """(convolutions fed by a DequantizeLinear, all convolutions): how much of the network runs int8."""
    produced_by = {output: node.op_type for node in model.graph.node for output in node.output}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    return sum(produced_by.get(node.input[0]) == "DequantizeLinear" for node in convs), len(convs)


def ms_per_image(run, images: DriftImages, count: int = 8) -> float:
    started = time.perf_counter()
    for batch in images.inputs[:count]:
        run(batch)
    return (time.perf_counter() - started) * 1e3 / min(count, len(images.inputs))


def main(argv: list[str] | None = None) -> int:
    args = int8_parser(__doc__.splitlines()[0]).parse_args(argv)
    anatomy = get_anatomy(args.anatomy)
    settings = with_overrides(load_profile(args.profile), args.profile, calibration_images=args.calibration,
                              validation_images=args.validation)  # fmt: skip
    control, calibration = settings.accuracy_control, settings.calibration
    unit = drift_unit(anatomy)
    limit = control.max_drift or DEFAULT_MAX_DRIFT[unit]
    graph, _ = onnx_graph(DEFAULT_WEIGHTS, anatomy, decode=settings.decode)
    check_onnx(graph)
    float_run = runner(graph)
    validation = DriftImages.read(validation_paths(control), anatomy)
    validation.set_reference(float_run)
    train = DriftImages.read(calibration_paths(calibration), anatomy)
    test = DriftImages.read([s.image for s in load_split(args.data, anatomy, "test").samples], anatomy)
    test.set_reference(float_run)
    fp32_ms = ms_per_image(float_run, test)
    data = {"weights_sha256": file_sha256(DEFAULT_WEIGHTS), "anatomy": anatomy.name, "unit": unit, "bound": limit,
            "test_images": len(test.inputs), "validation_images": len(validation.inputs),
            "calibration_images": len(train.inputs), "fp32_ms_per_image": fp32_ms, "candidates": {},
            "better": None}  # fmt: skip
    candidates = data["candidates"]
    for name, make in (
        ("package", lambda: quantize_for_cpu(graph, anatomy, calibration)),
        ("nncf accuracy control", lambda: nncf_accuracy_control(graph, train, validation, control, limit)),
    ):
        print(name, flush=True)
        started = time.perf_counter()
        model = make()
        seconds = time.perf_counter() - started
        run = runner(model)
        on_test, on_val = test.drifts(run), validation.drifts(run)
        int8_convs, convs = quantized_share(model)
        candidates[name] = {
            "seconds": seconds, "int8_convs": int8_convs, "convs": convs,
            "val_max": float(on_val.max()), "test_max": float(on_test.max()), "test_mean": float(on_test.mean()),
            "test_over_bound": int((on_test > limit).sum()), "ms_per_image": ms_per_image(run, test),
        }  # fmt: skip
        write_record(args.out, data, markdown)  # each candidate as it finishes: a stopped run keeps the first
    within = [n for n, c in candidates.items() if c["test_max"] <= limit] or list(candidates)
    data["better"] = min(within, key=lambda n: candidates[n]["ms_per_image"])
    write_record(args.out, data, markdown)
    return 0


def markdown(record: dict) -> str:
    unit = record["unit"]
    lines = [f"# ONNX Runtime int8 for {record['anatomy']}: the package's recipe vs NNCF accuracy control", "",
             f"- bound {record['bound']:g} {unit} (accuracy control on {record['validation_images']} validation "
             f"images; {record['calibration_images']} train images calibrate); drift against the fp32 graph in "
             f"ONNX Runtime on {record['test_images']} test images, original-image space",
             f"- fp32 {record['fp32_ms_per_image']:.0f} ms per image (batch 1, same process)", "",
             f"| recipe | int8 convs | val max {unit} | test max {unit} | test mean {unit} | test images over the "
             "bound | ms/image | made in s |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, c in record["candidates"].items():
        lines.append(f"| {name} | {c['int8_convs']} of {c['convs']} | {c['val_max']:.3f} | {c['test_max']:.3f} | "
                     f"{c['test_mean']:.3f} | {c['test_over_bound']} | {c['ms_per_image']:.0f} | "
                     f"{c['seconds']:.0f} |")  # fmt: skip
    if record["better"] is None:
        lines += ["", "The run stopped before every candidate finished."]
    else:
        lines += ["", f"Better here (within the bound on test, then faster): **{record['better']}**."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
