"""OpenVINO IR export (``export --to openvino``): fp32 exact, bf16 as a hint, int8 bounded by landmark drift.

    validated ONNX graph (export.onnx) -> ov.Model -> metadata in rt_info -> [int8: NNCF] -> save -> check the saved IR

* **fp32** is saved *without* OpenVINO's default fp16 weight compression (``compress_to_fp16=False``: compressed
  weights move heatmaps by ~1e-3), and the saved IR itself is run against PyTorch: heatmaps within 1e-4.
* **bf16** is the same fp32 weights with ``bf16`` as the IR's precision and inference precision hint (rt_info):
  the CPU plugin computes in bf16 where the CPU has it. Its landmark drift from fp32 is measured and reported.
* **int8** is NNCF's accuracy-controlled quantization (:func:`quantize_int8`): calibrated on the user's (train)
  images, with the heatmap product and the decoder kept f32, and layers returned to float, most harmful first,
  until the landmarks on *validation* images move at most ``max_drift`` from the float model's, in the anatomy's
  unit in original-image space (chest px, head and hand mm). The report says which layers stayed float and why.

NNCF (and with it scikit-learn, scipy, networkx) is an export-time dependency only: ``pip install
'landmark-edge[openvino-export]'``. Running an IR needs ``openvino`` alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from landmark_edge.anatomy import Anatomy, SpacingRule, get_anatomy
from landmark_edge.contracts import (
    HEATMAPS,
    INPUT,
    IR_PRECISION_HINT,
    IR_SECTION,
    OnnxInfo,
    layer_precisions,
    read_onnx_info,
)
from landmark_edge.decode import DecodeMethod, decode_heatmaps
from landmark_edge.errors import InputError, LandmarkEdgeError, first_line
from landmark_edge.export.onnx import (
    EXAMPLE_IMAGE,
    ExportError,
    GraphRunner,
    Validation,
    check_onnx,
    check_validation,
    onnx_graph,
    validate_onnx,
    validate_outputs,
    validation_batch,
)
from landmark_edge.export.common import quiet_logger
from landmark_edge.export.profiles import AccuracyControl, Calibration
from landmark_edge.export.quantize import calibration_paths
from landmark_edge.io.images import read_image
from landmark_edge.model.gu2net import SingleAnatomy
from landmark_edge.transforms import grid_pixels, grid_to_original, zscore

if TYPE_CHECKING:
    import onnx
    import openvino as ov

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # the int8 IR's float layers run f32
# Allowed landmark drift of int8 from the float model when the profile gives none, by unit.
DEFAULT_MAX_DRIFT = {"px": 1.0, "mm": 0.5}
METRIC_OFFSET = 1000.0  # the validation metric is METRIC_OFFSET - drift (see drift_metric)
MEAN_MOVE_WEIGHT = 0.01  # the mean landmark move's share of the validation metric: a tie-break (see drift_metric)
# NNCF's range estimators by the profile's names.
RANGE_ESTIMATORS = {"minmax": "MINMAX", "mean_minmax": "MEAN_MINMAX", "mean_quantile": "MEAN_QUANTILE",
                    "histogram": "HISTOGRAM"}  # fmt: skip


class OpenVinoExportError(LandmarkEdgeError):
    """OpenVINO or NNCF could not make, check or save an IR."""


# --- ONNX -> IR, metadata, save ---------------------------------------------------------------------------------


def to_ir(graph: onnx.ModelProto) -> ov.Model:
    """The validated ONNX graph as an ``ov.Model`` (OpenVINO's ONNX frontend, in memory)."""
    import openvino as ov

    try:
        return ov.Core().read_model(graph.SerializeToString(), b"")
    except Exception as error:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
        raise OpenVinoExportError(f"OpenVINO cannot read the exported graph ({first_line(error)})") from None


def describe_ir(model: ov.Model, info: OnnxInfo, precision: str) -> ov.Model:
    """Write the artifact metadata (the ONNX graph's, with this IR's precision) and the precision hint into rt_info."""
    props = OnnxInfo.model_validate({**info.model_dump(), "precision": precision}).to_props()
    for key, value in {**props, IR_PRECISION_HINT: HINTS[precision]}.items():
        model.set_rt_info(value, [IR_SECTION, key])
    return model


def save_ir(model: ov.Model, path: str | Path) -> Path:
    """Write ``path`` (.xml) and its .bin, fp32 weights uncompressed; both appear together or not at all."""
    import openvino as ov

    path = Path(path).with_suffix(".xml")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as folder:
        staged = Path(folder) / path.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))  # the .bin first: an .xml is never orphaned
        os.replace(staged, path)
    return path


