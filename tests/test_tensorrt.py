"""TensorRT builder and runtime against a recording fake ``tensorrt`` (10.x and 11.x), the engine container,
and a real-TensorRT test that skips without the library or a GPU."""

from __future__ import annotations

import shutil
import sys
import types

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark_edge.anatomy import get_anatomy
from landmark_edge.cli import app
from landmark_edge.contracts import EngineFileError, EngineHeader, read_engine
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import BackendUnavailable
from landmark_edge.export import tensorrt as builder_module
from landmark_edge.export.engine import write_engine
from landmark_edge.export.onnx import EXAMPLE_IMAGE
from landmark_edge.export.profiles import BatchRange, Calibration, DeploymentProfile
from landmark_edge.export.tensorrt import BuildError, build_engine, precision_plan
from landmark_edge.tensorrt_probe import GpuInfo, TensorRTUnavailable
from landmark_edge.runtime import tensorrt as runtime_module
from landmark_edge.runtime.tensorrt import TensorRTBackend, check_header
from tests.fake_tensorrt import HostMemory, make_tensorrt, peak

ORIN = GpuInfo(0, "Orin", "8.7")


@pytest.fixture
def chest_onnx(exported):
    """The exported chest graph (subpixel decoding in the graph), made before any fake TensorRT is installed."""
    return exported["chest"]


@pytest.fixture
def fake(monkeypatch):
    """Install a fake TensorRT of the requested version and a fake GPU; returns the module."""

    def install(version: str, gpu: GpuInfo = ORIN, **kw) -> types.ModuleType:
        trt = make_tensorrt(version, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(builder_module, "gpu_info", lambda index=0: gpu)
        monkeypatch.setattr(runtime_module, "gpu_info", lambda index=0: gpu)
        return trt

    return install


class RecordingProgress:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def phase_start(self, phase, parent, steps):
        self.events.append(("start", phase, steps))

    def step_complete(self, phase, step):
        self.events.append(("step", phase, step))

    def phase_finish(self, phase):
        self.events.append(("finish", phase))


# --- version branches ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "major", "strongly_typed", "flags", "onnx_step"),
    [
        ("fp32", 10, False, (), "none"),
        ("fp16", 10, False, ("FP16",), "none"),
        ("bf16", 10, False, ("BF16",), "none"),
        ("int8", 10, False, ("INT8", "FP16"), "quantize"),
        ("fp8", 10, False, ("FP8", "FP16"), "quantize"),
        ("fp32", 11, True, (), "none"),
        ("fp16", 11, True, (), "autocast"),
        ("int8", 11, True, (), "quantize"),
    ],
)
def test_precision_plan_per_version(precision, major, strongly_typed, flags, onnx_step):
    plan = precision_plan(precision, major)
    assert (plan.strongly_typed, plan.flags, plan.onnx_step) == (strongly_typed, flags, onnx_step)


def test_tensorrt_8_is_refused():
    with pytest.raises(TensorRTUnavailable, match="TensorRT 10 or 11"):
        precision_plan("fp16", 8)


def test_build_10x_fp16_records_flags_profile_workspace_cache_and_progress(fake, chest_onnx, tmp_path):
    trt = fake("10.3.0")
    cache = tmp_path / "orin.timing"
    cache.write_bytes(b"old")
    profile = DeploymentProfile(precision="fp16", batch=BatchRange(min=1, opt=2, max=4), workspace_mib=512,
                                optimization_level=5, timing_cache=cache)  # fmt: skip
    progress = RecordingProgress()
    report = build_engine(chest_onnx, tmp_path / "chest.engine", profile, progress=progress)
    config = trt.builder.config
    assert ("create_network", 0) in trt.calls  # weakly typed: FP16 is a builder flag on 10.x
    assert config.flags == {"FP16"}
    assert config.profiles[0].shapes["image"] == ((1, 1, 512, 512), (2, 1, 512, 512), (4, 1, 512, 512))
    assert config.pools == {"WORKSPACE": 512 << 20} and config.builder_optimization_level == 5
    assert ("create_timing_cache", b"old") in trt.calls and config.ignore_mismatch is False
    assert cache.read_bytes() == b"old+tuned"  # the cache is written back for the next build
    assert progress.events == [("start", "Building engine", 2), ("step", "Building engine", 0),
                               ("step", "Building engine", 1), ("finish", "Building engine")]  # fmt: skip
    header, engine = read_engine(report.path)
    assert engine.startswith(b"ENGINE:") and header.tensorrt_version == "10.3.0"
    assert (header.anatomy, header.precision, header.batch, header.gpu_name) == ("chest", "fp16", (1, 2, 4), "Orin")
    assert header.decode is DecodeMethod.SUBPIXEL and header.outputs == ["heatmaps", "landmarks", "confidence"]
    assert len(header.onnx_sha256) == 64 and header.compute_capability == "8.7"


