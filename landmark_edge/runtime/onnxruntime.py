"""ONNX Runtime backend: an exported graph on the CPU, CUDA or TensorRT execution provider.

ONNX Runtime quietly falls back to the CPU when a requested GPU provider cannot load (``onnxruntime`` installed
instead of ``onnxruntime-gpu``, CUDA libraries missing, no device). A deployment that asked for the GPU and got
the CPU runs far slower without a word, so after the session is made we compare the providers it really uses
with the ones asked for and refuse a silent fallback unless ``allow_fallback`` says it is acceptable.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from landmark_edge.anatomy import Anatomy
from landmark_edge.contracts import INPUT, OnnxInfo
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import BackendUnavailable, first_line
from landmark_edge.runtime.backend import BackendRequest, BuiltFor, GraphBackend, check_built_for
from landmark_edge.runtime.options import BackendOptions

class OrtOptions(BackendOptions):
    """The ``onnxruntime`` backend's ``--option`` keys."""

    threads: int = 0  # intra-op threads; 0 lets ONNX Runtime decide
    trt_engine_cache: Path | None = None  # TensorRT EP engine + timing cache folder (reused across runs)
    # In-memory int8 (weights, no exported graph): calibration images, how many, and the calibration method.
    calibration: Path | None = None
    count: int = 64  # as a deployment profile's calibration (export.profiles.Calibration)
    method: Literal["minmax", "entropy", "percentile"] = "minmax"

    def calibration_fields(self) -> dict[str, Any]:
        """In-memory int8 needs real images to calibrate on: ``calibration=DIR`` (``count=N``, ``method=...``)."""
        if self.calibration is None:
            raise BackendUnavailable(
                "onnxruntime int8: give calibration images (option calibration=DIR) or an int8 graph "
                "(landmark-edge export --onnx-precision int8 --calibration DIR)"
            )
        return {"images": self.calibration, "count": self.count, "method": self.method}


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


@dataclass
class OrtSettings:
    """Execution-provider choices. ``device`` is cpu, cuda[:N] or tensorrt[:N]; fp16 applies to TensorRT only."""

    device: str = "cpu"
    precision: str = "fp32"
    threads: int = 0  # intra-op threads; 0 lets ONNX Runtime decide
    max_batch_size: int = 32  # TensorRT EP optimization profile: 1 .. max, optimised for max
    trt_engine_cache: Path | None = None  # TensorRT EP engine + timing cache folder (reused across runs)
    allow_fallback: bool = False

    @classmethod
    def from_request(cls, request: BackendRequest) -> OrtSettings:
        options: OrtOptions = request.options
        return cls(
            device=request.device,
            precision=request.precision,
            threads=options.threads,
            max_batch_size=request.max_batch_size,
            trt_engine_cache=options.trt_engine_cache,
            allow_fallback=request.allow_fallback,
        )


def provider_list(settings: OrtSettings, grid_hw: tuple[int, int]) -> list[tuple[str, dict[str, Any]]]:
    """The (provider, options) list for a session, most preferred first; CPU always last to run leftover nodes."""
    kind, _, index = settings.device.partition(":")
    device_id = int(index or 0)
    if kind not in PROVIDERS:
        raise BackendUnavailable(f"onnxruntime: device '{settings.device}' unknown (use cpu, cuda[:N], tensorrt[:N])")
    allowed = {"tensorrt": ("fp32", "fp16"), "cuda": ("fp32",), "cpu": ("fp32", "int8")}[kind]
    if settings.precision not in allowed:
        raise BackendUnavailable(
            f"onnxruntime on {kind}: precision {settings.precision} not supported here ({', '.join(allowed)}); "
            "for int8/fp8 on a GPU build a TensorRT engine with `landmark-edge build`"
        )
    providers: list[tuple[str, dict[str, Any]]] = []
    if kind == "tensorrt":
        providers.append((PROVIDERS["tensorrt"], _tensorrt_options(settings, device_id, grid_hw)))
    if kind in ("cuda", "tensorrt"):
        providers.append((PROVIDERS["cuda"], {"device_id": device_id}))
    providers.append((PROVIDERS["cpu"], {}))
    return providers


