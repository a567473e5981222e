"""Backends by name, each with its capability entry: the one place that says what every backend can run.

An entry (:class:`BackendSpec`) is declared here as plain data: the factory and the option set are named as
``"module:attribute"`` and imported only when the backend is opened, so a missing optional library
(onnxruntime-gpu, tensorrt, triton) makes that backend *unavailable with a reason*, never an import error
elsewhere, and reading the entries (help texts, errors, bench's environment block) loads no backend library.
Its capabilities (artifact suffixes, precisions, devices, where decoding happens, its library) are what help
texts, the registry's errors, bench and the artifact checks read: none of them lists backends by hand.

Adding a backend: write its module in ``runtime/`` with a factory ``create(request) -> Backend`` (and, if it
takes ``--option`` keys, a :class:`~landmark_edge.runtime.options.BackendOptions` subclass), then add one
:class:`BackendSpec` to ``_ENTRIES`` below. Commands, bench and the inference session need no change.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import BackendUnavailable
from landmark_edge.runtime.backend import Backend, BackendRequest
from landmark_edge.runtime.options import BackendOptions

__all__ = [
    "ArtifactKind",
    "BackendChoice",
    "BackendRequest",
    "BackendSpec",
    "BackendUnavailable",
    "all_precisions",
    "artifact_backends",
    "backend_for_artifact",
    "backend_names",
    "backend_spec",
    "backend_specs",
    "check_choice",
    "check_options",
    "create_backend",
    "default_backend",
    "register",
]


@dataclass(frozen=True)
class ArtifactKind:
    """The exported files a backend runs: their suffixes, what they are called, and which command makes one."""

    suffixes: tuple[str, ...]  # ".onnx", ".engine", ...
    kind: str  # graph, engine, package: the word errors use
    made_by: str  # the command that makes one, for the errors' "make one: ..."
    required: bool  # False: without an artifact the backend runs the weights


@dataclass(frozen=True)
class BackendSpec:
    """One backend's registry entry: how to make it and what it can run (declared without importing it)."""

    name: str
    description: str
    factory: str  # "module:function" taking a BackendRequest, returning a Backend
    precisions: tuple[str, ...]
    devices: tuple[str, ...]  # device kinds; ":N" after one picks the device index (cuda:1)
    # graph: an artifact's own decoder when it matches (else the heatmaps are decoded after it); host: always
    # the one torch decoder after the network, on the backend's device
    decode: Literal["graph", "host"]
    library: str  # the module whose ``__version__`` is the backend's library version (bench's environment block)
    artifact: ArtifactKind | None = None  # None: runs --weights only
    options: str | None = None  # "module:Class" of its --option set; None: it takes no options

    def option_set(self) -> type[BackendOptions]:
        return BackendOptions if self.options is None else _attribute(self.options)

    def summary(self) -> str:
        """One line of capabilities for help texts: precisions, devices, artifact and where it decodes."""
        devices = "/".join(f"{kind}[:N]" if kind != "cpu" else kind for kind in self.devices)
        artifact = "" if self.artifact is None else f"; {'/'.join(self.artifact.suffixes)}"
        where = "in the graph" if self.decode == "graph" else "after the network"
        return f"{self.name} ({'/'.join(self.precisions)}; {devices}{artifact}; decodes {where})"