def test_build_11x_fp32_is_strongly_typed_without_precision_flags(fake, chest_onnx, tmp_path):
    trt = fake("11.1.0")
    build_engine(chest_onnx, tmp_path / "chest.engine", DeploymentProfile())
    assert ("create_network", 0) in trt.calls  # 11.x: always strongly typed, the flag is deprecated
    assert trt.builder.config.flags == set()
    assert trt.builder.network.onnx == chest_onnx.read_bytes()


def test_build_11x_fp16_needs_modelopt_autocast(fake, chest_onnx, tmp_path, monkeypatch):
    trt = fake("11.1.0")
    monkeypatch.setitem(sys.modules, "modelopt", None)  # not installed
    with pytest.raises(TensorRTUnavailable, match="nvidia-modelopt"):
        build_engine(chest_onnx, tmp_path / "a.engine", DeploymentProfile(precision="fp16"))
    calls = []

    def convert_to_mixed_precision(onnx_path, low_precision_type, keep_io_types):
        calls.append((low_precision_type, keep_io_types))
        model = onnx.load(onnx_path)
        model.doc_string = "autocast"
        return model

    autocast = types.ModuleType("modelopt.onnx.autocast")
    autocast.convert_to_mixed_precision = convert_to_mixed_precision
    for name in ("modelopt", "modelopt.onnx"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "modelopt.onnx.autocast", autocast)
    build_engine(chest_onnx, tmp_path / "b.engine", DeploymentProfile(precision="fp16"))
    assert calls == [("fp16", True)] and trt.builder.config.flags == set()
    assert onnx.load_from_string(trt.builder.network.onnx).doc_string == "autocast"


@pytest.mark.parametrize(("version", "flags"), [("10.3.0", {"INT8", "FP16"}), ("11.1.0", set())])
def test_int8_builds_from_a_qdq_graph_calibrated_on_chosen_images(fake, chest_onnx, tmp_path, version, flags):
    import onnxruntime as ort

    trt = fake(version)
    images = tmp_path / "calibration"
    images.mkdir()
    shutil.copy(EXAMPLE_IMAGE, images / "a.png")
    (images / "notes.txt").write_text("not an image: skipped")
    profile = DeploymentProfile(precision="int8", calibration=Calibration(images=images, count=1, method="minmax"))
    build_engine(chest_onnx, tmp_path / "chest.engine", profile)
    assert trt.builder.config.flags == flags
    quantized = onnx.load_from_string(trt.builder.network.onnx)
    ops = [node.op_type for node in quantized.graph.node]
    assert ops.count("QuantizeLinear") > 10 and "DequantizeLinear" in ops
    scales = [node for node in quantized.graph.node if node.op_type == "QuantizeLinear"]
    assert all(len(node.input) >= 2 for node in scales)
    # The Q/DQ graph still computes the same function approximately (it runs in ONNX Runtime on the CPU).
    x = np.random.default_rng(0).standard_normal((1, 1, 512, 512)).astype(np.float32)
    run = lambda model: ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(["heatmaps"], {"image": x})[0]  # noqa: E731
    assert np.abs(run(trt.builder.network.onnx) - run(str(chest_onnx))).max() < 0.1


def test_int8_without_calibration_images_is_one_line(fake, chest_onnx, tmp_path):
    fake("10.3.0")
    (tmp_path / "empty").mkdir()
    profile = DeploymentProfile(precision="int8", calibration=Calibration(images=tmp_path / "empty"))
    with pytest.raises(Exception, match="no calibration images found"):
        build_engine(chest_onnx, tmp_path / "chest.engine", profile)


