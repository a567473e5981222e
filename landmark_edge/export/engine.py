"""The engine file: a small JSON header followed by TensorRT's serialized engine.

A serialized engine only runs on the TensorRT version and GPU it was built for (unless built version- or
hardware-compatible), and TensorRT's own error for a mismatch is a deserialization failure deep in its log.
The header lets the runtime compare first and say in one line what differs and how to rebuild; it also carries
the anatomy, grid and landmark names, so an engine file is self-describing like a weights file.

Layout: ``MAGIC`` (8 bytes), header length (uint32 little-endian), UTF-8 JSON header, engine bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from landmark_edge import __version__
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import LandmarkEdgeError, first_line
from landmark_edge.io.atomic import atomic_open

MAGIC = b"LMEDGE\x00\x01"
FORMAT_VERSION = 1


class EngineFileError(LandmarkEdgeError):
    """An engine file is unreadable or was built for another runtime or GPU."""


class EngineHeader(BaseModel):
    format_version: int = FORMAT_VERSION
    anatomy: str
    num_landmarks: int
    landmark_names: list[str]
    grid: tuple[int, int]  # (W, H)
    decode: DecodeMethod | None = None
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
    weights_sha256: str = ""
    landmark_edge_version: str = __version__


def write_engine(path: str | Path, header: EngineHeader, engine: bytes) -> Path:
    """Write header and engine atomically."""
    blob = header.model_dump_json().encode("utf-8")
    with atomic_open(path, "wb") as handle:
        handle.write(MAGIC + struct.pack("<I", len(blob)) + blob)
        handle.write(engine)
    return Path(path)


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


def check_header(path: str | Path, header: EngineHeader, tensorrt_version: str, gpu_name: str, capability: str) -> None:
    """Refuse an engine this runtime cannot run, naming what differs and how to rebuild.

    Without compatibility flags an engine needs the exact TensorRT version and the same compute capability
    (a different GPU model of the same capability is accepted, as TensorRT does). A version-compatible engine
    runs on the same or a later TensorRT of the same major version; a hardware-compatible one on any GPU the
    level allows.
    """
    problems = []
    built, here = _version(header.tensorrt_version), _version(tensorrt_version)
    if header.version_compatible:
        if built[0] != here[0] or here < built:
            problems.append(f"TensorRT {header.tensorrt_version} (version-compatible), runtime {tensorrt_version}")
    elif built != here:
        problems.append(f"TensorRT {header.tensorrt_version}, runtime {tensorrt_version}")
    if header.hardware_compatibility == "ampere_plus":
        if _version(capability) < (8, 0):
            problems.append(f"Ampere or newer GPUs, this GPU is {gpu_name} ({capability})")
    elif header.compute_capability != capability:
        problems.append(f"compute capability {header.compute_capability} ({header.gpu_name}), this GPU is "
                        f"{gpu_name} ({capability})")  # fmt: skip
    if problems:
        raise EngineFileError(
            f"{path}: built for {'; '.join(problems)}: rebuild it here with "
            f"`landmark-edge build MODEL.onnx --precision {header.precision} -o {Path(path).name}`"
        )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())
