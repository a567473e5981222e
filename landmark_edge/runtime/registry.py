"""Backends by name: ``infer`` and ``bench`` create them here and never branch on a backend's name.

Each entry's factory imports its libraries only when called, so a missing optional library (onnxruntime-gpu,
tensorrt, triton) makes that backend *unavailable with a reason*, never an import error elsewhere.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from landmark_edge.anatomy import Anatomy
from landmark_edge.contracts import TORCH_DTYPES
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import BackendUnavailable
from landmark_edge.runtime.backend import Backend, BuiltFor, check_built_for
from landmark_edge.runtime.options import BackendOptions

__all__ = ["BackendRequest", "BackendUnavailable", "backend_names", "create_backend", "register"]


@dataclass
class BackendRequest:
    """What a caller asks of a backend. ``artifact`` is an exported file (ONNX, engine, .pt2) where one is used."""

    weights: Path | None  # None when the artifact carries the network (exported graph, engine, .pt2)
    anatomy: Anatomy
    decode: DecodeMethod = DecodeMethod.SUBPIXEL
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8 (where the backend supports it)
    max_batch_size: int = 32
    artifact: Path | None = None
    options: dict[str, Any] | BackendOptions = field(default_factory=dict)  # the backend's typed set once created
    require_fit: bool = True  # refuse an anatomy the weights mark unfit; evaluate measures it anyway
    # Makes the ONNX graph of ``weights`` when no artifact is given (export's job, passed in Polygraphy-style:
    # ``landmark_edge.export.loaders.OnnxFromWeights``): called with int8 calibration fields, or None for float.
    onnx_loader: Callable[[dict[str, Any] | None], Any] | None = None
    progress: Callable[[str], None] | None = None  # one line per step of a long build (the compiled backend's)


Factory = Callable[[BackendRequest], Backend]


@dataclass(frozen=True)
class BackendSpec:
    name: str
    description: str
    factory: Factory
    # The backend's option set, imported when it is first used (None: the factory reads the raw dict itself).
    options: Callable[[], type[BackendOptions]] | None = None


_REGISTRY: dict[str, BackendSpec] = {}


def register(
    name: str, description: str, options: Callable[[], type[BackendOptions]] | None = None
) -> Callable[[Factory], Factory]:
    def decorate(factory: Factory) -> Factory:
        _REGISTRY[name] = BackendSpec(name, description, factory, options)
        return factory

    return decorate


def backend_names() -> list[str]:
    return list(_REGISTRY)


def create_backend(name: str, request: BackendRequest | None = None, /, **keywords: Any) -> Backend:
    """Build backend ``name`` from a request or its keywords; :class:`BackendUnavailable` says why one cannot run.

    ``create_backend("onnxruntime", weights=path, anatomy=chest, precision="fp32", onnx_loader=...)`` is the
    one way every command makes a backend.
    """
    if name not in _REGISTRY:
        raise BackendUnavailable(f"unknown backend '{name}': choose from {', '.join(_REGISTRY)}")
    if request is None:
        request = BackendRequest(**keywords)
    elif keywords:
        raise TypeError("create_backend: give a BackendRequest or its keywords, not both")
    spec = _REGISTRY[name]
    if spec.options is not None:  # strict: an unknown key is refused before anything is loaded
        request = replace(request, options=spec.options().parse(name, request.options))
    backend = spec.factory(request)
    backend.made_from(request.weights, request.artifact)  # for its run record (Backend.run_info)
    return backend


# ``infer``'s backend for fp32 on the CPU: whichever exact backend makes the whole cached one-image ``infer`` call
# fastest (benchmarks/infer_wall.py, run on a quiet machine). Both run the same cached graph within 1e-4 of torch;
# switching is this one line ("openvino" falls back to onnxruntime where OpenVINO is not installed).
CPU_FP32_DEFAULT = "onnxruntime"


def default_backend(device: str, precision: str, artifact: Path | None) -> str:
    """``infer``'s backend when none is named: :data:`CPU_FP32_DEFAULT` for fp32 on the CPU, eager torch otherwise.

    On 2 CPU cores ONNX Runtime runs the network 5-6x faster than eager torch and equals it within 1e-4, and its
    graph is cached per weights (:class:`~landmark_edge.export.loaders.OnnxFromWeights`), so a one-image ``infer``
    starts in a fraction of eager torch's time. torch stays the reference for ``evaluate`` and ``bench``.
    """
    if device != "cpu" or precision != "fp32" or artifact is not None:
        return "torch"
    return CPU_FP32_DEFAULT if importlib.util.find_spec(CPU_FP32_DEFAULT) is not None else "onnxruntime"


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse options backend ``name`` does not know, before a command loads weights or images."""
    if name not in _REGISTRY:
        raise BackendUnavailable(f"unknown backend '{name}': choose from {', '.join(_REGISTRY)}")
    spec = _REGISTRY[name]
    if spec.options is not None:
        spec.options().parse(name, options)