_ENTRIES = (
    BackendSpec(
        "torch", "eager PyTorch (the reference at fp32); --precision fp16/bf16 casts the model",
        factory="landmark_edge.runtime.eager:create", precisions=("fp32", "fp16", "bf16"), devices=("cpu", "cuda"),
        decode="host", library="torch",
    ),
    BackendSpec(
        "compiled", "the inference rewrite (BN folded, fused separable/dilated stages, Triton kernels on CUDA) "
        "under torch.compile; CUDA graphs per batch bucket on CUDA",
        factory="landmark_edge.runtime.compiled:create", precisions=("fp32", "fp16", "bf16"),
        devices=("cpu", "cuda"), decode="host", library="torch",
        options="landmark_edge.runtime.compiled:CompileOptions",
    ),
    BackendSpec(
        "aoti", "a .pt2 AOTInductor package from `landmark-edge compile` (--artifact); --precision and the batch "
        "size within what it was compiled for",
        factory="landmark_edge.runtime.compiled:create_aoti", precisions=("fp32", "fp16", "bf16"),
        devices=("cpu", "cuda"), decode="host", library="torch",
        artifact=ArtifactKind((".pt2",), "package", "landmark-edge compile", required=True),
    ),
    BackendSpec(
        "onnxruntime", "ONNX Runtime on --device cpu, cuda[:N] (CUDA EP) or tensorrt[:N] (TensorRT EP, fp32/fp16); "
        "runs an exported .onnx given as the artifact, else the weights exported in memory",
        factory="landmark_edge.runtime.onnxruntime:create", precisions=("fp32", "fp16", "int8"),
        devices=("cpu", "cuda", "tensorrt"), decode="graph", library="onnxruntime",
        artifact=ArtifactKind((".onnx",), "graph", "landmark-edge export", required=False),
        options="landmark_edge.runtime.onnxruntime:OrtOptions",
    ),
    BackendSpec(
        "openvino", "OpenVINO on --device cpu (gpu, npu where installed): the weights' cached ONNX graph, an exported "
        ".onnx or an IR (.xml) as the artifact; --precision fp32 (f32 hint set: exact), bf16, int8 (an IR from "
        "`export --profile cpu-openvino-int8`)",
        factory="landmark_edge.runtime.openvino:create", precisions=("fp32", "bf16", "int8"),
        devices=("cpu", "gpu", "npu"), decode="graph", library="openvino",
        artifact=ArtifactKind((".xml", ".onnx"), "IR", "landmark-edge export --to openvino", required=False),
        options="landmark_edge.runtime.openvino:OvOptions",
    ),
    BackendSpec(
        "tensorrt", "TensorRT engine from `landmark-edge build`, given as the artifact; --device cuda[:N]; "
        "--precision and the batch size within what the engine was built for",
        factory="landmark_edge.runtime.tensorrt:create", precisions=("fp32", "fp16", "bf16", "int8", "fp8"),
        devices=("cuda",), decode="graph", library="tensorrt",
        artifact=ArtifactKind((".engine", ".plan"), "engine", "landmark-edge build", required=True),
    ),
)  # fmt: skip
_REGISTRY: dict[str, BackendSpec] = {spec.name: spec for spec in _ENTRIES}


def register(spec: BackendSpec) -> BackendSpec:
    """Add (or replace) an entry at run time: a plugin's or a test's backend, declared like the built-in ones."""
    _REGISTRY[spec.name] = spec
    return spec


def backend_names() -> list[str]:
    return list(_REGISTRY)


def backend_specs() -> list[BackendSpec]:
    return list(_REGISTRY.values())


