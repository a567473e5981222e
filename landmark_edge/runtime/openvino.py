"""OpenVINO backend: the cached ONNX graph of the weights, an exported ``.onnx``, or an IR (``.xml`` + ``.bin``).

Three things OpenVINO does quietly that this module makes explicit:

* **Precision.** The CPU plugin runs bf16 by itself on CPUs with AVX512_BF16 (and AMX) unless the f32
  precision hint is set, so ``fp32`` sets ``INFERENCE_PRECISION_HINT: f32`` every time. What actually ran is read
  back per layer from the compiled model's runtime graph (``runtimePrecision``), never the echoed hint: a bf16
  request on a CPU without bf16 runs f32, and the run record says so (``Backend.run_info().precision``).
* **The compiled-model cache.** ``CACHE_DIR`` is a verified folder entry of the project's cache
  (:func:`landmark_edge.io.cache.cached_folder`), one per OpenVINO version, so a blob is checked before reuse.
* **The AMD guardrail.** The CPU plugin of OpenVINO 2025.3-2026.1 crashed with SIGFPE inside ``compile_model``
  on some AMD EPYC (Zen 4) machines in containers (openvinotoolkit/openvino#35943): a signal no Python code can
  catch. The first compile on a machine is therefore tried in a subprocess (:func:`probe`); the result is kept per
  machine and OpenVINO version, and a failure is one line naming the fallback (``--backend onnxruntime``).

Running needs only ``openvino`` (no torch unless the graph lacks the decoder asked for, no onnx).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np

from landmark_edge.anatomy import Anatomy
from landmark_edge.contracts import INPUT, IR_SECTION, ONNX_SECTION, OnnxInfo, layer_precisions, ran_precision
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import BackendUnavailable, first_line
from landmark_edge.io.atomic import atomic_write_text
from landmark_edge.io.cache import cache_dir, cached_folder
from landmark_edge.runtime.backend import BackendRequest, BuiltFor, GraphBackend, check_built_for
from landmark_edge.runtime.options import BackendOptions

PRECISIONS = ("fp32", "bf16", "int8")
# The CPU plugin's hint per request: an int8 IR runs its quantized layers in int8 and the rest (the heatmap
# product and decoder among them) at this hint, f32.
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
FALLBACK = "--backend onnxruntime"


class OvOptions(BackendOptions):
    """The ``openvino`` backend's ``--option`` keys."""

    threads: int = 0  # INFERENCE_NUM_THREADS; 0 lets OpenVINO decide
    streams: int = 0  # NUM_STREAMS; 0 lets the performance hint decide
    hint: Literal["latency", "throughput"] = "latency"  # PERFORMANCE_HINT
    cache: bool = True  # the compiled-model cache (CACHE_DIR) in the project's cache folder


def compile_properties(precision: str, options: OvOptions) -> dict[str, Any]:
    """The ``compile_model`` config of a request (the cache folder is added by :func:`compile_model`)."""
    if precision not in HINTS:
        raise BackendUnavailable(f"openvino: precision {precision} not supported ({', '.join(PRECISIONS)})")
    properties: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": options.hint.upper()}
    if options.threads:
        properties["INFERENCE_NUM_THREADS"] = options.threads
    if options.streams:
        properties["NUM_STREAMS"] = options.streams
    return properties


def ov_device(device: str) -> str:
    """``cpu``, ``gpu[:N]``, ``npu`` as OpenVINO device names (``CPU``, ``GPU.N``, ``NPU``)."""
    kind, _, index = device.lower().partition(":")
    if kind not in ("cpu", "gpu", "npu"):
        raise BackendUnavailable(f"openvino: device '{device}' unknown (use cpu, gpu[:N] or npu)")
    return kind.upper() + (f".{index}" if index else "")


# --- reading a model and its metadata --------------------------------------------------------------------------


def read_model(core, source: bytes | Path):
    """An ``ov.Model`` from ONNX bytes (the weights' cached graph), an ``.onnx`` file or an IR ``.xml``."""
    try:
        if isinstance(source, bytes):
            return core.read_model(source, b"")
        if not Path(source).is_file():
            raise BackendUnavailable(f"openvino: {source}: file not found")
        return core.read_model(str(source))
    except BackendUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
        name = "the weights' graph" if isinstance(source, bytes) else str(source)
        raise BackendUnavailable(f"openvino: cannot read {name} ({first_line(error)})") from None


