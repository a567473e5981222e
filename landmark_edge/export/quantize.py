"""Static int8/fp8 quantization of an exported graph, calibrated on real X-rays the user chooses.

One quantizer (ONNX Runtime's ``quantize_static``, QDQ format) with a recipe per target, because the two
consumers want different graphs:

* ``tensorrt``: symmetric scales (zero point 0), per-channel weights, Conv layers only. TensorRT's explicit
  quantization reads exactly that and keeps the other layers in its own precision.
* ``cpu`` (ONNX Runtime's CPU provider): unsigned 8-bit activations with zero points and signed per-channel
  weights (the U8S8 kernels x86 CPUs run fastest), every quantizable operator of the network's *low-resolution
  stages* (a quarter of the grid and coarser, encoder and decoder, and the global branch), so whole chains of
  convolutions, pooling, resizes and concatenations stay in int8 instead of converting back to float around each
  conv. What stays float32 and why (measured on the shipped weights, 16 chest test and 16 val images, against
  fp32; the record is ``benchmarks/results/int8_recipe.md`` and ``int8_recipe_val.md``):

  - every node that reads or writes a map at full or half resolution. Activations are quantized per tensor, and
    their channels use a small part of the tensor's range (the median channel 10-50 %), so each quantized conv
    keeps only about 25 dB of signal; through the U-Net's 40 convolutions the heatmaps drifted by up to 0.4 and
    a weak peak (0.1-0.4) could move by 10-23 px. Keeping the two finest levels float cuts the mean move 3-8x
    (0.2-0.3 px) and keeps most images within 1 px, but not every weak landmark: which of two peaks one lands on
    still flips with small details (of the 32 images' 192 landmarks one moved 12 px, another 3 px), so int8 is not
    landmark-exact. The coarser levels, where the channels are many and the maps small, keep a 1.35x speed-up
    over fp32.
  - the heatmap product and the in-graph decoder: the sub-pixel fit takes the log of the heatmap around its
    peak, which 8-bit steps would flatten.

  MinMax calibration averages each image's extremes (``CalibMovingAverage``) instead of taking the extremes of
  all images, so one unusual calibration image cannot stretch a tensor's range for every other image.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable, Iterator
from enum import Enum
from pathlib import Path

import numpy as np
import onnx
import torch

from landmark_edge.anatomy import Anatomy
from landmark_edge.contracts import HEATMAPS, INPUT, OnnxInfo, read_onnx_info
from landmark_edge.errors import InputError, LandmarkEdgeError, first_line
from landmark_edge.export.common import attach_metadata, quiet_logger
from landmark_edge.export.profiles import Calibration
from landmark_edge.io.inputs import expand_inputs
from landmark_edge.transforms import read_grid_pixels, zscore_batch


class QuantTarget(str, Enum):
    TENSORRT = "tensorrt"
    CPU = "cpu"


class QuantizationError(LandmarkEdgeError):
    """The quantizer could not produce a graph."""


def calibration_paths(calibration: Calibration) -> list[Path]:
    """The user's calibration images (a folder, recursively, or a glob), sorted, at most ``count``."""
    if calibration.images is None:  # a shipped int8 profile: the images are the user's own
        raise InputError("no calibration images: give --calibration with a folder or glob of real X-rays like "
                         "the deployed ones")  # fmt: skip
    inputs = expand_inputs([calibration.images])
    if not inputs.files:
        raise InputError(f"{calibration.images}: no calibration images found (give a folder of X-rays or a glob)")
    return sorted(inputs.files)[: calibration.count]


def calibration_batches(calibration: Calibration, anatomy: Anatomy) -> Iterator[np.ndarray]:
    """Z-scored (1, 1, H, W) float32 inputs from the calibration images, preprocessed exactly as at inference."""
    for path in calibration_paths(calibration):
        pixels = read_grid_pixels(path, anatomy.grid)
        yield zscore_batch(torch.from_numpy(np.array(pixels[None]))).numpy()  # a writable copy


