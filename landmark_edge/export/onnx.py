"""ONNX export of one anatomy's GU2Net, as small steps that compose (Polygraphy's loader shape).

``export_anatomy`` is the whole pipeline and the ``export`` command is a thin shell over it:

    weights -> export_module (BatchNorm folded, optional decoder) -> torch_to_onnx (dynamic batch)
            -> simplify_onnx (onnxslim) -> attach_metadata -> check_onnx -> validate_onnx -> save_onnx

For the shipped network the two middle steps are replaced by a shipped graph template filled with the weights
(:mod:`landmark_edge.export.graph_template`): the same graph, without the exporter's seconds.

The graph input is the **z-scored** (B, 1, H, W) float32 image. The z-score stays outside the graph on purpose:
it is a reduction over the whole image whose sum overflows fp16 (512 x 512 x 255), so inside an fp16 or int8
TensorRT engine it would need precision pinning on every backend; outside, every backend runs the same
:func:`landmark_edge.transforms.zscore_batch` in fp32 on its own device before feeding the graph.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from landmark_edge.anatomy import Anatomy, get_anatomy
from landmark_edge.contracts import (
    CONFIDENCE,
    HEATMAPS,
    INPUT,
    LANDMARKS,
    OnnxInfo,
    artifact_info,
)
from landmark_edge.decode import DecodeMethod, decode_heatmaps
from landmark_edge.errors import LandmarkEdgeError, first_line
from landmark_edge.export.common import attach_metadata, quiet_logger
from landmark_edge.export.graph_template import fill_template, shipped_template
from landmark_edge.export.profiles import Calibration
from landmark_edge.io.atomic import atomic_path
from landmark_edge.model.gu2net import GU2Net, SeparableDoubleConv, SingleAnatomy
from landmark_edge.optimize.fuse import fold_conv_bn
from landmark_edge.transforms import read_grid_pixels, zscore_batch
from landmark_edge.weights import WeightsInfo, load_weights

if TYPE_CHECKING:  # onnx is imported where a graph is checked, read or saved: running a cached graph needs none
    import onnx

FP32_TOLERANCE = 1e-4  # heatmaps and peak values, fp32
# In-graph vs Python sub-pixel decoding, in grid pixels. The log-parabola fit divides by the peak's curvature,
# so on a flat peak (an untrained network) ulp-level differences between ORT's and torch's Log are amplified.
LANDMARK_TOLERANCE_PX = 1e-2
EXAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "examples" / "chest_CHNCXR_0001_0.png"


class ExportError(LandmarkEdgeError):
    """Export could not produce a graph that checks and matches PyTorch."""


# --- step 1: the PyTorch module that is exported -------------------------------------------------------------


def fold_batchnorm(model: GU2Net, anatomy: str) -> GU2Net:
    """A copy of ``model`` with every BatchNorm of ``anatomy`` folded into the convolution before it.

    The local branch's pointwise convs are shared between anatomies, so folding one anatomy's BN into them is
    only valid for a copy that serves that anatomy alone, which is what an exported graph is.
    """
    folded = copy.deepcopy(model).eval()
    for block in folded.local_net.modules():
        if isinstance(block, SeparableDoubleConv):
            block.pointwise1 = fold_conv_bn(block.pointwise1, block.norm1[anatomy])
            block.pointwise2 = fold_conv_bn(block.pointwise2, block.norm2[anatomy])
            block.norm1[anatomy] = nn.Identity()
            block.norm2[anatomy] = nn.Identity()
    for stage in folded.global_net.dilated[anatomy]:
        stage.conv = fold_conv_bn(stage.conv, stage.bn)
        stage.bn = nn.Identity()
    return folded


class ExportGraph(nn.Module):
    """One anatomy's network, returning heatmaps and, with ``decode``, landmarks (B, C, 2) and peaks (B, C)."""

    def __init__(self, model: GU2Net, anatomy: str, decode: DecodeMethod | None = None) -> None:
        super().__init__()
        self.net = SingleAnatomy(model, anatomy)
        self.decode = decode

    def forward(self, image: torch.Tensor):
        heatmaps = self.net(image)
        if self.decode is None:
            return heatmaps
        landmarks, confidence = decode_heatmaps(heatmaps, self.decode)
        return heatmaps, landmarks, confidence

    @property
    def output_names(self) -> list[str]:
        return [HEATMAPS] if self.decode is None else [HEATMAPS, LANDMARKS, CONFIDENCE]


