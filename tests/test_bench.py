"""`landmark-edge bench` on CPU: statistics with known answers, drift against a deliberately shifted backend,
skipped and failed backends, and the JSON / markdown / PNG outputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from landmark_edge.anatomy import get_anatomy
from landmark_edge.bench.results import BenchReport
from landmark_edge.bench.stats import heatmap_difference, landmark_drift, latency_stats, throughput
from landmark_edge.cli import app
from landmark_edge.commands.options import EXIT_FAILED_BASE
from landmark_edge.runtime import registry
from landmark_edge.runtime.backend import Backend
from landmark_edge.runtime.eager import TorchBackend
from landmark_edge.runtime.options import BackendOptions
from landmark_edge.runtime.pipeline import run_inference
from landmark_edge.runtime.registry import BackendRequest, BackendSpec, BackendUnavailable, register
from landmark_edge.weights import load_weights

HEAD = get_anatomy("head")


def test_latency_stats_known_percentiles():
    samples = np.random.default_rng(0).permutation(np.arange(1.0, 101.0))  # 1..100 ms in random order
    stats = latency_stats(samples)
    # linear interpolation at rank q/100 * (n - 1): p50 between 50 and 51, p90 at 90.1, p99 at 99.01
    assert (stats.p50, stats.p90, stats.p99, stats.mean) == pytest.approx((50.5, 90.1, 99.01, 50.5))
    assert latency_stats([7.0]).p99 == 7.0
    with pytest.raises(ValueError):
        latency_stats([])


def test_throughput_is_total_images_over_total_time():
    assert throughput(8, [100.0, 100.0, 200.0]) == pytest.approx(60.0)  # 24 images in 0.4 s


def test_landmark_drift_known_offsets():
    reference = np.zeros((2, 3, 2))
    candidate = reference.copy()
    candidate[0, 1] = (3.0, 4.0)  # 5 px
    candidate[1, 2] = (-6.0, 8.0)  # 10 px
    maps = np.zeros((3, 4, 4), np.float32)
    shifted_maps = maps.copy()
    shifted_maps[0, 2, 3] = -0.25
    assert heatmap_difference(maps, shifted_maps) == pytest.approx(0.25)
    assert heatmap_difference(maps, maps.astype(np.float16)) == 0.0
    drift = landmark_drift(reference, candidate, np.array([[0.1, 0.2], [0.5, 0.5]]), 0.25)
    assert drift.images == 2
    assert (drift.max_px, drift.mean_px) == pytest.approx((10.0, 15.0 / 6))
    assert drift.max_mm == pytest.approx(5.0)  # image 2: 10 px at 0.5 mm
    assert drift.mean_mm == pytest.approx((np.hypot(0.3, 0.8) + 5.0) / 6)
    assert drift.max_heatmap_diff == pytest.approx(0.25)
    unknown = landmark_drift(reference, candidate)
    assert unknown.max_mm is None and unknown.max_heatmap_diff is None


class Shifted(TorchBackend):
    """The reference network with every landmark moved by a known offset and every heatmap value raised by 0.25."""

    def __init__(self, request: BackendRequest) -> None:
        if request.precision != "fp32":
            raise BackendUnavailable(f"test-shifted: no {request.precision}")
        model, _ = load_weights(request.weights, request.anatomy.name)
        super().__init__(model, request.anatomy, request.decode)
        self.offset = np.array([request.options.dx, request.options.dy], np.float32)

    def run(self, pixels, *, return_heatmaps=False):
        prediction = super().run(pixels, return_heatmaps=return_heatmaps)
        prediction.xy = prediction.xy + self.offset
        if prediction.heatmaps is not None:
            prediction.heatmaps = prediction.heatmaps + 0.25
        return prediction


class ShiftOptions(BackendOptions):
    dx: float = 0.0
    dy: float = 0.0


class Broken(Backend):
    def run(self, pixels, *, return_heatmaps=False):
        raise RuntimeError("engine exploded\nwith a second line")


def _needs_library(request):
    raise ModuleNotFoundError("No module named 'tensorrt'")


def _unavailable(request):
    raise BackendUnavailable("test-unavailable: no CUDA device here")


def _broken(request):
    return Broken(request.anatomy)


@pytest.fixture()
def test_backends():
    """Backends registered for this test only (declared as the built-in ones are), removed afterwards."""
    added = {
        "test-shifted": "Shifted",
        "test-broken": "_broken",
        "test-needs-library": "_needs_library",
        "test-unavailable": "_unavailable",
    }
    for name, factory in added.items():
        register(BackendSpec(name, "test only", f"{__name__}:{factory}", ("fp32", "int8"), ("cpu",), "host", "torch",
                             options=f"{__name__}:ShiftOptions" if name == "test-shifted" else None))
    yield list(added)
    for name in added:
        registry._REGISTRY.pop(name)


@pytest.fixture()
def head_images(tmp_path) -> Path:
    """A head-sized image: original pixels = grid pixels, 0.1 mm each (the head default spacing)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (512, 416), dtype=np.uint8), "L").save(folder / "ceph.png")
    return folder


