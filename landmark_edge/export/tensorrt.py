"""TensorRT engine building for TensorRT 10.x (JetPack 6) and 11.x, as small steps the ``build`` command composes.

    ONNX -> prepare_onnx (Q/DQ quantization or mixed precision, by version) -> create_network -> parse_onnx
         -> create_config (precision flags, profile, workspace, timing cache, DLA, compatibility, progress)
         -> build_serialized_network -> write_engine (header + engine)

Precision follows each version's documented path (NVIDIA's 10.x -> 11.x migration guide):

=========  ==============================================  ===============================================
precision  TensorRT 10.x                                   TensorRT 11.x (strongly typed networks only)
=========  ==============================================  ===============================================
fp32       weakly typed network, no flags                  network as exported
fp16/bf16  ``BuilderFlag.FP16``/``BF16`` (weak typing)     ONNX converted by ModelOpt AutoCast, I/O kept fp32
int8/fp8   Q/DQ ONNX + ``BuilderFlag.INT8``/``FP8`` and    Q/DQ ONNX, strongly typed (11.x removed the
           ``FP16`` so unquantized layers run in half      precision flags and the implicit calibrators)
=========  ==============================================  ===============================================

Quantization is *explicit* on both versions (TensorRT 10 deprecated implicit int8 calibrators and 11 removed
them): Q/DQ nodes are inserted with ONNX Runtime's ``quantize_static`` (QDQ format, symmetric, per-channel
weights, Conv only) calibrated on images the user chooses. ORT is already a dependency and runs on a CPU, so
the quantized graph can be made and checked anywhere; NVIDIA ModelOpt's ONNX quantizer produces the same kind
of graph and is the alternative when its extra recipes (e.g. SmoothQuant) are wanted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from landmark_edge.anatomy import Anatomy, get_anatomy
from landmark_edge.contracts import INPUT, ArtifactInfo, EngineHeader, OnnxInfo, read_onnx_info
from landmark_edge.errors import LandmarkEdgeError
from landmark_edge.export.engine import write_engine
from landmark_edge.export.profiles import QUANTIZED, DeploymentProfile
from landmark_edge.export.quantize import QuantTarget, calibration_batches, quantize_onnx
from landmark_edge.tensorrt_probe import GpuInfo, TensorRTUnavailable, gpu_info, import_tensorrt, tensorrt_major
from landmark_edge.io.atomic import atomic_open
from landmark_edge.weights import file_sha256

if TYPE_CHECKING:  # the 10.x type stubs (tensorrt-stubs): tests/test_tensorrt_api.py runs mypy against them
    import tensorrt


class BuildError(LandmarkEdgeError):
    """The engine could not be built; the message names the step and TensorRT's first error."""


# --- what each version does for a precision ------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionPlan:
    strongly_typed: bool
    flags: tuple[str, ...]  # BuilderFlag member names (TensorRT 10.x only)
    onnx_step: Literal["none", "autocast", "quantize"]


def precision_plan(precision: str, major: int) -> PrecisionPlan:
    """How ``precision`` is reached on TensorRT ``major`` (see the module table)."""
    if major < 10:
        raise TensorRTUnavailable(f"TensorRT {major}.x is not supported: landmark-edge builds with TensorRT 10 or 11")
    quantize = precision in QUANTIZED
    step: Literal["none", "autocast", "quantize"] = "quantize" if quantize else "autocast" if precision in ("fp16", "bf16") and major >= 11 else "none"
    if major >= 11:
        return PrecisionPlan(strongly_typed=True, flags=(), onnx_step=step)
    flags = {"fp32": (), "fp16": ("FP16",), "bf16": ("BF16",), "int8": ("INT8", "FP16"), "fp8": ("FP8", "FP16")}
    return PrecisionPlan(strongly_typed=False, flags=flags[precision], onnx_step=step)


# Lowest compute capability with tensor-core support for a precision (bf16: Ampere; fp8: Ada/Hopper).
MIN_CAPABILITY = {"bf16": (8, 0), "fp8": (8, 9)}