def calibration_reader(batches: Iterable[np.ndarray]):
    """ONNX Runtime's calibration data reader over z-scored input batches (see :func:`calibration_batches`)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: batch}

    return Reader()


def float_tail_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that produce the heatmaps or consume them (product and decoder): kept in float32 for ``cpu``."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    keep = [node for node in model.graph.node if HEATMAPS in node.output]
    frontier = [HEATMAPS]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node not in keep:
                keep.append(node)
                frontier.extend(node.output)
    return [node.name for node in keep]


def fine_stage_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that read or write a feature map at half the grid's resolution or finer (the U-Net's two finest
    levels, encoder and decoder, and the poolings and resizes that leave them): kept in float32 for ``cpu``, where
    per-tensor 8-bit activations cost the most accuracy (``benchmarks/results/int8_recipe.md``).

    Read from the graph's inferred shapes, so it holds for any anatomy's grid and any network width.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    image = next(v for v in inferred.graph.input if v.name == INPUT)
    height, width = (d.dim_value for d in image.type.tensor_type.shape.dim[2:])
    sizes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
            sizes[value.name] = (dims[2].dim_value, dims[3].dim_value)

    def is_fine(name: str) -> bool:
        size = sizes.get(name)
        return size is not None and 2 * size[0] >= height and 2 * size[1] >= width

    return [node.name for node in inferred.graph.node if any(map(is_fine, [*node.input, *node.output]))]


def quantize_onnx(
    onnx_path: Path,
    out_path: Path,
    batches: Iterator[np.ndarray],
    precision: str,
    method: str,
    target: QuantTarget = QuantTarget.TENSORRT,
) -> Path:
    """Write ``onnx_path`` quantized to ``precision`` (int8, or fp8 for TensorRT) with ``target``'s recipe."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if target is QuantTarget.CPU and precision != "int8":
        raise QuantizationError(f"ONNX Runtime on CPU quantizes to int8 only, not {precision}")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}  # fmt: skip
    if target is QuantTarget.TENSORRT:
        kind = QuantType.QInt8 if precision == "int8" else QuantType.QFLOAT8E4M3FN
        recipe = dict(
            op_types_to_quantize=["Conv"], activation_type=kind, weight_type=kind,
            calibrate_method=methods[method] if precision == "int8" else CalibrationMethod.Distribution,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )  # fmt: skip
    else:
        graph = onnx.load(str(onnx_path))
        recipe = dict(
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=methods[method],
            nodes_to_exclude=sorted({*float_tail_nodes(graph), *fine_stage_nodes(graph)}),
            extra_options={"CalibMovingAverage": True},
        )  # fmt: skip
    chatter = io.StringIO()  # the calibrator prints progress to stdout, which belongs to --json output
    try:
        with contextlib.redirect_stdout(chatter), quiet_logger("root"):
            quantize_static(
                str(onnx_path), str(out_path), calibration_reader(batches), quant_format=QuantFormat.QDQ,
                per_channel=True, **recipe,
            )
    except LandmarkEdgeError:  # an unreadable calibration image: its own one-line message
        raise
    except Exception as error:  # noqa: BLE001 - the quantizer raises plain exceptions of many kinds
        raise QuantizationError(f"{onnx_path}: {precision} quantization failed ({first_line(error)})") from None
    return out_path


def quantize_for_cpu(graph: onnx.ModelProto, anatomy: Anatomy, calibration: Calibration) -> onnx.ModelProto:
    """An int8 copy of an exported graph for ONNX Runtime's CPU provider; its metadata says ``precision: int8``."""
    info = read_onnx_info(graph)
    with tempfile.TemporaryDirectory(prefix="landmark-edge-int8-") as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save(graph, str(source))
        batches = calibration_batches(calibration, anatomy)
        quantize_onnx(source, target, batches, "int8", calibration.method, QuantTarget.CPU)
        quantized = onnx.load(str(target))
    return attach_metadata(quantized, OnnxInfo.model_validate({**info.model_dump(), "precision": "int8"}))