def test_dla_version_and_hardware_compatibility(fake, chest_onnx, tmp_path):
    trt = fake("10.3.0")
    profile = DeploymentProfile(precision="fp16", dla_core=1, version_compatible=True,
                                hardware_compatibility="ampere_plus")  # fmt: skip
    header, _ = read_engine(build_engine(chest_onnx, tmp_path / "c.engine", profile).path)
    config = trt.builder.config
    assert config.default_device_type == "DLA" and config.DLA_core == 1
    assert {"GPU_FALLBACK", "VERSION_COMPATIBLE", "FP16"} == config.flags
    assert config.hardware_compatibility_level == "AMPERE_PLUS"
    assert header.version_compatible and header.hardware_compatibility == "ampere_plus" and header.dla_core == 1
    with pytest.raises(BuildError, match="this device has 2"):
        build_engine(chest_onnx, tmp_path / "d.engine", DeploymentProfile(precision="fp16", dla_core=2))
    with pytest.raises(BuildError, match="fp16 or int8 only"):
        build_engine(chest_onnx, tmp_path / "e.engine", DeploymentProfile(dla_core=0))


def test_fp8_on_a_gpu_without_fp8_is_refused_before_building(fake, chest_onnx, tmp_path):
    trt = fake("10.3.0")  # the fake GPU is an Orin, compute capability 8.7
    profile = DeploymentProfile(precision="fp8", calibration=Calibration(images=tmp_path))
    with pytest.raises(BuildError, match="fp8 needs compute capability 8.9 or newer; Orin has 8.7"):
        build_engine(chest_onnx, tmp_path / "chest.engine", profile)
    assert not [call for call in trt.calls if call[0] == "build"]


def test_parser_error_is_one_line(fake, chest_onnx, tmp_path, monkeypatch):
    fake("10.3.0")
    monkeypatch.setattr(builder_module, "prepare_onnx", lambda *a: b"garbage")
    with pytest.raises(BuildError, match="ONNX parser failed: Failed to parse ONNX model"):
        build_engine(chest_onnx, tmp_path / "chest.engine", DeploymentProfile())


