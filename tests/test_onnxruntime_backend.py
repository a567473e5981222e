"""ONNX Runtime backend: agrees with the torch reference, uses in-graph decoding, refuses a silent CPU fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from landmark_edge.anatomy import get_anatomy
from landmark_edge.cli import app
from landmark_edge.decode import DecodeMethod, decode_heatmaps
from landmark_edge.export.loaders import OnnxFromWeights
from landmark_edge.export.onnx import FP32_TOLERANCE, LANDMARK_TOLERANCE_PX
from landmark_edge.runtime.onnxruntime import OrtSettings, provider_list
from landmark_edge.runtime.registry import BackendRequest, BackendUnavailable, create_backend
from tests.conftest import DATA, require

CHEST = get_anatomy("chest")


def _pixels(batch: int = 2) -> np.ndarray:
    """Grid-sized uint8 X-ray content: the bundled example and its mirror image."""
    from landmark_edge.export.onnx import EXAMPLE_IMAGE
    from landmark_edge.io.images import read_image
    from landmark_edge.transforms import grid_pixels

    pixels = grid_pixels(read_image(EXAMPLE_IMAGE).image, CHEST.grid)
    return np.stack([pixels, np.fliplr(pixels)][:batch])


def _request(weights, artifact, **kw) -> BackendRequest:
    """A request as the commands make it: weights come with their ONNX loader (which caches the export)."""
    loader = OnnxFromWeights(weights, CHEST, kw.get("decode", DecodeMethod.SUBPIXEL), kw.get("require_fit", True))
    return BackendRequest(weights, CHEST, artifact=artifact, onnx_loader=loader, **kw)


def test_matches_torch_backend(exported, tiny_weights):
    """The chest graph decodes subpixel in the graph; asking for argmax decodes its heatmaps in Python."""
    want = create_backend("torch", _request(tiny_weights, None)).run(_pixels(), return_heatmaps=True)
    for decode in (DecodeMethod.SUBPIXEL, DecodeMethod.ARGMAX):
        ort_backend = create_backend("onnxruntime", _request(tiny_weights, exported["chest"], decode=decode))
        assert ort_backend.graph_decodes is (decode is DecodeMethod.SUBPIXEL)
        got = ort_backend.run(_pixels(), return_heatmaps=True)
        assert np.abs(got.heatmaps - want.heatmaps).max() < FP32_TOLERANCE
        np.testing.assert_allclose(got.confidence, want.confidence, atol=FP32_TOLERANCE)
        # Untrained heatmaps are flat, so 1e-7 of noise can move an argmax: coordinates are checked against the
        # decoder applied to the backend's own heatmaps instead of against torch's.
        own, _ = decode_heatmaps(torch.from_numpy(got.heatmaps), decode)
        assert np.abs(got.xy - own.numpy()).max() <= LANDMARK_TOLERANCE_PX
        assert ort_backend.run(_pixels(1)).heatmaps is None


def test_requested_gpu_provider_that_fell_back_is_one_line(exported, tiny_weights):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: no fallback to detect")
    with pytest.raises(BackendUnavailable) as error:
        create_backend("onnxruntime", _request(tiny_weights, exported["chest"], device="cuda"))
    message = str(error.value)
    assert "\n" not in message and "CUDAExecutionProvider" in message and "--allow-fallback" in message
    allowed = _request(tiny_weights, exported["chest"], device="cuda", allow_fallback=True)
    backend = create_backend("onnxruntime", allowed)
    assert backend.providers == ["CPUExecutionProvider"]


def test_tensorrt_provider_options_carry_profile_shapes_fp16_and_cache(tmp_path):
    settings = OrtSettings(device="tensorrt:1", precision="fp16", max_batch_size=8, trt_engine_cache=tmp_path)
    (trt, trt_options), (cuda, cuda_options), (cpu, _) = provider_list(settings, (512, 416))
    assert (trt, cuda, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert trt_options["trt_fp16_enable"] is True and trt_options["device_id"] == 1 == cuda_options["device_id"]
    assert trt_options["trt_profile_min_shapes"] == "image:1x1x512x416"
    assert trt_options["trt_profile_max_shapes"] == "image:8x1x512x416"
    assert trt_options["trt_engine_cache_path"] == str(tmp_path) and trt_options["trt_engine_cache_enable"]
    with pytest.raises(BackendUnavailable, match="int8"):
        provider_list(OrtSettings(device="cuda", precision="int8"), (512, 512))


def test_graph_for_another_anatomy_is_refused(exported, tiny_weights):
    request = BackendRequest(tiny_weights, get_anatomy("hand"), artifact=exported["chest"])
    with pytest.raises(BackendUnavailable, match="for chest, not hand"):
        create_backend("onnxruntime", request)


def test_infer_cli_runs_an_exported_graph(exported, tiny_weights):
    image = require(DATA / "chest/pngs/CHNCXR_0001_0.png")
    args = ["infer", str(image), "-a", "chest", "--format", "json"]
    ort_run = CliRunner().invoke(app, [*args, "--backend", "onnxruntime", "--artifact", str(exported["chest"])])
    torch_run = CliRunner().invoke(app, [*args, "--weights", str(tiny_weights), "--backend", "torch"])
    assert ort_run.exit_code == 0 == torch_run.exit_code, ort_run.stderr + torch_run.stderr
    got, want = json.loads(ort_run.stdout)[0], json.loads(torch_run.stdout)[0]
    for a, b in zip(got["landmarks"], want["landmarks"]):
        assert abs(a["confidence"] - b["confidence"]) < 1e-4


def test_infer_with_a_graph_for_another_anatomy_is_one_line(exported):
    image = require(DATA / "chest/pngs/CHNCXR_0001_0.png")
    result = CliRunner().invoke(app, ["infer", str(image), "-a", "head", "--backend", "onnxruntime", "--artifact",
                                      str(exported["chest"])])  # fmt: skip
    assert result.exit_code == 2
    assert "graph is for chest, not head" in result.stderr and "Traceback" not in result.output


def test_evaluate_an_exported_graph_like_the_weights_it_came_from(exported, tiny_weights, tmp_path):
    data = require(DATA)
    args = ["evaluate", "-d", str(data), "-w", str(tiny_weights), "--anatomies", "chest", "--split", "val"]
    runs = {}
    for name, extra in {"onnxruntime": ["--artifact", str(exported["chest"])], "torch": []}.items():
        out = tmp_path / f"{name}.json"
        result = CliRunner().invoke(app, [*args, "--backend", name, *extra, "-o", str(out)])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(out.read_text())["anatomies"]["chest"]
    ort_images, torch_images = (r["per_image"] for r in (runs["onnxruntime"], runs["torch"]))
    assert [i["id"] for i in ort_images] == [i["id"] for i in torch_images] and len(ort_images) == 34
    # Untrained weights give flat heatmaps whose argmax can flip on 1e-7 noise, so compare the split's MRE loosely.
    ort_mre, torch_mre = (sum(i["original_mre"] for i in r) / len(r) for r in (ort_images, torch_images))
    assert ort_mre == pytest.approx(torch_mre, rel=0.05)


def test_evaluate_with_an_artifact_needs_one_anatomy(exported, tiny_weights):
    data = require(DATA)
    result = CliRunner().invoke(app, ["evaluate", "-d", str(data), "-w", str(tiny_weights), "--backend",
                                      "onnxruntime", "--artifact", str(exported["chest"])])  # fmt: skip
    assert result.exit_code == 2 and "holds one anatomy's network: name it with --anatomies" in result.stderr


def test_torch_backend_refuses_an_artifact_instead_of_ignoring_it(exported, tiny_weights):
    request = BackendRequest(tiny_weights, get_anatomy("chest"), artifact=exported["chest"])
    with pytest.raises(BackendUnavailable, match="torch backend: runs --weights; an exported artifact is for"):
        create_backend("torch", request)


def test_in_memory_export_is_cached_per_weights_file(tiny_weights, chest_only_weights, tmp_path, monkeypatch):
    """A second backend for the same weights runs the cached graph (no export); other weights export again."""
    from landmark_edge.io.cache import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    exports = []
    real_export = OnnxFromWeights.graph
    monkeypatch.setattr(OnnxFromWeights, "graph", lambda self, *a: exports.append(self.weights) or real_export(self, *a))
    pixels = _pixels()
    first = create_backend("onnxruntime", _request(tiny_weights, None)).run(pixels)
    again = create_backend("onnxruntime", _request(tiny_weights, None)).run(pixels)
    assert exports == [tiny_weights]
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    np.testing.assert_array_equal(first.xy, again.xy)
    other = create_backend("onnxruntime", _request(chest_only_weights, None)).run(pixels)
    assert exports == [tiny_weights, chest_only_weights]
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2
    assert not np.allclose(first.confidence, other.confidence)  # a different network, not the cached one


def test_cached_export_still_refuses_what_the_weights_header_refuses(tiny_weights, tmp_path, monkeypatch):
    from landmark_edge.io.cache import CACHE_ENV
    from landmark_edge.weights import WeightsError, load_weights, save_weights

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    model, _ = load_weights(tiny_weights)
    unfit = tmp_path / "unfit.safetensors"
    save_weights(model, unfit, assessments={"chest": {"fit_for_use": False, "assessment": "test MRE 99 px"}})
    with pytest.raises(WeightsError, match="unfit for chest"):
        create_backend("onnxruntime", _request(unfit, None))
    create_backend("onnxruntime", _request(unfit, None, require_fit=False))  # evaluate's way: fills the cache
    with pytest.raises(WeightsError, match="unfit for chest"):
        create_backend("onnxruntime", _request(unfit, None))


# A one-image `infer` run as the console script runs it, then whether torch (or the exporter) came in.
_INFER_IN_PROCESS = """
import sys
from landmark_edge.cli import make_app
try:
    make_app(["infer"])(sys.argv[1:], prog_name="landmark-edge")
except SystemExit as stop:
    assert stop.code == 0, stop.code
print(sorted({"torch", "onnx"} & set(sys.modules)), file=sys.stderr)
"""


def test_infer_with_a_cached_graph_imports_no_torch(tiny_weights, tmp_path):
    """The default CPU path on a cache hit (header, checksum, image, z-score, ONNX Runtime) runs without torch,
    which costs more start-up than the network; the first call exports (torch) and fills the cache."""
    from landmark_edge.export.onnx import EXAMPLE_IMAGE
    from landmark_edge.io.cache import CACHE_ENV

    command = [sys.executable, "-c", _INFER_IN_PROCESS, "infer", str(EXAMPLE_IMAGE), "--anatomy", "chest",
               "--weights", str(tiny_weights), "--format", "json"]  # fmt: skip
    env = {**os.environ, CACHE_ENV: str(tmp_path)}
    first, cached = (subprocess.run(command, env=env, capture_output=True, text=True, check=True) for _ in range(2))
    assert first.stderr.strip().endswith("['onnx', 'torch']")  # a cache miss: the export imports both
    assert cached.stderr.strip().endswith("[]")
    assert json.loads(cached.stdout) == json.loads(first.stdout)