def _no_options() -> type[BackendOptions]:
    return BackendOptions


def _compile_options() -> type[BackendOptions]:
    from landmark_edge.runtime.compiled import CompileOptions

    return CompileOptions


def _ort_options() -> type[BackendOptions]:
    from landmark_edge.runtime.onnxruntime import OrtOptions

    return OrtOptions


@register("torch", "eager PyTorch (the reference at fp32); --precision fp16/bf16 casts the model", _no_options)
def _torch_backend(request: BackendRequest) -> Backend:
    from landmark_edge.runtime.eager import TorchBackend
    from landmark_edge.weights import load_weights

    dtype = _torch_dtype("torch", request)
    model, _ = load_weights(_weights("torch", request), request.anatomy.name, require_fit=request.require_fit)
    return TorchBackend(model, request.anatomy, request.decode, request.device, dtype)


def _weights(backend: str, request: BackendRequest) -> Path:
    """The weights file of a backend that builds from weights (``infer`` leaves it None beside an artifact)."""
    if request.weights is None or request.artifact is not None:
        raise BackendUnavailable(
            f"{backend} backend: runs --weights; an exported artifact is for the onnxruntime, tensorrt and aoti backends"
        )
    return request.weights


def torch_dtype(precision: str):
    """``fp32``/``fp16``/``bf16`` as a torch dtype."""
    import torch

    if precision not in TORCH_DTYPES:
        raise BackendUnavailable(f"precision {precision} not supported by PyTorch backends (fp32, fp16, bf16)")
    return getattr(torch, TORCH_DTYPES[precision])


def _torch_dtype(backend: str, request: BackendRequest):
    """The request's precision as a torch dtype, after checking that its device exists here."""
    import torch

    if request.device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"{backend} backend: device {request.device} asked for but CUDA is not available")
    return torch_dtype(request.precision)


@register(
    "compiled",
    "the inference rewrite (BN folded, fused separable/dilated stages, Triton kernels on CUDA) under "
    "torch.compile; CUDA graphs per batch bucket on CUDA",
    _compile_options,
)
def _compiled_backend(request: BackendRequest) -> Backend:
    from landmark_edge.runtime.compiled import CompiledBackend
    from landmark_edge.weights import load_weights

    dtype = _torch_dtype("compiled", request)
    model, _ = load_weights(
        _weights("compiled", request), request.anatomy.name, require_fit=request.require_fit
    )
    return CompiledBackend(
        model, request.anatomy, request.decode, request.device, dtype, request.options, request.max_batch_size,
        request.progress,
    )


