"""Deployment profiles: one readable YAML file per target in the repository's ``export/`` folder, shipped in the wheel.

A profile says, for one deployment target, everything ``export`` and ``build`` would otherwise take as options:
the ONNX opset, whether landmarks are decoded in the graph, the precision, the batch range of the TensorRT
optimization profile, the workspace, calibration images for int8/fp8, and so on. Options given on the command
line override the profile. Loading validates every field (pydantic, unknown fields forbidden), so a typo is one
line naming the file and the field rather than a silently ignored setting.

A shipped profile names no data path: the calibration images of an int8/fp8 profile are the user's own X-rays,
given with ``--calibration`` (its ``calibration`` section sets only how many and how), and so are the validation
images of an OpenVINO int8 one (``--validation``; its ``accuracy_control`` section sets the bound and the recipe).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import LandmarkEdgeError, first_line

# setup.py maps the repository's export/ folder onto the package folder landmark_edge/profiles: the YAML files
# stay where people read and edit them, and a wheel carries them as package data. A checkout run from its source
# (PYTHONPATH, or an editable install, whose finder does not make that folder) reads export/ itself.
PACKAGED_PROFILES = "profiles"
CHECKOUT_PROFILES = Path(__file__).resolve().parents[2] / "export"

Precision = Literal["fp32", "fp16", "bf16", "int8", "fp8"]
QUANTIZED: tuple[str, ...] = ("int8", "fp8")
OPENVINO_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")


class ProfileError(LandmarkEdgeError):
    """A deployment profile cannot be found or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchRange(_Strict):
    """The TensorRT optimization profile on the batch axis (min <= opt <= max)."""

    min: int = Field(1, ge=1)
    opt: int = Field(1, ge=1)
    max: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> BatchRange:
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"needs min <= opt <= max, got {self.min}, {self.opt}, {self.max}")
        return self


class Calibration(_Strict):
    """Real images for int8/fp8 explicit quantization: the user chooses them (they must resemble deployment)."""

    # a folder or a glob pattern, relative to the current directory; a shipped profile leaves it out (--calibration)
    images: Path | None = None
    count: int = Field(64, ge=1)  # at most this many images, in sorted order
    method: Literal["minmax", "entropy", "percentile"] = "percentile"


class AccuracyControl(_Strict):
    """OpenVINO int8 bounded by landmark drift: NNCF's accuracy-controlled quantization returns layers to float
    until the landmarks on ``images`` move at most ``max_drift`` from the float model's.

    ``images`` are validation images (never the test set: the bound would be fitted to what it is judged on); a
    shipped profile leaves them out, like its calibration images: they are the user's own (``--validation``).
    ``max_drift`` is in the anatomy's unit, in original-image space (chest: px; head, hand: mm); None takes the
    anatomy's default (:data:`landmark_edge.export.openvino.DEFAULT_MAX_DRIFT`). ``range_estimator`` and
    ``fast_bias_correction`` were chosen by measurement (``benchmarks/results/openvino_int8.md``).
    """

    images: Path | None = None  # a folder or a glob, relative to the current directory; None: --validation
    count: int = Field(16, ge=1)  # at most this many images, in sorted order
    max_drift: float | None = Field(None, gt=0)
    ranking_images: int = Field(6, ge=1)  # images that rank the layers' contributions to the drift
    max_iterations: int = Field(12, ge=0)  # layer groups returned to float at most (bounds the run's time)
    range_estimator: Literal["minmax", "mean_minmax", "mean_quantile", "histogram"] = "minmax"
    fast_bias_correction: bool = True