def ir_runner(model: ov.Model | Path, precision: str) -> GraphRunner:
    """An IR (in memory or saved) compiled for the CPU at ``precision``'s hint."""
    import openvino as ov

    core = ov.Core()
    source = core.read_model(str(model)) if isinstance(model, Path) else model
    compiled = core.compile_model(source, "CPU", {"INFERENCE_PRECISION_HINT": HINTS[precision]})
    names = {port: port.get_any_name() for port in compiled.outputs}
    return lambda batch: {names[port]: np.asarray(value) for port, value in compiled({INPUT: batch}).items()}


# --- landmark drift in the anatomy's unit ------------------------------------------------------------------------


def drift_unit(anatomy: Anatomy) -> str:
    """``px`` where the anatomy has no physical scale (chest), else ``mm``."""
    return "px" if anatomy.spacing_rule is SpacingRule.PIXELS else "mm"


@dataclass
class DriftImages:
    """Images whose landmarks a quantized model is held to: z-scored inputs, original sizes, and the float model's
    landmarks (original pixels) with the mm per pixel they imply (the wrist-width rule reads the landmarks)."""

    anatomy: Anatomy
    inputs: list[np.ndarray]  # each (1, 1, H, W) float32
    sizes: list[tuple[int, int]]
    reference_xy: np.ndarray | None = None  # (N, C, 2) original pixels
    scale: np.ndarray | None = None  # (N, 2) mm (or 1 for px) per original pixel

    @classmethod
    def read(cls, paths: Sequence[Path], anatomy: Anatomy) -> DriftImages:
        inputs, sizes = [], []
        for path in paths:
            image = read_image(path)
            inputs.append(zscore(grid_pixels(image.image, anatomy.grid)[None])[:, None])
            sizes.append(image.size)
        return cls(anatomy, inputs, sizes)

    def landmarks(self, run: GraphRunner, indices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (original pixels) and peaks of images ``indices`` (all by default), decoded sub-pixel from
        the heatmaps (the decoder a deployment runs; the graph's own is float in every precision)."""
        chosen = range(len(self.inputs)) if indices is None else indices
        xy, peaks = [], []
        for index in chosen:
            heatmaps = torch.from_numpy(np.ascontiguousarray(run(self.inputs[index])[HEATMAPS]))
            grid_xy, peak = decode_heatmaps(heatmaps.float(), DecodeMethod.SUBPIXEL)
            xy.append(grid_to_original(grid_xy[0].numpy(), self.sizes[index], self.anatomy.grid))
            peaks.append(peak[0].numpy())
        return np.stack(xy), np.stack(peaks)

    def set_reference(self, run: GraphRunner) -> None:
        self.reference_xy, peaks = self.landmarks(run)
        self.scale = np.stack([_mm_per_px(self.anatomy, xy, peak) for xy, peak in zip(self.reference_xy, peaks)])

    def moves(self, run: GraphRunner, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N, C): each landmark's move from the reference, in the anatomy's unit."""
        chosen = list(range(len(self.inputs)) if indices is None else indices)
        xy, _ = self.landmarks(run, chosen)
        delta = (xy - self.reference_xy[chosen]) * self.scale[chosen][:, None, :]
        return np.linalg.norm(delta, axis=-1)

    def drifts(self, run: GraphRunner, indices: Sequence[int] | None = None) -> np.ndarray:
        """Each image's largest landmark move from the reference, in the anatomy's unit."""
        return self.moves(run, indices).max(axis=-1)


def _mm_per_px(anatomy: Anatomy, xy: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """(x, y) of one image: the anatomy's fixed spacing, the wrist-width rule on its landmarks, or 1 (px)."""
    if anatomy.spacing_rule is SpacingRule.PIXELS:
        return np.ones(2)
    implied = anatomy.spacing_from_landmarks(xy, peaks)
    if implied is not None:
        return np.asarray(implied[0])
    if anatomy.default_spacing_mm is None:
        raise ExportError(f"{anatomy.name}: no spacing to measure drift in mm (the wrist landmarks were not found)")
    return np.asarray(anatomy.default_spacing_mm)


def compiled_runner(compiled) -> GraphRunner:
    """A runner over a compiled model NNCF hands the validation function (f32 hint set by NNCF)."""
    names = {port: port.get_any_name() for port in compiled.outputs}
    return lambda batch: {names[port]: np.asarray(value) for port, value in compiled({INPUT: batch}).items()}


# --- int8 with NNCF -----------------------------------------------------------------------------------------------


def float_tail_ops(model: ov.Model) -> list[str]:
    """The op producing the heatmaps (the product of the two branches) and everything downstream of it (the
    decoder): NNCF's ignored scope, so they stay f32 (8-bit heatmaps would quantize the sub-pixel fit away)."""
    producer = next(
        (op for op in model.get_ordered_ops() for out in op.outputs() if HEATMAPS in out.get_names()), None
    )
    if producer is None:
        raise OpenVinoExportError(f"the model has no '{HEATMAPS}' output")
    keep, frontier = [producer], [producer]
    while frontier:
        for output in frontier.pop().outputs():
            for target in output.get_target_inputs():
                node = target.get_node()
                if node not in keep and node.get_type_name() not in ("Result", "Constant"):
                    keep.append(node)
                    frontier.append(node)
    return [op.get_friendly_name() for op in keep]


def ran_layers(model: ov.Model) -> dict[str, str]:
    """``{layer: precision}`` as the CPU plugin runs ``model`` (int8 where it found quantizers, f32 elsewhere)."""
    import openvino as ov

    return layer_precisions(ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": HINTS["int8"]}))


@dataclass
class Int8Report:
    """What the accuracy-controlled quantization did: the bound, the drift before and after, and every compute
    layer that stayed float with the reason (``ignored``: heatmap product / decoder scope; ``not quantized``: no
    quantizer placed by NNCF's patterns; ``reverted``: returned to float by accuracy control)."""

    unit: str
    max_drift: float
    validation_images: int
    calibration_images: int
    recipe: dict[str, Any]
    initial_drift: float | None = None  # all quantized (before accuracy control), on the validation images
    final_drift: float | None = None
    quantized: int = 0
    float_layers: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # NNCF's ignored scope: the heatmap product and the decoder
    seconds: float = 0.0
    met: bool = False


def _nncf():
    """NNCF, or one line saying how to install it (an export-time extra)."""
    try:
        import nncf
    except ImportError:
        raise OpenVinoExportError("int8 IR export needs NNCF: pip install 'landmark-edge[openvino-export]'") from None
    return nncf


def quantization_arguments(ignored: list[str], train: DriftImages, control: AccuracyControl) -> dict[str, Any]:
    """The keyword arguments NNCF's ``quantize`` and ``quantize_with_accuracy_control`` share, for an OpenVINO model
    or an ONNX graph alike: calibration on the train images (fed by input name), symmetric (performance) preset,
    the profile's range estimator and bias correction, and ``ignored`` (the heatmap product and decoder) float."""
    nncf = _nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    estimator = getattr(RangeEstimatorParametersSet, RANGE_ESTIMATORS[control.range_estimator])
    return dict(
        calibration_dataset=nncf.Dataset(train.inputs, lambda batch: {INPUT: batch}),
        preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(train.inputs),
        fast_bias_correction=control.fast_bias_correction,
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
        advanced_quantization_parameters=AdvancedQuantizationParameters(activations_range_estimator_params=estimator),
    )  # fmt: skip


def drift_metric(
    validation: DriftImages, runner: Callable[[Any], GraphRunner], step: Callable[[str], None] = lambda text: None
):
    """NNCF's validation function over ``validation``: ``runner`` turns the model NNCF hands over (a compiled
    OpenVINO model, an ONNX graph) into a batch runner. Higher is better for NNCF: the largest drift below an offset
    (NNCF also computes a relative drop, dividing by the float model's metric, which an un-offset drift of 0 would
    make a division by zero). The mean landmark move, weighted by :data:`MEAN_MOVE_WEIGHT`, breaks ties: the largest
    move alone is a step function of a few weak landmarks, so most layer groups rank equal, removing the "most
    harmful" one often makes the drift worse, and each such step sends NNCF back to rank every group again (the
    run's cost). The bound becomes at most ``MEAN_MOVE_WEIGHT`` times the mean move stricter.

    Accuracy control runs for minutes without a word of its own (its log is silenced: stdout may be ``--json``), so
    each validation on all images (one accuracy-control step) tells ``step`` the drift it reached, how many layer
    rankings (validations on a subset) it took and the time so far."""
    started, counts = time.perf_counter(), {"steps": 0, "rankings": 0}
    unit = drift_unit(validation.anatomy)

    def validate(model, items) -> tuple[float, list[float]]:
        indices = [int(index) for index in items]
        moves = validation.moves(runner(model), indices)
        drifts = moves.max(axis=-1)
        if len(indices) < len(validation.inputs):
            counts["rankings"] += 1
        else:
            step(f"accuracy control step {counts['steps']}: max drift {drifts.max():.3g} {unit}, "
                 f"{counts['rankings']} ranking trials, {time.perf_counter() - started:.0f} s")  # fmt: skip
            counts["steps"] += 1
        penalty = float(drifts.max()) + MEAN_MOVE_WEIGHT * float(moves.mean())
        return METRIC_OFFSET - penalty, [METRIC_OFFSET - float(d) for d in drifts]

    return validate


def drift_images(paths: Sequence[Path], anatomy: Anatomy, model: ov.Model) -> DriftImages:
    """Validation images with the float model's landmarks as their reference."""
    images = DriftImages.read(paths, anatomy)
    images.set_reference(ir_runner(model, "fp32"))
    return images


def quantize_int8(
    model: ov.Model,
    anatomy: Anatomy,
    calibration: Calibration,
    control: AccuracyControl,
    step: Callable[[str], None] = lambda text: None,
) -> tuple[ov.Model, Int8Report]:
    """NNCF accuracy-controlled int8 of a float IR, bounded by landmark drift on the validation images."""
    nncf = _nncf()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    start = time.perf_counter()
    unit = drift_unit(anatomy)
    limit = control.max_drift or DEFAULT_MAX_DRIFT[unit]
    step("reading validation and calibration images")
    validation = drift_images(validation_paths(control), anatomy, model)
    train = DriftImages.read(calibration_paths(calibration), anatomy)
    ignored = float_tail_ops(model)
    arguments = quantization_arguments(ignored, train, control)
    recipe = {"range_estimator": control.range_estimator, "fast_bias_correction": control.fast_bias_correction,
              "preset": "performance", "max_iterations": control.max_iterations,
              "ranking_images": control.ranking_images}  # fmt: skip
    report = Int8Report(unit, limit, len(validation.inputs), len(train.inputs), recipe, ignored=ignored)

    step(f"quantizing with accuracy control (max drift {limit:g} {unit}; minutes)")
    with tempfile.TemporaryDirectory(prefix="landmark-edge-nncf-") as folder, _quiet_nncf():
        try:
            quantized = nncf.quantize_with_accuracy_control(
                model, validation_dataset=nncf.Dataset(list(range(len(validation.inputs)))),
                validation_fn=drift_metric(validation, compiled_runner, step), max_drop=limit,
                drop_type=nncf.DropType.ABSOLUTE,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=control.max_iterations, ranking_subset_size=control.ranking_images,
                    num_ranking_workers=1, intermediate_model_dir=folder),
                **arguments,
            )  # fmt: skip
        except LandmarkEdgeError:
            raise
        except Exception as error:  # noqa: BLE001 - NNCF raises many kinds
            raise OpenVinoExportError(f"NNCF int8 quantization failed ({first_line(error)})") from None
        initial = ov_read(Path(folder) / "intermediate_model.xml")
    report.initial_drift = float(validation.drifts(ir_runner(initial, "int8")).max())
    report.final_drift = float(validation.drifts(ir_runner(quantized, "int8")).max())
    report.met = report.final_drift <= limit
    _record_float_layers(report, initial, quantized, set(ignored))
    report.seconds = time.perf_counter() - start
    return quantized, report


def ov_read(path: Path) -> ov.Model:
    import openvino as ov

    return ov.Core().read_model(str(path))


def _record_float_layers(report: Int8Report, initial: ov.Model, final: ov.Model, ignored: set[str]) -> None:
    first, last = ran_layers(initial), ran_layers(final)
    report.quantized = sum(precision == "int8" for precision in last.values())
    for name, precision in last.items():
        if precision == "int8":
            continue
        if name in ignored:
            report.float_layers[name] = "ignored (heatmap product / decoder)"
        elif first.get(name) == "int8":
            report.float_layers[name] = "reverted by accuracy control (landmark drift)"
        else:
            report.float_layers[name] = "not quantized (no int8 kernel or quantizer for it: NNCF's patterns, the CPU's)"


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs progress at INFO and draws progress bars on stdout, which belongs to ``--json`` output."""
    with quiet_logger("nncf"), contextlib.redirect_stdout(io.StringIO()):
        yield


# --- the composed export ------------------------------------------------------------------------------------------


@dataclass
class IrReport:
    anatomy: str
    path: Path
    precision: str
    decode: DecodeMethod | None
    validation: Validation  # the saved IR against PyTorch (fp32: the 1e-4 check; bf16/int8: recorded, not limited)
    drift: float | None = None  # bf16/int8: largest landmark move from fp32 on the validation images, ``unit``
    unit: str = "px"
    int8: Int8Report | None = None


def export_ir(
    weights: str | Path,
    anatomy: str,
    out: str | Path,
    *,
    precision: str = "fp32",
    opset: int = 18,
    decode: DecodeMethod | None = None,
    simplify: bool = True,
    images: Sequence[Path] = (),
    calibration: Calibration | None = None,
    control: AccuracyControl | None = None,
    step: Callable[[str], None] = lambda name: None,
) -> IrReport:
    """Export, validate and save one anatomy's IR at ``precision``; the saved files are checked before returning."""
    target = get_anatomy(anatomy)
    if precision == "int8":  # missing images fail now, not after the fp32 export
        if calibration is None or control is None:
            raise ExportError("an int8 IR needs calibration images and an accuracy_control section (validation images)")
        calibration_paths(calibration)
        validation_paths(control)
    graph, model = onnx_graph(weights, target, decode=decode, opset=opset, simplify=simplify, step=step)
    check_onnx(graph)
    reference, batch = SingleAnatomy(model, target.name).eval(), validation_batch(target, images)
    step("validating against PyTorch in ONNX Runtime")
    check_validation(validate_onnx(graph, reference, batch, decode), target, "ONNX Runtime")
    ir, int8 = describe_ir(to_ir(graph), read_onnx_info(graph), precision), None
    if precision == "int8":
        ir, int8 = quantize_int8(ir, target, calibration, control, step)
        describe_ir(ir, read_onnx_info(graph), "int8")
    step("saving")
    path = save_ir(ir, out)
    step("checking the saved IR against PyTorch in OpenVINO")
    validation = validate_outputs(ir_runner(path, precision), reference, batch, decode)
    if precision == "fp32":
        check_validation(validation, target, "the saved OpenVINO IR")
    report = IrReport(target.name, path, precision, decode, validation, unit=drift_unit(target), int8=int8)
    if int8 is not None:
        report.drift = int8.final_drift
    elif precision == "bf16":
        report.drift = _bf16_drift(path, target, control, images)
    return report


def validation_paths(control: AccuracyControl) -> list[Path]:
    """The user's validation images (``--validation``: a folder or glob), sorted, at most ``control.count``."""
    if control.images is None:  # a shipped profile: the images are the user's own
        raise InputError("no validation images: give --validation with a folder or glob of X-rays (never test images)")
    return calibration_paths(Calibration(images=control.images, count=control.count))


def _bf16_drift(path: Path, anatomy: Anatomy, control: AccuracyControl | None, images: Sequence[Path]) -> float:
    """bf16's largest landmark move from fp32 (the same IR at the f32 hint), on the validation images."""
    paths = validation_paths(control) if control is not None and control.images is not None else images
    drift_images = DriftImages.read(list(paths) or [EXAMPLE_IMAGE], anatomy)
    drift_images.set_reference(ir_runner(path, "fp32"))
    return float(drift_images.drifts(ir_runner(path, "bf16")).max())