def test_build_cli_with_a_shipped_profile(fake, chest_onnx, tmp_path):
    fake("10.3.0")
    out = tmp_path / "chest.engine"
    args = ["build", str(chest_onnx), "--profile", "jetson-orin-nano-fp16", "-o", str(out),
            "--timing-cache", str(tmp_path / "t.cache"), "--max-batch", "2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "chest fp16 engine, batch 1-2" in result.stdout and read_engine(out)[0].batch == (1, 1, 2)


# --- engine container ---------------------------------------------------------------------------------------------


def _header(**kw) -> EngineHeader:
    fields = dict(anatomy="chest", num_landmarks=6, landmark_names=[f"L{i}" for i in range(1, 7)], grid=(512, 512),
                  outputs=["heatmaps"], precision="fp16", batch=(1, 1, 4), tensorrt_version="10.3.0",
                  gpu_name="Orin", compute_capability="8.7", onnx_sha256="0" * 64)  # fmt: skip
    return EngineHeader(**(fields | kw))


def test_engine_container_round_trips(tmp_path):
    header, engine = _header(), bytes(range(256)) * 3
    header_back, engine_back = read_engine(write_engine(tmp_path / "x.engine", header, engine))
    assert header_back == header and engine_back == engine


def test_not_an_engine_file_is_one_line(tmp_path):
    path = tmp_path / "plain.engine"
    path.write_bytes(b"\x00" * 64)  # a raw TensorRT plan without our header
    with pytest.raises(EngineFileError, match="not a landmark-edge engine file"):
        read_engine(path)


@pytest.mark.parametrize(
    ("header", "runtime", "message"),
    [
        (_header(), ("10.8.0", "Orin", "8.7"), "built for TensorRT 10.3.0, runtime 10.8.0"),
        (_header(), ("10.3.0", "NVIDIA H100", "9.0"), "compute capability 8.7 (Orin), this GPU is NVIDIA H100 (9.0)"),
        (_header(version_compatible=True), ("11.0.0", "Orin", "8.7"), "(version-compatible), runtime 11.0.0"),
        (_header(hardware_compatibility="ampere_plus"), ("10.3.0", "T4", "7.5"), "Ampere or newer"),
    ],
)
def test_mismatched_header_is_refused_with_what_differs(header, runtime, message):
    with pytest.raises(EngineFileError) as error:
        check_header("chest.engine", header, *runtime)
    line = str(error.value)
    assert message in line and "rebuild it here with `landmark-edge build" in line and "\n" not in line


@pytest.mark.parametrize(
    ("header", "runtime"),
    [
        (_header(), ("10.3.0", "Jetson AGX Orin", "8.7")),  # same capability, other model name
        (_header(version_compatible=True), ("10.8.0", "Orin", "8.7")),
        (_header(hardware_compatibility="ampere_plus"), ("10.3.0", "NVIDIA H100", "9.0")),
    ],
)
def test_compatible_runtime_is_accepted(header, runtime):
    check_header("chest.engine", header, *runtime)


# --- runtime ------------------------------------------------------------------------------------------------------


def _engine(fake, chest_onnx, tmp_path, version="10.3.0", max_batch=4, **profile):
    trt = fake(version)
    settings = DeploymentProfile(batch=BatchRange(min=1, opt=1, max=max_batch), **profile)
    header, _ = read_engine(build_engine(chest_onnx, tmp_path / "chest.engine", settings).path)
    trt.engine_outputs, trt.engine_channels = header.outputs, header.num_landmarks
    trt.device_memory = HostMemory()
    return trt, tmp_path / "chest.engine"


def _pixels(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).integers(0, 255, (batch, 512, 512), dtype=np.uint8)


@pytest.mark.parametrize("decode", [DecodeMethod.SUBPIXEL, DecodeMethod.ARGMAX])
def test_runtime_runs_named_tensors_on_a_stream(fake, chest_onnx, tmp_path, decode):
    """The engine decodes subpixel in-graph: used for subpixel; for argmax the heatmaps are decoded here."""
    trt, path = _engine(fake, chest_onnx, tmp_path)
    backend = TensorRTBackend(path, get_anatomy("chest"), decode, device=trt.device_memory)
    assert backend.graph_decodes is (decode is DecodeMethod.SUBPIXEL)
    prediction = backend.run(_pixels(3), return_heatmaps=True)
    expected = np.array([[peak(b, c) for c in range(6)] for b in range(3)], dtype=np.float32)
    np.testing.assert_array_equal(prediction.xy, expected)
    np.testing.assert_allclose(prediction.confidence, 0.9, rtol=1e-6)
    assert prediction.heatmaps.shape == (3, 6, 512, 512)
    assert ("set_input_shape", "image", (3, 1, 512, 512)) in trt.calls
    (execute,) = [call for call in trt.calls if call[0] == "execute_async_v3"]
    assert execute[1] == HostMemory.stream and execute[2] == ["confidence", "heatmaps", "image", "landmarks"]
    z = trt.device_memory.inputs[0]  # the engine was fed the z-scored batch
    assert z.shape == (3, 1, 512, 512) and abs(float(z[0].mean())) < 1e-4 and abs(float(z[0].std()) - 1) < 1e-3
    _, timing = backend.run_timed(_pixels(1))  # bench times every backend this way
    assert timing.stages_ms == {"compute": timing.latency_ms}


def test_runtime_splits_batches_larger_than_the_profile(fake, chest_onnx, tmp_path):
    trt, path = _engine(fake, chest_onnx, tmp_path, max_batch=2)
    backend = TensorRTBackend(path, get_anatomy("chest"), DecodeMethod.SUBPIXEL, device=trt.device_memory)
    prediction = backend.run(_pixels(3))
    assert prediction.xy.shape == (3, 6, 2) and tuple(prediction.xy[2, 0]) == peak(0, 0)
    shapes = [call[2] for call in trt.calls if call[0] == "set_input_shape"]
    assert shapes == [(2, 1, 512, 512), (1, 1, 512, 512)]


def test_registry_refuses_a_precision_or_batch_the_engine_was_not_built_for(fake, chest_onnx, tmp_path):
    """An fp32 engine asked to run as fp16, or beyond its profile's batch 4, is one line naming the fix."""
    from landmark_edge.runtime.registry import BackendRequest, create_backend

    trt, path = _engine(fake, chest_onnx, tmp_path, max_batch=4)
    chest = get_anatomy("chest")
    ask = dict(weights=None, anatomy=chest, device="cuda", artifact=path)
    with pytest.raises(BackendUnavailable, match=r"a fp32 engine; run it with --precision fp32 or make a fp16 one "
                                                 r"\(landmark-edge build MODEL.onnx --precision fp16\)"):
        create_backend("tensorrt", BackendRequest(**ask, precision="fp16", max_batch_size=4))
    with pytest.raises(BackendUnavailable, match=r"the engine runs batches up to 4, not 8: pass --batch-size 4 or "
                                                 r"make a larger one \(landmark-edge build MODEL.onnx --max-batch 8\)"):
        create_backend("tensorrt", BackendRequest(**ask, precision="fp32", max_batch_size=8))
    assert not [call for call in trt.calls if call[0] == "deserialize"]  # refused from the header alone


def test_runtime_refuses_an_engine_from_another_tensorrt(fake, chest_onnx, tmp_path):
    trt, path = _engine(fake, chest_onnx, tmp_path, version="10.3.0")
    fake("10.8.0")
    with pytest.raises(EngineFileError, match="built for TensorRT 10.3.0, runtime 10.8.0"):
        TensorRTBackend(path, get_anatomy("chest"), device=trt.device_memory)


def test_version_compatible_engine_allows_host_code(fake, chest_onnx, tmp_path):
    trt, path = _engine(fake, chest_onnx, tmp_path, version_compatible=True)
    TensorRTBackend(path, get_anatomy("chest"), device=trt.device_memory)
    assert trt.runtime.engine_host_code_allowed is True


def test_without_a_gpu_the_runtime_says_so_in_one_line(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    monkeypatch.setitem(sys.modules, "cuda", None)  # and no cuda-python
    with pytest.raises(TensorRTUnavailable) as error:
        runtime_module.gpu_info()
    assert "\n" not in str(error.value) and "CUDA device 0" in str(error.value)


def test_without_tensorrt_build_says_how_to_install(chest_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = CliRunner().invoke(app, ["build", str(chest_onnx), "-o", str(tmp_path / "x.engine")])
    assert result.exit_code == 2 and "pip install 'landmark-edge[tensorrt]'" in result.stderr


# --- real TensorRT ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_real_tensorrt_engine_matches_onnx_runtime(chest_onnx, tmp_path):
    pytest.importorskip("tensorrt", reason="tensorrt is not installed (pip install 'landmark-edge[tensorrt]')")
    try:
        runtime_module.gpu_info()
    except TensorRTUnavailable as error:
        pytest.skip(f"no usable GPU: {error}")
    from landmark_edge.runtime.registry import BackendRequest, create_backend

    path = build_engine(chest_onnx, tmp_path / "chest.engine", DeploymentProfile()).path
    chest = get_anatomy("chest")
    engine = TensorRTBackend(path, chest, DecodeMethod.SUBPIXEL)
    reference = create_backend("onnxruntime", BackendRequest(None, chest, artifact=chest_onnx))
    got, want = engine.run(_pixels(3), return_heatmaps=True), reference.run(_pixels(3), return_heatmaps=True)
    assert np.abs(got.heatmaps - want.heatmaps).max() < 1e-3  # fp32 engine (TF32 may be used by TensorRT)


def test_infer_with_an_engine_for_another_anatomy_is_one_line(tmp_path):
    """Checked from the engine header before TensorRT or a GPU is touched, so it holds on any machine."""
    engine = write_engine(tmp_path / "chest.engine", _header(), b"ENGINE")
    image = tmp_path / "scan.png"
    Image.fromarray(np.full((64, 64), 100, np.uint8) + np.eye(64, dtype=np.uint8)).save(image)
    result = CliRunner().invoke(app, ["infer", str(image), "-a", "hand", "--backend", "tensorrt", "--artifact",
                                      str(engine), "--device", "cuda"])  # fmt: skip
    assert result.exit_code == 2
    assert f"{engine}: engine is for chest, not hand" in result.stderr and "Traceback" not in result.output
