"""Artifact contracts: what ``export`` writes into an ONNX graph, an engine file and a ``.pt2`` package, and what
``runtime`` reads back (Polygraphy's loader and runner agree on a format, never on each other's code).

Every artifact carries the same :class:`ArtifactInfo` (anatomy, landmark names, grid, decoder, precision,
preprocessing, spacing rule, weights hash), so any exported file says what it is and where it came from; each
format adds its own fields (:class:`OnnxInfo`, :class:`EngineHeader`, the ``.pt2`` keys of :func:`pt2_metadata`).
This module sits below both ``export/`` and ``runtime/``, so neither imports the other.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from landmark_edge import __version__
from landmark_edge.anatomy import Anatomy
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import LandmarkEdgeError, first_line

# The graph's tensor names: the z-scored input, the heatmaps and the in-graph decoder's outputs.
INPUT = "image"
HEATMAPS, LANDMARKS, CONFIDENCE = "heatmaps", "landmarks", "confidence"


class ArtifactError(LandmarkEdgeError):
    """An exported artifact is missing, not a landmark-edge file, or damaged."""


class EngineFileError(ArtifactError):
    """An engine file is unreadable or was built for another runtime or GPU."""


class ArtifactInfo(BaseModel):
    """The metadata every artifact carries, from the anatomy registry and the weights header."""

    anatomy: str
    num_landmarks: int
    landmark_names: list[str]
    grid: tuple[int, int]  # (W, H), as the anatomy registry writes it
    decode: DecodeMethod | None = None
    precision: str = "fp32"  # int8: quantized for ONNX Runtime's CPU provider (landmark_edge.export.quantize)
    preprocessing: str = ""
    spacing_rule: str = ""
    weights_sha256: str = ""
    landmark_edge_version: str = __version__

    def to_props(self) -> dict[str, str]:
        """Flat string key/values (ONNX metadata_props, AOTInductor metadata): JSON for non-strings."""
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in self.model_dump(mode="json").items()}

    @classmethod
    def from_props(cls, props: dict[str, str]):
        def value(key: str):
            text = props[key]
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return text

        return cls.model_validate({key: value(key) for key in cls.model_fields if key in props})


def artifact_info(
    anatomy: Anatomy,
    *,
    weights_sha256: str = "",
    preprocessing: str = "",
    decode: DecodeMethod | None = None,
    precision: str = "fp32",
) -> dict:
    """The one metadata dict written into every artifact (fields of :class:`ArtifactInfo`)."""
    return ArtifactInfo(
        anatomy=anatomy.name,
        num_landmarks=anatomy.num_landmarks,
        landmark_names=[anatomy.landmark_name(i) for i in range(anatomy.num_landmarks)],
        grid=anatomy.grid,
        decode=decode,
        precision=precision,
        preprocessing=preprocessing,
        spacing_rule=anatomy.spacing_rule.value,
        weights_sha256=weights_sha256,
    ).model_dump()


# --- ONNX: metadata_props ------------------------------------------------------------------------------------


class OnnxInfo(ArtifactInfo):
    """The contract an exported graph carries in its metadata_props (read by the ORT backend and ``build``)."""

    input: str = f"{INPUT}: z-scored (B, 1, H, W) float32 (per-image mean 0, std 1, fp32)"
    outputs: list[str]
    opset: int


def read_onnx_info(model) -> OnnxInfo:
    """The metadata of an exported graph (a path or an ``onnx.ModelProto``); a graph without it is one line."""
    name = str(model) if isinstance(model, (str, Path)) else "ONNX model"
    if isinstance(model, (str, Path)):
        import onnx

        if not Path(model).is_file():
            raise ArtifactError(f"{model}: ONNX file not found")
        model = onnx.load(str(model), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if "anatomy" not in props:
        raise ArtifactError(f"{name}: no landmark-edge metadata (export it with `landmark-edge export`)")
    return OnnxInfo.from_props(props)


# --- OpenVINO IR: rt_info ---------------------------------------------------------------------------------------
# An IR (.xml + .bin) carries OnnxInfo's props in its rt_info section IR_SECTION; an ONNX graph read by OpenVINO
# keeps its metadata_props under ONNX_SECTION. IR_PRECISION_HINT (in IR_SECTION) is the CPU plugin's
# INFERENCE_PRECISION_HINT the IR was validated with (f32, bf16), so other OpenVINO tools can read it too.
IR_SECTION, ONNX_SECTION, IR_PRECISION_HINT = "landmark_edge", "framework", "inference_precision_hint"


# OpenVINO's element type names as request precisions (runtime graph: u8/i8 are int8 convolutions).
ELEMENT_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}
# Layers whose runtime precision says what the network computed in (not reorders, shape ops or the decoder's
# integer index arithmetic).
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")


def layer_precisions(compiled) -> dict[str, str]:
    """``{layer: precision}`` of the compute layers of an OpenVINO compiled model as they ran (its runtime graph's
    ``runtimePrecision`` per layer; a fused layer is named by the first original layer in it, its convolution)."""
    layers = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = {key: value.astype(str) for key, value in op.get_rt_info().items()}
        if info.get("layerType") in COMPUTE_LAYERS and "runtimePrecision" in info:
            element = info["runtimePrecision"].lower()
            name = (info.get("originalLayersNames") or op.get_friendly_name()).split(",")[0]
            layers[name] = ELEMENT_PRECISIONS.get(element, element)
    return layers


def ran_precision(layers: dict[str, str]) -> str:
    """What a run computed in, from :func:`layer_precisions`: ``fp32``, ``bf16``, or a mix such as
    ``int8+fp32`` (most common first); ``unknown`` when the runtime graph names no compute layer."""
    counts = Counter(layers.values())
    return "+".join(name for name, _ in counts.most_common()) or "unknown"


# --- engine file: MAGIC, header length, JSON header, TensorRT's serialized engine -------------------------------
# A serialized engine only runs on the TensorRT version and GPU it was built for (unless built version- or
# hardware-compatible), and TensorRT's own error for a mismatch is a deserialization failure deep in its log.
# The header lets the runtime compare first and say in one line what differs and how to rebuild.

MAGIC = b"LMEDGE\x00\x01"
FORMAT_VERSION = 1


class EngineHeader(ArtifactInfo):
    format_version: int = FORMAT_VERSION
    outputs: list[str]
    precision: str
    batch: tuple[int, int, int]  # optimization profile (min, opt, max)
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    dla_core: int | None = None
    version_compatible: bool = False
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"
    onnx_sha256: str


def engine_file_bytes(header: EngineHeader, engine: bytes) -> bytes:
    """The file's bytes: ``MAGIC`` (8 bytes), header length (uint32 little-endian), UTF-8 JSON header, engine."""
    blob = header.model_dump_json().encode("utf-8")
    return MAGIC + struct.pack("<I", len(blob)) + blob + engine