def export_module(model: GU2Net, anatomy: str, decode: DecodeMethod | None = None) -> ExportGraph:
    """The module to export: BatchNorm folded, bound to one anatomy, decoder attached when asked."""
    return ExportGraph(fold_batchnorm(model, anatomy), anatomy, decode).eval()


# --- step 2: torch -> ONNX ------------------------------------------------------------------------------------


def torch_to_onnx(module: ExportGraph, anatomy: Anatomy, opset: int = 18) -> onnx.ModelProto:
    """Export with torch's dynamo exporter; the batch axis is dynamic, the grid is static (one per anatomy)."""
    height, width = anatomy.grid_hw
    example = torch.zeros(2, 1, height, width)
    batch = torch.export.Dim("batch", min=1, max=4096)
    chatter = io.StringIO()  # the exporter prints progress lines; keep the CLI's output ours
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module, (example,), input_names=[INPUT], output_names=module.output_names,
                dynamic_shapes={"image": {0: batch}}, opset_version=opset, dynamo=True, verbose=False,
            )  # fmt: skip
        except Exception as error:  # noqa: BLE001 - torch raises many exporter-internal types
            raise ExportError(f"torch.onnx.export failed for {anatomy.name}: {first_line(error)}") from None
    return program.model_proto


# --- step 3: simplify, describe, check ------------------------------------------------------------------------


def simplify_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and pattern fusion with onnxslim (pure Python; see the README for the onnxsim comparison)."""
    import onnxslim

    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(model)


def check_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """The ONNX checker with shape inference (full check); refuses a graph that still holds a BatchNorm."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"ONNX checker: {first_line(error)}") from None
    if any(node.op_type == "BatchNormalization" for node in model.graph.node):
        raise ExportError("exported graph still contains BatchNormalization (folding failed)")
    return model


# --- step 4: validate against PyTorch in ONNX Runtime ---------------------------------------------------------


@dataclass
class Validation:
    """ONNX Runtime (CPU) against eager PyTorch on real images, per output and batch size."""

    max_abs_diff: dict[str, float] = field(default_factory=dict)  # "heatmaps@b3" -> max |ort - torch|
    batch_sizes: tuple[int, ...] = ()
    images: int = 0
    int8_drift_px: float | None = None  # quantized graph: largest landmark shift from PyTorch, grid pixels

    @property
    def worst_heatmap_diff(self) -> float:
        return max((v for k, v in self.max_abs_diff.items() if k.startswith(HEATMAPS)), default=0.0)


def validation_batch(anatomy: Anatomy, images: Sequence[Path] = (), size: int = 3) -> torch.Tensor:
    """``size`` z-scored real images on the anatomy's grid: the given ones, else the bundled example X-ray.

    When fewer images than ``size`` are given, their mirror images fill the batch (still real anatomy, and
    each batch element differs, so a batch-mixing bug cannot hide).
    """
    paths = list(images) or [EXAMPLE_IMAGE]
    pixels = [read_grid_pixels(p, anatomy.grid) for p in paths[:size]]
    flips = (np.fliplr, np.flipud, lambda a: np.flipud(np.fliplr(a)))
    for index in range(size - len(pixels)):
        pixels.append(np.ascontiguousarray(flips[index % 3](pixels[index % len(paths)])))
    return zscore_batch(torch.from_numpy(np.stack(pixels)))


# Runs an exported model on a z-scored (B, 1, H, W) batch: {output name: array} (ONNX Runtime, OpenVINO).
GraphRunner = Callable[[np.ndarray], dict[str, np.ndarray]]