def check_precision_supported(precision: str, gpu: GpuInfo) -> None:
    """Refuse a precision this GPU has no kernels for before spending minutes in the builder."""
    needed = MIN_CAPABILITY.get(precision)
    have = tuple(int(part) for part in gpu.compute_capability.split("."))
    if needed is not None and have < needed:
        raise BuildError(
            f"{precision} needs compute capability {needed[0]}.{needed[1]} or newer; {gpu.name} has "
            f"{gpu.compute_capability} (use fp16 or int8)"
        )


# --- step 1: the ONNX the parser reads -----------------------------------------------------------------------


def autocast_onnx(onnx_path: Path, precision: str) -> bytes:
    """Mixed-precision ONNX for TensorRT 11 strongly typed builds (ModelOpt AutoCast; inputs/outputs stay fp32)."""
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError:
        raise TensorRTUnavailable(
            f"TensorRT 11 builds {precision} from a mixed-precision ONNX: pip install 'nvidia-modelopt[onnx]' "
            "(ModelOpt AutoCast), or build --precision fp32"
        ) from None
    model = convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type=precision, keep_io_types=True)
    return model.SerializeToString()


def prepare_onnx(
    onnx_path: Path, plan: PrecisionPlan, profile: DeploymentProfile, anatomy: Anatomy, workdir: Path
) -> bytes:
    """The bytes the TensorRT parser reads, after the precision's ONNX step."""
    if plan.onnx_step == "autocast":
        return autocast_onnx(onnx_path, profile.precision)
    if plan.onnx_step == "quantize":
        assert profile.calibration is not None  # the profile validator requires it for int8/fp8
        batches = calibration_batches(profile.calibration, anatomy)
        out = workdir / f"{onnx_path.stem}.{profile.precision}.qdq.onnx"
        return quantize_onnx(
            onnx_path, out, batches, profile.precision, profile.calibration.method, QuantTarget.TENSORRT
        ).read_bytes()
    return onnx_path.read_bytes()


# --- step 2: network and config ---------------------------------------------------------------------------------


def create_network(trt, builder: tensorrt.Builder, plan: PrecisionPlan, major: int) -> tensorrt.INetworkDefinition:
    """Strongly typed on request for 10.x; 11.x networks are always strongly typed (its flag is deprecated)."""
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed and major < 11 else 0
    return builder.create_network(flags)


def parse_onnx(
    trt, network: tensorrt.INetworkDefinition, logger: tensorrt.ILogger, data: bytes, source: Path
) -> tensorrt.OnnxParser:
    """Fill ``network``; the returned parser owns the weights and must live until the build is done."""
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"{source}: TensorRT's ONNX parser failed: {errors[0] if errors else 'no details'}")
    return parser


class BuildProgress(Protocol):
    """Receives TensorRT's build phases (IProgressMonitor); the CLI shows them as rich progress bars."""

    def phase_start(self, phase: str, parent: str | None, steps: int) -> None: ...
    def step_complete(self, phase: str, step: int) -> None: ...
    def phase_finish(self, phase: str) -> None: ...


def progress_monitor(trt, progress: BuildProgress | None):
    """A ``trt.IProgressMonitor`` forwarding to ``progress`` (None where the version has no monitor)."""
    if progress is None or not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            progress.step_complete(phase_name, step)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return Monitor()