def test_bench_end_to_end(tiny_weights, head_images, test_backends, tmp_path):
    out = tmp_path / "results"
    result = CliRunner().invoke(app, [
        "bench", "--anatomy", "head", "-w", str(tiny_weights), "--images", str(head_images), "--device", "cpu",
        "--backends", "torch," + ",".join(test_backends), "--precisions", "fp32,int8", "--batch-sizes", "1,2",
        "--iters", "1", "--warmup", "0", "--option", "test-shifted:dx=3", "--option", "test-shifted:dy=-4",
        "--out-dir", str(out), "--format", "json",
    ])  # fmt: skip
    failed_rows = 2 * 2  # test-broken at two precisions x two batch sizes
    assert result.exit_code == EXIT_FAILED_BASE + failed_rows, result.output

    report = BenchReport.model_validate_json((out / "bench.json").read_text())
    assert json.loads(result.stdout) == json.loads((out / "bench.json").read_text())
    assert report.anatomy == "head" and report.device == "cpu" and len(report.images) == 1
    assert report.command.startswith("landmark-edge bench --anatomy head --backends torch,test-shifted")
    assert report.environment.torch and report.environment.cpu and report.environment.gpu is None
    rows = {(row.label, row.batch_size): row for row in report.rows}

    # the reference runs first, at every batch size, and is 1.0x itself
    assert [r.is_reference for r in report.rows[:2]] == [True, True]
    reference = rows["reference (torch fp32)", 1]
    assert reference.throughput_vs_reference == 1.0 and reference.drift.max_px == 0.0
    assert set(reference.stages_ms) == {"preprocess", "h2d", "compute", "decode", "d2h"}
    assert reference.latency_ms.p50 <= reference.latency_ms.p99 and reference.iters == 1
    assert ("torch fp32", 1) not in rows  # `torch` at fp32 is the reference itself, not run twice

    # drift against the deliberately shifted backend: (3, -4) grid px = 5 original px = 0.5 mm; heatmaps + 0.25
    for batch_size in (1, 2):
        shifted = rows["test-shifted fp32 [dx=3,dy=-4]", batch_size]
        assert shifted.status == "ok"
        assert (shifted.drift.max_px, shifted.drift.mean_px) == pytest.approx((5.0, 5.0), abs=0.02)
        assert (shifted.drift.max_mm, shifted.drift.mean_mm) == pytest.approx((0.5, 0.5), abs=0.002)
        assert shifted.drift.max_heatmap_diff == pytest.approx(0.25, abs=1e-3)
        ref = rows["reference (torch fp32)", batch_size]
        assert shifted.throughput_vs_reference == pytest.approx(shifted.throughput_ips / ref.throughput_ips)
        assert shifted.p50_speedup_vs_reference == pytest.approx(ref.latency_ms.p50 / shifted.latency_ms.p50)

    # what cannot run here is skipped with its reason; what breaks while running fails in its own rows
    assert rows["test-needs-library fp32", None].status == "skipped"
    assert rows["test-needs-library fp32", None].reason == "missing library: No module named 'tensorrt'"
    assert rows["test-unavailable int8", None].reason.endswith("no CUDA device here")
    assert rows["test-shifted int8 [dx=3,dy=-4]", None].reason == "test-shifted: no int8"
    assert "int8 not supported" in rows["torch int8", None].reason
    broken = rows["test-broken fp32", 2]
    assert broken.status == "failed" and broken.reason == "RuntimeError: engine exploded"

    # the drift pass runs the session infer runs: its rows count the images infer would flag
    model, _ = load_weights(tiny_weights, "head")
    images = sorted(head_images.iterdir())
    flagged = sum(bool(r.flags) for r in run_inference(images, HEAD, TorchBackend(model, HEAD), batch_size=1))
    assert flagged == 1 and [rows["reference (torch fp32)", b].flagged for b in (1, 2)] == [flagged, flagged]
    assert all(row.flagged is not None for row in report.rows if row.status == "ok")

    markdown = (out / "bench.md").read_text()
    assert "| reference (torch fp32) | fp32 | 1 |" in markdown and "test-shifted fp32 [dx=3,dy=-4]" in markdown
    assert "test-unavailable fp32: skipped, test-unavailable: no CUDA device here" in markdown
    assert report.command in markdown and "torch 2." in markdown
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp"))