def ort_runner(model: onnx.ModelProto) -> GraphRunner:
    """The graph in an ONNX Runtime CPU session."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda batch: dict(zip(names, session.run(None, {INPUT: batch})))


def validate_onnx(
    model: onnx.ModelProto,
    reference: nn.Module,
    batch: torch.Tensor,
    decode: DecodeMethod | None,
    batch_sizes: Sequence[int] = (1, 3),
) -> Validation:
    """Run the graph in ONNX Runtime (CPU) and the unfolded PyTorch model on the same batch (:func:`validate_outputs`)."""
    return validate_outputs(ort_runner(model), reference, batch, decode, batch_sizes)


def validate_outputs(
    run: GraphRunner,
    reference: nn.Module,
    batch: torch.Tensor,
    decode: DecodeMethod | None,
    batch_sizes: Sequence[int] = (1, 3),
) -> Validation:
    """Run an exported model and the unfolded PyTorch model on the same batch, at each batch size.

    Heatmaps and peak values are compared with PyTorch; in-graph landmarks are compared with the Python
    decoder applied to the graph's own heatmaps (so an argmax tie broken differently by 1e-7 of noise in the
    heatmaps is not counted as a decoder difference).
    """
    result = Validation(batch_sizes=tuple(batch_sizes), images=len(batch))
    with torch.inference_mode():  # once, at the largest batch: eval-mode outputs do not depend on the batch
        expected_all = reference(batch[: max(batch_sizes)]).float()
    for size in batch_sizes:
        outputs = run(batch[:size].numpy())
        expected = expected_all[:size]
        result.max_abs_diff[f"{HEATMAPS}@b{size}"] = _max_diff(outputs[HEATMAPS], expected)
        if decode is not None:
            xy, _ = decode_heatmaps(torch.from_numpy(outputs[HEATMAPS]), decode)
            result.max_abs_diff[f"{LANDMARKS}@b{size}"] = _max_diff(outputs[LANDMARKS], xy)
            result.max_abs_diff[f"{CONFIDENCE}@b{size}"] = _max_diff(outputs[CONFIDENCE], expected.flatten(2).amax(-1))
    return result


def landmark_drift(model: onnx.ModelProto, reference: nn.Module, batch: torch.Tensor) -> float:
    """Largest sub-pixel landmark shift (grid pixels) between the graph in ONNX Runtime and PyTorch."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    heatmaps = session.run([HEATMAPS], {INPUT: batch.numpy()})[0]
    with torch.inference_mode():
        expected, _ = decode_heatmaps(reference(batch).float(), DecodeMethod.SUBPIXEL)
    got, _ = decode_heatmaps(torch.from_numpy(heatmaps), DecodeMethod.SUBPIXEL)
    return float((got - expected).norm(dim=-1).max())


def _max_diff(actual: np.ndarray, expected: torch.Tensor) -> float:
    if actual.shape != tuple(expected.shape):
        raise ExportError(f"output shape {actual.shape} differs from PyTorch's {tuple(expected.shape)}")
    return float(np.abs(actual - expected.numpy()).max())