def _tensorrt_options(settings: OrtSettings, device_id: int, grid_hw: tuple[int, int]) -> dict[str, Any]:
    height, width = grid_hw

    def shape(batch: int) -> str:
        return f"{INPUT}:{batch}x1x{height}x{width}"

    options: dict[str, Any] = {
        "device_id": device_id,
        "trt_fp16_enable": settings.precision == "fp16",
        "trt_profile_min_shapes": shape(1),
        "trt_profile_opt_shapes": shape(settings.max_batch_size),
        "trt_profile_max_shapes": shape(settings.max_batch_size),
    }
    if settings.trt_engine_cache is not None:
        options |= {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(settings.trt_engine_cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(settings.trt_engine_cache),
        }
    return options


def verify_providers(requested: list[str], used: list[str], allow_fallback: bool) -> None:
    """Refuse a session that dropped a requested GPU provider, in one line saying what happened and what to do."""
    import onnxruntime as ort

    missing = [p for p in requested if p != PROVIDERS["cpu"] and p not in used]
    if missing and not allow_fallback:
        raise BackendUnavailable(
            f"onnxruntime: asked for {', '.join(missing)} but the session runs on {', '.join(used)} "
            f"(available here: {', '.join(ort.get_available_providers())}); install the GPU build with "
            "`pip install 'landmark-edge[gpu]'` (it replaces onnxruntime) or pass --allow-fallback"
        )


def create_session(model: bytes | str | Path, settings: OrtSettings, grid_hw: tuple[int, int]):
    """An InferenceSession on the requested providers, verified to really use them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # the fallback is reported by verify_providers, not as a log warning
    # The CPU arena keeps its high-water mark and grows by powers of two: at batch 8 on the head grid it held 7 GB
    # after two batches (3.7 GB after one). Without it each run allocates what it needs and gives it back.
    options.enable_cpu_mem_arena = False
    providers = provider_list(settings, grid_hw)
    source = str(model) if isinstance(model, Path) else model
    ort.set_default_logger_severity(3)  # a dropped provider is reported once, below, not as log noise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as error:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
        raise BackendUnavailable(f"onnxruntime: cannot load the model ({first_line(error)})") from None
    verify_providers([name for name, _ in providers], session.get_providers(), settings.allow_fallback)
    return session


def create(request: BackendRequest) -> OnnxRuntimeBackend:
    """The ``onnxruntime`` registry entry's factory: the artifact when given, else the loader's graph of the weights."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailable("onnxruntime backend: onnxruntime is not installed (pip install onnxruntime)")
    from landmark_edge.contracts import read_onnx_info

    settings = OrtSettings.from_request(request)
    int8 = request.precision == "int8"
    if request.artifact is not None:
        info = read_onnx_info(request.artifact)
        built = BuiltFor("graph", info.anatomy, info.precision, None, "landmark-edge export")
        check_built_for(request.artifact, built, request.anatomy)  # any precision: the TensorRT EP casts to fp16
        if (info.precision == "int8") != int8:
            raise BackendUnavailable(
                f"onnxruntime: {request.artifact} is an {info.precision} graph; "
                f"run it with --precision {info.precision}"
            )
        session = create_session(request.artifact, settings, request.anatomy.grid_hw)
        return OnnxRuntimeBackend(session, info, request.anatomy, request.decode, settings.precision)
    calibration = request.options.calibration_fields() if int8 else None
    if request.onnx_loader is None:
        raise BackendUnavailable(
            "onnxruntime backend: give an exported graph (--artifact MODEL.onnx) or an ONNX loader for the "
            "weights (landmark_edge.backends.open_backend gives one)"
        )
    session = create_session(request.onnx_loader(calibration), settings, request.anatomy.grid_hw)
    info = OnnxInfo.from_props(session.get_modelmeta().custom_metadata_map)  # no onnx import: read the session's
    return OnnxRuntimeBackend(session, info, request.anatomy, request.decode, settings.precision)


class OnnxRuntimeBackend(GraphBackend):
    """Runs an exported graph in an InferenceSession; uses its in-graph decoder when it matches the request."""

    name = "onnxruntime"

    def __init__(
        self, session, info: OnnxInfo, anatomy: Anatomy, decode: DecodeMethod | str, precision: str | None = None
    ) -> None:
        super().__init__(info, anatomy, decode, precision)
        self.session = session

    def outputs(self, names: list[str], image: np.ndarray) -> list[np.ndarray]:
        return self.session.run(names, {INPUT: image})

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()