def test_bench_bad_options_fail_in_one_line(tiny_weights, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "-a", "chest", "-w", str(tiny_weights), "--images", str(tmp_path / "no")])
    assert result.exit_code == 2 and "--images must be a folder" in result.stderr
    result = runner.invoke(app, ["bench", "-a", "chest", "-w", str(tiny_weights), "--batch-sizes", "1,x"])
    assert result.exit_code == 2 and "--batch-sizes" in result.stderr
    result = runner.invoke(app, ["bench", "-a", "chest", "-w", str(tiny_weights), "--option", "nokey"])
    assert result.exit_code == 2 and "NAME:KEY=VALUE" in result.stderr
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["bench", "-a", "chest", "-w", str(tiny_weights), "--device", "cuda"])
        assert result.exit_code == 2 and "CUDA is not available" in result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_on_cuda(tiny_weights, head_images, tmp_path):
    """On a GPU: CUDA-event stage split, peak device memory and the GPU's name in the header."""
    out = tmp_path / "gpu"
    result = CliRunner().invoke(app, [
        "bench", "--anatomy", "head", "-w", str(tiny_weights), "--images", str(head_images), "--device", "cuda",
        "--backends", "torch", "--precisions", "fp32,fp16", "--batch-sizes", "1,4", "--iters", "3",
        "--out-dir", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = BenchReport.model_validate_json((out / "bench.json").read_text())
    assert report.environment.gpu and report.environment.cuda
    for row in report.rows:
        assert row.status == "ok" and row.peak_gpu_memory_mb > 0
        assert {"h2d", "compute", "decode", "d2h"} <= set(row.stages_ms)
        assert sum(row.stages_ms[s] for s in ("h2d", "compute", "decode", "d2h")) <= row.latency_ms.mean * 1.05
    fp16 = next(r for r in report.rows if r.precision == "fp16")
    assert fp16.drift.max_heatmap_diff < 0.05


def test_a_precision_s_own_artifact_replaces_the_backend_s_at_that_precision_only():
    """``--artifact openvino:int8=chest.int8.xml`` beside ``openvino:chest.xml``: one bench run measures a float
    model and a quantized one; a plain ``.onnx`` goes to the first backend that reads it."""
    from landmark_edge.bench.runner import parse_specs
    from landmark_edge.commands.bench import _artifacts
    from landmark_edge.runtime.registry import BackendChoice

    items = ["openvino:int8=chest.int8.xml", "openvino:chest.xml", "chest.onnx"]
    artifacts = _artifacts(items, ["openvino", "onnxruntime"])
    assert artifacts == {("openvino", "int8"): Path("chest.int8.xml"), ("openvino", None): Path("chest.xml"),
                         ("onnxruntime", None): Path("chest.onnx")}  # fmt: skip
    own = {key: path for key, path in artifacts.items() if key[1] is not None}
    choice = BackendChoice("openvino", artifacts["openvino", None], options={"threads": 2})
    every = [(None, "fp32"), (None, "bf16"), (None, "int8")]
    specs = {s.choice.precision: s.choice for s in parse_specs([choice], every, own)}
    assert specs["int8"].artifact == Path("chest.int8.xml") and specs["bf16"].artifact == Path("chest.xml")
    assert specs["fp32"].artifact == Path("chest.xml") and specs["int8"].options == {"threads": 2}
    plain = parse_specs([BackendChoice("openvino")], [(None, "fp32"), (None, "int8")], own)
    assert [s.choice.artifact for s in plain] == [None, Path("chest.int8.xml")]


def test_a_named_precision_is_tried_for_its_backend_only():
    """``--precisions fp32,openvino:bf16,onnxruntime:int8``: bf16 and int8 where asked, fp32 everywhere; a name or
    precision that is not in the run is one line before anything is measured."""
    from landmark_edge.bench.runner import parse_specs
    from landmark_edge.commands.bench import _precisions
    from landmark_edge.runtime.registry import BackendChoice

    names = ["torch", "onnxruntime", "openvino"]
    pairs = _precisions("fp32,openvino:bf16,onnxruntime:int8", names)
    assert pairs == [(None, "fp32"), ("openvino", "bf16"), ("onnxruntime", "int8")]
    specs = parse_specs([BackendChoice(name) for name in names], pairs)
    assert [(s.choice.backend, s.choice.precision) for s in specs] == [
        ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16")]  # fmt: skip
    for text, message in (("fp32,tensorrt:int8", "the tensorrt backend is not among --backends"),
                          ("openvino:fp64", "unknown precision 'fp64'")):  # fmt: skip
        result = CliRunner().invoke(app, ["bench", "-a", "chest", "--backends", ",".join(names), "--precisions", text])
        assert result.exit_code == 2 and message in result.stderr, result.output