class DeploymentProfile(_Strict):
    """One deployment target. ``export`` reads opset/decode/dynamic batch; ``build`` reads the rest."""

    description: str = ""
    # export
    opset: int = Field(18, ge=17, le=23)
    decode: DecodeMethod | None = None  # in-graph decoding method; None: the graph returns heatmaps only
    simplify: bool = True
    # int8: the exported graph itself is quantized for ONNX Runtime's CPU provider (needs `calibration`);
    # TensorRT builds quantize the fp32 graph themselves, by `precision` below.
    onnx_precision: Literal["fp32", "int8"] = "fp32"
    # The artifact written: an ONNX graph, or an OpenVINO IR (.xml + .bin) at `precision` fp32, bf16 (a precision
    # hint in the IR's metadata; weights stay fp32) or int8 (NNCF, with `calibration` and `accuracy_control`).
    format: Literal["onnx", "openvino"] = "onnx"
    accuracy_control: AccuracyControl | None = None
    # build (TensorRT)
    precision: Precision = "fp32"
    batch: BatchRange = BatchRange()
    workspace_mib: int = Field(1024, ge=16)
    optimization_level: int = Field(3, ge=0, le=5)
    timing_cache: Path | None = None
    dla_core: int | None = Field(None, ge=0)
    gpu_fallback: bool = True  # with a DLA core: layers DLA cannot run go to the GPU
    version_compatible: bool = False
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"
    calibration: Calibration | None = None

    @model_validator(mode="after")
    def _calibration_for_quantized(self) -> DeploymentProfile:
        if self.precision in QUANTIZED and self.calibration is None:
            raise ValueError(f"precision {self.precision} needs a calibration section (images to calibrate on)")
        if self.onnx_precision == "int8" and self.calibration is None:
            raise ValueError("onnx_precision int8 needs a calibration section (images to calibrate on)")
        if self.format == "openvino" and self.precision not in OPENVINO_PRECISIONS:
            raise ValueError(f"format openvino writes {', '.join(OPENVINO_PRECISIONS)} IRs, not {self.precision}")
        if self.format == "openvino" and self.precision == "int8" and self.accuracy_control is None:
            raise ValueError("an OpenVINO int8 IR needs an accuracy_control section (validation images)")
        return self


def profile_folder() -> Traversable:
    """The shipped profiles: the installed package's ``profiles`` folder, else the checkout's ``export/``."""
    packaged = resources.files("landmark_edge") / PACKAGED_PROFILES
    return packaged if packaged.is_dir() else CHECKOUT_PROFILES


def profile_names() -> list[str]:
    """Every shipped profile (each ``*.yaml`` of the profile folder)."""
    return sorted(entry.name.removesuffix(".yaml") for entry in profile_folder().iterdir()
                  if entry.name.endswith(".yaml"))  # fmt: skip


def resolve_profile_path(name_or_path: str | Path) -> Traversable:
    """A path to a YAML file, or the name of a shipped profile."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ProfileError(f"{path}: profile file not found")
        return path
    shipped = profile_folder() / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ProfileError(f"unknown profile '{name_or_path}': choose from {', '.join(profile_names())} or give a file")
    return shipped


def load_profile(name_or_path: str | Path) -> DeploymentProfile:
    """Load and validate a profile; any problem is one :class:`ProfileError` line naming the file and field."""
    path = resolve_profile_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ProfileError(f"{path}: not valid YAML ({first_line(error)})") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a mapping of fields, got {type(data).__name__}")
    return _validated(data, str(path))


def with_overrides(profile: DeploymentProfile, source: str, **overrides) -> DeploymentProfile:
    """``profile`` with command-line values (None = keep) applied and validated again, errors naming ``source``."""
    data = profile.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        if key.startswith("batch_"):
            data["batch"][key.removeprefix("batch_")] = value
        elif key == "calibration_images":
            data["calibration"] = {**(data.get("calibration") or {}), "images": value}
        elif key in ("validation_images", "max_drift"):
            field = "images" if key == "validation_images" else key
            data["accuracy_control"] = {**(data.get("accuracy_control") or {}), field: value}
        else:
            data[key] = value
    return _validated(data, f"{source} with command-line options")


def _validated(data: dict, source: str) -> DeploymentProfile:
    try:
        return DeploymentProfile.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(profile)"
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise ProfileError(f"{source}: field '{field}': {message}") from None