def model_info(model, source: str) -> OnnxInfo:
    """The landmark-edge metadata of a model: an IR's own section, else the ONNX graph's metadata_props."""
    for section in (IR_SECTION, ONNX_SECTION):
        if model.has_rt_info([section, "anatomy"]):
            props = {key: str(value) for key, value in _section(model, section).items()}
            return OnnxInfo.from_props(props)
    raise BackendUnavailable(f"openvino: {source}: no landmark-edge metadata (export it with `landmark-edge export`)")


def _section(model, section: str) -> dict[str, Any]:
    """One rt_info section as plain strings (OVAny values read with ``astype(str)``)."""
    values = model.get_rt_info()[section]
    mapping = values.astype(dict) if hasattr(values, "astype") else values
    return {key: (value.astype(str) if hasattr(value, "astype") else value) for key, value in mapping.items()}


# --- the AMD guardrail: the first compile on a machine, in a subprocess ----------------------------------------

# The child compiles a small network of the layer kinds GU2Net uses (convolutions, grouped and dilated, pooling,
# interpolation, sigmoid, multiply) with the request's properties. Tests replace it to simulate a crash.
PROBE_CODE = """
import json, sys
import numpy as np
import openvino as ov
import openvino.opset13 as ops
properties = json.loads(sys.argv[1])
x = ops.parameter([1, 4, 32, 32], np.float32, name="image")
w = ops.constant(np.full((4, 4, 3, 3), 0.1, np.float32))
g = ops.constant(np.full((4, 1, 1, 3, 3), 0.1, np.float32))
y = ops.relu(ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1]))
y = ops.group_convolution(y, g, [1, 1], [2, 2], [2, 2], [2, 2])
y = ops.max_pool(y, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]).output(0)
y = ops.interpolate(y, ops.constant(np.array([32, 32], np.int64)), "linear", "sizes", axes=[2, 3])
y = ops.multiply(ops.sigmoid(y), ops.sigmoid(x))
core = ov.Core()
compiled = core.compile_model(ov.Model([y], [x]), sys.argv[2], properties)
compiled.create_infer_request().infer({0: np.ones((1, 4, 32, 32), np.float32)})
print("ok")
"""
PROBE_TIMEOUT_S = 120


def machine_key(device: str) -> str:
    """The probe's cache key: this CPU (model, flags, count), the OpenVINO version and the device.

    Hostnames change with every container, so the key is the hardware the plugin sees, not the host's name.
    """
    import openvino

    cpu = _cpuinfo()
    text = json.dumps([platform.machine(), cpu, openvino.__version__, device], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpuinfo() -> list[str]:
    """The model name and flags lines of /proc/cpuinfo (empty elsewhere), which the CPU plugin's choices follow."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return [platform.processor()]
    wanted = ("model name", "flags", "vendor_id")
    return sorted({line.strip() for line in lines if line.split(":")[0].strip() in wanted})


def probe(device: str, properties: dict[str, Any]) -> None:
    """Compile a small network in a subprocess once per machine and OpenVINO version; refuse the backend (one
    line, naming the fallback) when that compile crashed or failed. A passed probe costs nothing afterwards."""
    import openvino

    record = cache_dir() / "openvino" / f"probe-{machine_key(device)}.json"
    try:
        result = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = _run_probe(device, properties)
        try:
            atomic_write_text(record, json.dumps(result, indent=1) + "\n")
        except OSError:
            pass  # an unwritable cache probes again next time
    if not result.get("ok"):
        raise BackendUnavailable(
            f"openvino {openvino.__version__}: compiling on {device} {result.get('problem', 'failed')} in a probe "
            f"(see openvinotoolkit/openvino#35943); use {FALLBACK} (result kept in {record}; delete it to probe again)"
        )


def _run_probe(device: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The probe's result: ok, or the problem in words (the signal that killed the child, or its last line)."""
    command = [sys.executable, "-c", PROBE_CODE, json.dumps(properties), device]
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "problem": f"did not finish within {PROBE_TIMEOUT_S} s"}
    if child.returncode == 0:
        return {"ok": True}
    if child.returncode < 0:
        import signal

        name = signal.Signals(-child.returncode).name
        return {"ok": False, "problem": f"crashed with {name}"}
    lines = (child.stderr or child.stdout).strip().splitlines()
    return {"ok": False, "problem": f"failed ({lines[-1] if lines else f'exit {child.returncode}'})"}


# --- compiling and the precision that ran ----------------------------------------------------------------------