@register(
    "aoti", "a .pt2 AOTInductor package from `landmark-edge compile` (--artifact); --precision and the batch "
    "size within what it was compiled for", _no_options
)
def _aoti_backend(request: BackendRequest) -> Backend:
    from landmark_edge.runtime.compiled import AOTIBackend, load_pt2

    if request.artifact is None:
        raise BackendUnavailable("aoti backend: pass the package with --artifact (make one: landmark-edge compile)")
    _torch_dtype("aoti", request)
    package = load_pt2(request.artifact, request.device)
    built = BuiltFor("package", package.anatomy.name, package.precision, package.max_batch_size, "landmark-edge compile")
    check_built_for(request.artifact, built, request.anatomy, request.precision, request.max_batch_size)
    return AOTIBackend(package, request.decode, request.device)


@register(
    "onnxruntime",
    "ONNX Runtime on --device cpu, cuda[:N] (CUDA EP) or tensorrt[:N] (TensorRT EP, fp32/fp16); runs an exported "
    ".onnx given as the artifact, else the weights exported in memory",
    _ort_options,
)
def _onnxruntime_backend(request: BackendRequest) -> Backend:
    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailable("onnxruntime backend: onnxruntime is not installed (pip install onnxruntime)")
    from landmark_edge.contracts import OnnxInfo, read_onnx_info
    from landmark_edge.runtime.onnxruntime import OnnxRuntimeBackend, OrtSettings, create_session

    settings = OrtSettings.from_options(request.device, request.precision, request.max_batch_size, request.options)
    int8 = request.precision == "int8"
    if request.artifact is not None:
        info = read_onnx_info(request.artifact)
        if (info.precision == "int8") != int8:
            raise BackendUnavailable(
                f"onnxruntime: {request.artifact} is an {info.precision} graph; run it with --precision {info.precision}"
            )
        session = create_session(request.artifact, settings, request.anatomy.grid_hw)
        return OnnxRuntimeBackend(session, info, request.anatomy, request.decode, settings.precision)
    calibration = request.options.calibration_fields() if int8 else None
    if request.onnx_loader is None:
        raise BackendUnavailable(
            "onnxruntime backend: give an exported graph (--artifact MODEL.onnx) or an ONNX loader for the "
            "weights (landmark_edge.export.loaders.OnnxFromWeights)"
        )
    session = create_session(request.onnx_loader(calibration), settings, request.anatomy.grid_hw)
    info = OnnxInfo.from_props(session.get_modelmeta().custom_metadata_map)  # no onnx import: read the session's
    return OnnxRuntimeBackend(session, info, request.anatomy, request.decode, settings.precision)


def _ov_options() -> type[BackendOptions]:
    from landmark_edge.runtime.openvino import OvOptions

    return OvOptions


@register(
    "openvino",
    "OpenVINO on --device cpu (gpu, npu where installed): the weights' cached ONNX graph, an exported .onnx or an "
    "IR (.xml) as the artifact; --precision fp32 (f32 hint set: exact), bf16, int8 (an IR from "
    "`export --profile cpu-openvino-int8`)",
    _ov_options,
)
def _openvino_backend(request: BackendRequest) -> Backend:
    if importlib.util.find_spec("openvino") is None:
        raise BackendUnavailable("openvino backend: openvino is not installed (pip install 'landmark-edge[openvino]')")
    from landmark_edge.runtime.openvino import create

    return create(request)


@register(
    "tensorrt",
    "TensorRT engine from `landmark-edge build`, given as the artifact; --device cuda[:N]; --precision and the "
    "batch size within what the engine was built for",
    _no_options,
)
def _tensorrt_backend(request: BackendRequest) -> Backend:
    from landmark_edge.runtime.tensorrt import TensorRTBackend

    if request.artifact is None:
        raise BackendUnavailable("tensorrt backend: needs an engine file (--artifact MODEL.engine from `landmark-edge build`)")
    kind, _, index = request.device.partition(":")
    if kind != "cuda":
        raise BackendUnavailable(f"tensorrt backend: runs on cuda[:N], not {request.device}")
    return TensorRTBackend(request.artifact, request.anatomy, request.decode, int(index or 0),
                           precision=request.precision, max_batch_size=request.max_batch_size)  # fmt: skip