def read_engine(path: str | Path) -> tuple[EngineHeader, bytes]:
    """Header and engine bytes; a file that is not a landmark-edge engine is one line saying so."""
    path = Path(path)
    if not path.is_file():
        raise EngineFileError(f"{path}: engine file not found")
    data = path.read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise EngineFileError(f"{path}: not a landmark-edge engine file (build one with `landmark-edge build`)")
    (size,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = EngineHeader.model_validate(json.loads(data[start : start + size]))
    except (ValueError, ValidationError) as error:
        raise EngineFileError(f"{path}: damaged engine header ({first_line(error)})") from None
    if header.format_version > FORMAT_VERSION:
        raise EngineFileError(f"{path}: engine format v{header.format_version} is newer than this landmark-edge")
    return header, data[start + size :]


# --- .pt2 (AOTInductor): the package's string metadata --------------------------------------------------------

PT2_FORMAT = "landmark-edge-aoti"
# The precisions a torch network computes in, by the names requests use, and their torch dtype names.
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def dtype_precision(dtype: str) -> str:
    """The request name of a torch dtype name (``float16`` -> ``fp16``); an unknown one is returned as is."""
    return {name: precision for precision, name in TORCH_DTYPES.items()}.get(dtype, dtype)

PT2_FORMAT_VERSION = "1"


def pt2_metadata(
    info: dict, *, height: int, width: int, dtype: str, max_batch_size: int, torch_version: str
) -> dict[str, str]:
    """The package's metadata: :func:`artifact_info`'s fields plus what the loader checks (all strings)."""
    return {
        **ArtifactInfo.model_validate(info).to_props(),
        "format": PT2_FORMAT,
        "format_version": PT2_FORMAT_VERSION,
        "height": str(height),
        "width": str(width),
        "dtype": dtype,
        "max_batch_size": str(max_batch_size),
        "torch_version": torch_version,
    }


# --- run metadata: what made a result ---------------------------------------------------------------------------

RUN_FORMAT_VERSION = 1


class RunInfo(BaseModel):
    """The one record of what made a result, carried by every ``infer`` output (a ``run`` object in JSON/JSONL and
    each ``--out-dir`` file, ``run_*`` columns in CSV/Parquet) and by bench rows: the weights (sha256, the
    artifact's recorded one when an artifact ran), the artifact run (its sha256: a user's ``--artifact``; None when
    the graph was made from the weights), the backend and the precision that really ran (a backend may learn it
    from its runtime: OpenVINO reads it back from the compiled model), and the package and record versions.
    ``format_version`` goes up when a field changes meaning or goes away; new fields keep old readers working."""

    format_version: int = RUN_FORMAT_VERSION
    landmark_edge_version: str = __version__
    backend: str
    precision: str
    weights_sha256: str | None = None
    artifact_sha256: str | None = None

    def columns(self) -> dict[str, object]:
        """The record as flat ``run_<field>`` columns (CSV and Parquet rows)."""
        return {f"run_{key}": value for key, value in self.model_dump().items()}


RUN_COLUMNS = [f"run_{name}" for name in RunInfo.model_fields]