def compile_model(core, model, device: str, properties: dict[str, Any], cache: bool):
    """``core.compile_model`` after the machine's probe, with the compiled-model cache when asked for."""
    import openvino

    probe(device, properties)
    if not cache:
        return _compile(core, model, device, properties)
    with cached_folder(f"openvino/compiled-{openvino.__version__.split('-')[0]}") as folder:
        return _compile(core, model, device, {**properties, "CACHE_DIR": str(folder)})


def _compile(core, model, device: str, properties: dict[str, Any]):
    try:
        return core.compile_model(model, device, properties)
    except Exception as error:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
        raise BackendUnavailable(f"openvino: cannot compile for {device} ({first_line(error)})") from None


class OpenVinoBackend(GraphBackend):
    """Runs a compiled model; uses its in-graph decoder when it matches the request."""

    name = "openvino"

    def __init__(self, compiled, info: OnnxInfo, anatomy: Anatomy, decode: DecodeMethod | str) -> None:
        layers = layer_precisions(compiled)
        # The run record's precision is what the runtime graph ran (fp32 for a bf16 request on a CPU without bf16;
        # int8+fp32 for an int8 IR), never the hint asked for.
        super().__init__(info, anatomy, decode, ran_precision(layers))
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.layers = layers

    def close(self) -> None:
        """Release the infer request and compiled model now: their executor threads otherwise live until garbage
        collection, and a process that goes on (a library caller, the test suite) keeps them running."""
        self.request = self.compiled = None

    def outputs(self, names: list[str], image: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer({INPUT: image})
        by_name = {port.get_any_name(): value for port, value in results.items()}
        return [np.array(by_name[name]) for name in names]  # a copy: the request reuses its buffers


def create(request: BackendRequest) -> OpenVinoBackend:
    """The ``openvino`` registry entry's factory: the artifact when given (IR or .onnx), else the loader's graph of
    the weights; int8 needs an int8 IR (NNCF's accuracy control is an export step of minutes, not a run-time one)."""
    if importlib.util.find_spec("openvino") is None:
        raise BackendUnavailable("openvino backend: openvino is not installed (pip install 'landmark-edge[openvino]')")
    if request.artifact is not None:
        source: bytes | Path = request.artifact
    elif request.precision == "int8":
        raise BackendUnavailable(
            "openvino int8: give an int8 IR (--artifact MODEL.xml; make one with landmark-edge export -a "
            f"{request.anatomy.name} --profile cpu-openvino-int8)"
        )
    elif request.onnx_loader is None:
        raise BackendUnavailable(
            "openvino backend: give a model (--artifact MODEL.xml or MODEL.onnx) or an ONNX loader for the weights "
            "(landmark_edge.export.loaders.OnnxFromWeights)"
        )
    else:
        source = request.onnx_loader(None)
    return open_openvino(source, request.anatomy, request.decode, request.device, request.precision, request.options)


def open_openvino(
    source: bytes | Path, anatomy: Anatomy, decode: DecodeMethod | str, device: str, precision: str,
    options: OvOptions,
) -> OpenVinoBackend:  # fmt: skip
    """A ready backend for ``source`` (ONNX bytes, an ``.onnx`` or an IR ``.xml``), checked against the request.

    The model's precision must be the one asked for, as for every prebuilt artifact: an int8 model runs as
    ``int8``; a float graph runs as ``fp32`` or ``bf16`` (a run-time hint on the same weights), but a bf16 IR
    was validated at bf16 and runs as exported.
    """
    import openvino

    core = openvino.Core()
    model = read_model(core, source)
    name = "the weights' graph" if isinstance(source, bytes) else str(source)
    info = model_info(model, name)
    check_built_for(name, BuiltFor("model", info.anatomy, info.precision, None, "landmark-edge export"), anatomy)
    _check_precision(name, info.precision, precision, is_ir=Path(str(source)).suffix == ".xml")
    properties = compile_properties(precision, options)
    compiled = compile_model(core, model, ov_device(device), properties, options.cache)
    return OpenVinoBackend(compiled, info, anatomy, decode)


def _check_precision(name: str, built: str, asked: str, is_ir: bool) -> None:
    float_graph = built == "fp32" and not is_ir and asked in ("fp32", "bf16")
    if built != asked and not float_graph:
        make = "landmark-edge export --profile cpu-openvino-" + ("int8" if asked == "int8" else "bf16")
        hint = f"make one: {make}" if asked != "fp32" else "export one: landmark-edge export --format openvino"
        raise BackendUnavailable(f"openvino: {name} is a {built} model; run it with --precision {built} or {hint}")