def create_config(
    trt, builder: tensorrt.Builder, profile: DeploymentProfile, plan: PrecisionPlan, grid_hw: tuple[int, int],
    timing_cache: bytes, monitor: tensorrt.IProgressMonitor | None = None,
) -> tensorrt.IBuilderConfig:  # fmt: skip
    """The builder config for ``profile``: flags, optimization profile, memory, timing cache, DLA, compatibility."""
    config = builder.create_builder_config()
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    height, width = grid_hw
    shapes = [(batch, 1, height, width) for batch in (profile.batch.min, profile.batch.opt, profile.batch.max)]
    optimization = builder.create_optimization_profile()
    optimization.set_shape(INPUT, *shapes)  # type: ignore[arg-type]  # pybind11 converts tuples to Dims
    config.add_optimization_profile(optimization)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mib << 20)
    config.builder_optimization_level = profile.optimization_level
    config.set_timing_cache(config.create_timing_cache(timing_cache), False)  # False: refuse a foreign cache
    if profile.dla_core is not None:
        _use_dla(trt, builder, config, profile)
    if profile.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if profile.hardware_compatibility != "none":
        level = {"ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
        config.hardware_compatibility_level = getattr(
            trt.HardwareCompatibilityLevel, level[profile.hardware_compatibility]
        )
    if monitor is not None:
        config.progress_monitor = monitor
    return config


def _use_dla(trt, builder: tensorrt.Builder, config: tensorrt.IBuilderConfig, profile: DeploymentProfile) -> None:
    assert profile.dla_core is not None  # create_config calls this only for a profile with a DLA core
    if profile.precision not in ("fp16", "int8"):
        raise BuildError(f"DLA core {profile.dla_core} runs fp16 or int8 only, not {profile.precision}")
    if profile.dla_core >= builder.num_DLA_cores:
        raise BuildError(f"DLA core {profile.dla_core} asked for, this device has {builder.num_DLA_cores}")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = profile.dla_core
    if profile.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


# --- the composed build ------------------------------------------------------------------------------------------


@dataclass
class BuildReport:
    path: Path
    header: EngineHeader
    engine_bytes: int
    plan: PrecisionPlan
    timing_cache: Path | None


def build_engine(
    onnx_path: str | Path,
    out: str | Path,
    profile: DeploymentProfile,
    *,
    progress: BuildProgress | None = None,
    step: Callable[[str], None] = lambda name: None,
    device_index: int = 0,
) -> BuildReport:
    """Build ``onnx_path`` (a landmark-edge export) into an engine file for this machine's GPU."""
    onnx_path, out = Path(onnx_path), Path(out)
    info = read_onnx_info(onnx_path)
    anatomy = get_anatomy(info.anatomy)
    trt = import_tensorrt()
    gpu = gpu_info(device_index)  # before any TensorRT object: TensorRT may abort without a device
    major = tensorrt_major(trt)
    plan = precision_plan(profile.precision, major)
    check_precision_supported(profile.precision, gpu)
    step(f"preparing the ONNX graph ({plan.onnx_step})" if plan.onnx_step != "none" else "reading the ONNX graph")
    data = prepare_onnx(onnx_path, plan, profile, anatomy, out.parent)
    logger: tensorrt.Logger = trt.Logger(trt.Logger.WARNING)
    builder: tensorrt.Builder = trt.Builder(logger)
    network = create_network(trt, builder, plan, major)
    step("parsing")
    parser = parse_onnx(trt, network, logger, data, onnx_path)
    cache_path = profile.timing_cache
    cache = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    config = create_config(trt, builder, profile, plan, anatomy.grid_hw, cache, progress_monitor(trt, progress))
    step(f"building a {profile.precision} engine with TensorRT {trt.__version__} on {gpu.name}")
    serialized = builder.build_serialized_network(network, config)
    del parser
    if serialized is None:
        raise BuildError(f"{onnx_path}: TensorRT could not build the engine (its log above says why)")
    if cache_path is not None:
        with atomic_open(cache_path, "wb") as handle:
            handle.write(bytes(config.get_timing_cache().serialize()))
    header = engine_header(info, profile, str(trt.__version__), gpu.name, gpu.compute_capability, onnx_path)
    engine = bytes(serialized)
    write_engine(out, header, engine)
    return BuildReport(out, header, len(engine), plan, cache_path)


def engine_header(
    info: OnnxInfo, profile: DeploymentProfile, version: str, gpu_name: str, capability: str, onnx_path: Path
) -> EngineHeader:
    shared = info.model_dump(include=set(ArtifactInfo.model_fields) - {"precision", "landmark_edge_version"})
    return EngineHeader(
        **shared,  # anatomy, landmarks, grid, decode, preprocessing, spacing rule, weights hash: as the ONNX says
        outputs=info.outputs,
        precision=profile.precision,
        batch=(profile.batch.min, profile.batch.opt, profile.batch.max),
        tensorrt_version=version,
        gpu_name=gpu_name,
        compute_capability=capability,
        dla_core=profile.dla_core,
        version_compatible=profile.version_compatible,
        hardware_compatibility=profile.hardware_compatibility,
        onnx_sha256=file_sha256(onnx_path),
    )