# --- step 5: save ---------------------------------------------------------------------------------------------


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write the graph atomically as one file (the weights are small enough to stay inside it)."""
    import onnx

    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
    return Path(path)


# --- the composed pipeline ------------------------------------------------------------------------------------


@dataclass
class ExportReport:
    anatomy: str
    path: Path
    opset: int
    decode: DecodeMethod | None
    nodes: int
    validation: Validation


def export_anatomy(
    weights: str | Path,
    anatomy: str,
    out: str | Path,
    *,
    opset: int = 18,
    decode: DecodeMethod | None = None,
    simplify: bool = True,
    images: Sequence[Path] = (),
    tolerance: float = FP32_TOLERANCE,
    calibration: Calibration | None = None,
    step: Callable[[str], None] = lambda name: None,
) -> ExportReport:
    """Export, simplify, describe, check and validate one anatomy's graph; write it only if it passes.

    With ``calibration`` the validated fp32 graph is then quantized to int8 for ONNX Runtime's CPU provider, and
    its landmark drift from PyTorch on the validation images is measured and reported (not a pass/fail limit:
    how much drift is acceptable is the deployment's call, and it depends on the trained weights).
    """
    target = get_anatomy(anatomy)
    if calibration is not None:
        from landmark_edge.export.quantize import calibration_paths

        calibration_paths(calibration)  # missing images fail now, not after the fp32 export
    graph, model = onnx_graph(weights, target, decode=decode, opset=opset, simplify=simplify, step=step)
    step("checking")
    check_onnx(graph)
    step("validating against PyTorch in ONNX Runtime")
    validation = validate_onnx(graph, SingleAnatomy(model, target.name).eval(), validation_batch(target, images), decode)
    check_validation(validation, target, "ONNX Runtime", tolerance)
    if calibration is not None:
        from landmark_edge.export.quantize import quantize_for_cpu

        step("quantizing to int8 (ONNX Runtime CPU)")
        graph = quantize_for_cpu(graph, target, calibration)
        validation.int8_drift_px = landmark_drift(graph, SingleAnatomy(model, target.name).eval(),
                                                  validation_batch(target, images))  # fmt: skip
    step("saving")
    save_onnx(graph, out)
    return ExportReport(target.name, Path(out), _opset_of(graph), decode, len(graph.graph.node), validation)


def check_validation(validation: Validation, anatomy: Anatomy, runtime: str, tolerance: float = FP32_TOLERANCE) -> None:
    """Refuse an export whose outputs differ from PyTorch's beyond the fp32 limits (landmarks: the decoder's)."""
    for key, diff in validation.max_abs_diff.items():
        limit = LANDMARK_TOLERANCE_PX if key.startswith(LANDMARKS) else tolerance
        if diff > limit:
            raise ExportError(f"{anatomy.name}: {runtime} differs from PyTorch by {diff:.3g} on {key} (limit {limit:g})")


def onnx_graph(
    weights: str | Path,
    anatomy: Anatomy,
    *,
    decode: DecodeMethod | None = None,
    opset: int = 18,
    simplify: bool = True,
    step: Callable[[str], None] = lambda name: None,
    require_fit: bool = True,
) -> tuple[onnx.ModelProto, GU2Net]:
    """The described graph of one anatomy (not yet checked or validated) and the PyTorch model it came from.

    The shipped graph template, filled with the weights, when one fits (see :mod:`graph_template`: the same graph
    in a fraction of a second); else torch's exporter and onnxslim.
    """
    step("loading weights")
    model, info = load_weights(weights, anatomy.name, require_fit=require_fit)
    module = export_module(model, anatomy.name, decode)
    template = shipped_template(anatomy, decode, opset, info.architecture) if simplify else None
    if template is not None:
        step("filling the shipped graph template")
        graph = fill_template(template, module_tensors(module))
    else:
        graph = exported_graph(module, anatomy, opset, simplify, step)
    outputs = [o.name for o in graph.graph.output]
    return attach_metadata(graph, describe(anatomy, info, decode, _opset_of(graph), outputs)), model


def exported_graph(
    module: ExportGraph, anatomy: Anatomy, opset: int = 18, simplify: bool = True,
    step: Callable[[str], None] = lambda name: None,
) -> onnx.ModelProto:
    """The module through torch's exporter and, with ``simplify``, onnxslim (no metadata yet)."""
    step("exporting to ONNX")
    graph = torch_to_onnx(module, anatomy, opset)
    if simplify:
        step("simplifying (onnxslim)")
        graph = simplify_onnx(graph)
    return graph


def module_tensors(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's parameters and buffers by ``state_dict`` name, as the exporter names the graph's initializers."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in module.state_dict().items()}


def describe(
    anatomy: Anatomy, info: WeightsInfo, decode: DecodeMethod | None, opset: int, outputs: list[str]
) -> OnnxInfo:
    """The metadata of an anatomy's graph, from the registry and the weights header (one source for each fact)."""
    fields = artifact_info(anatomy, weights_sha256=info.sha256, preprocessing=info.preprocessing, decode=decode)
    return OnnxInfo(**fields, outputs=outputs, opset=opset)


def _opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