def backend_spec(name: str) -> BackendSpec:
    """The entry of backend ``name``; an unknown name is one line listing the known ones."""
    if name not in _REGISTRY:
        raise BackendUnavailable(f"unknown backend '{name}': choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def all_precisions() -> list[str]:
    """Every precision some backend takes, in the order the entries first name them (help's choices)."""
    return list(dict.fromkeys(p for spec in _REGISTRY.values() for p in spec.precisions))


def artifact_backends() -> list[BackendSpec]:
    return [spec for spec in _REGISTRY.values() if spec.artifact is not None]


def backend_for_artifact(path: Path) -> str | None:
    """The backend an unnamed ``--artifact`` goes to (bench routes with it): the first entry that reads ``path``'s
    suffix, so a suffix several backends read (``.onnx``: onnxruntime, then openvino) keeps its first reader."""
    suffix = Path(path).suffix.lower()
    found = [spec.name for spec in artifact_backends() if suffix in spec.artifact.suffixes]
    return found[0] if found else None


@dataclass(frozen=True)
class BackendChoice:
    """The backend arguments a user gives (``--backend``, ``--artifact``, ``--precision``, ``--device``,
    ``--decode``, ``--option``, ``--allow-fallback``): parsed once by the command, same meaning in every one.
    :func:`landmark_edge.backends.open_backend` adds the job's weights, anatomy and batch size."""

    backend: str
    artifact: Path | None = None
    precision: str = "fp32"
    device: str = "cpu"
    decode: DecodeMethod = DecodeMethod.SUBPIXEL
    options: dict[str, Any] = field(default_factory=dict)  # this backend's --option values
    allow_fallback: bool = False


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse options backend ``name`` does not know, before a command loads weights or images."""
    backend_spec(name).option_set().parse(name, options)


def check_choice(choice: BackendChoice) -> None:
    """Everything the capability entry can refuse before anything is loaded: an unknown backend or option, a
    precision or device it does not run, an artifact it cannot read or one it needs and did not get."""
    spec = backend_spec(choice.backend)
    spec.option_set().parse(spec.name, choice.options)
    _check_capabilities(spec, choice.precision, choice.device, choice.artifact)


def _check_capabilities(spec: BackendSpec, precision: str, device: str, artifact: Path | None) -> None:
    name = spec.name
    if precision not in spec.precisions:
        raise BackendUnavailable(f"{name} backend: precision {precision} not supported ({', '.join(spec.precisions)})")
    kind = device.partition(":")[0]
    if kind not in spec.devices:
        runs_on = ", ".join(d if d == "cpu" else f"{d}[:N]" for d in spec.devices)
        raise BackendUnavailable(f"{name} backend: runs on {runs_on}, not {device}")
    if spec.artifact is None and artifact is not None:
        others = [s.name for s in artifact_backends()]
        raise BackendUnavailable(
            f"{name} backend: runs --weights; an exported artifact is for the {_and(others)} backends"
        )
    if spec.artifact is not None and artifact is None and spec.artifact.required:
        raise BackendUnavailable(
            f"{name} backend: pass the {spec.artifact.kind} with --artifact (make one: {spec.artifact.made_by})"
        )
    owner = None if artifact is None else backend_for_artifact(artifact)
    reads = spec.artifact is not None and artifact is not None and Path(artifact).suffix.lower() in spec.artifact.suffixes
    if owner is not None and not reads:  # another backend's kind of file (an odd suffix is left to the loader)
        raise BackendUnavailable(f"{artifact}: a {owner} file; run it with --backend {owner}, not {name}")


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def create_backend(name: str, request: BackendRequest) -> Backend:
    """Build backend ``name`` for a request; :class:`BackendUnavailable` says why one cannot run.

    The runtime's own entry point (tests of a backend use it); every other caller opens backends through
    :func:`landmark_edge.backends.open_backend`, which adds export's ONNX loader.
    """
    spec = backend_spec(name)
    # strict: an unknown key is refused before anything is loaded
    request = replace(request, options=spec.option_set().parse(name, request.options))
    _check_capabilities(spec, request.precision, request.device, request.artifact)
    factory: Callable[[BackendRequest], Backend] = _attribute(spec.factory)
    backend = factory(request)
    backend.made_from(request.weights, request.artifact)  # for its run record (Backend.run_info)
    return backend


# ``infer``'s backend for fp32 on the CPU: whichever exact backend makes the whole cached one-image ``infer`` call
# fastest (benchmarks/infer_wall.py, run on a quiet machine). Both run the same cached graph within 1e-4 of torch;
# switching is this one line ("openvino" falls back to onnxruntime where OpenVINO is not installed).
CPU_FP32_DEFAULT = "onnxruntime"


def default_backend(device: str, precision: str, artifact: Path | None) -> str:
    """``infer``'s backend when none is named: :data:`CPU_FP32_DEFAULT` for fp32 on the CPU, eager torch otherwise.

    On a CPU ONNX Runtime runs the network several times faster than eager torch (the record:
    ``benchmarks/results/cpu-2core-chest/bench.md``) and equals it within 1e-4, and its graph is cached per
    weights (:class:`~landmark_edge.export.loaders.OnnxFromWeights`), so a one-image ``infer`` starts in a fraction
    of eager torch's time (``benchmarks/results/cold_start.md``). It also beats OpenVINO f32 on a one-image call,
whose compile costs more than its faster network saves (``benchmarks/results/infer_wall.md``). torch stays the
reference for ``evaluate`` and ``bench``.
    """
    if device != "cpu" or precision != "fp32" or artifact is not None:
        return "torch"
    return CPU_FP32_DEFAULT if importlib.util.find_spec(CPU_FP32_DEFAULT) is not None else "onnxruntime"


def _attribute(reference: str) -> Any:
    """``"package.module:name"`` imported now (an entry names its factory and options without importing them)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
