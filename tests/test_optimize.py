"""The inference rewrite (BN folding, fused stages), the Triton kernels, and the compiled / aoti backends.

CPU tests check the rewrite against the eager model and the kernels under Triton's interpreter; tests marked
``cuda`` need a GPU (and Triton) and skip without one. Speed is measured in benchmarks/, never here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch._dynamo.utils import counters
from typer.testing import CliRunner

from landmark_edge.anatomy import get_anatomy
from landmark_edge.cli import app
from landmark_edge.errors import LandmarkEdgeError, WeightsError
from landmark_edge.model import gu2net
from landmark_edge.optimize import rewrite_for_inference, select_anatomy, summarize
from landmark_edge.optimize import triton_kernels
from landmark_edge.runtime.compiled import (
    DEFAULT_CUDA_MODE,
    CompileOptions,
    batch_buckets,
    bucket_for,
    compile_options,
    load_pt2,
    pad_batch,
)
from landmark_edge.runtime.registry import BackendRequest, BackendUnavailable, create_backend

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
FULL_WIDTHS = (64, 128, 256, 512, 512)  # the paper's; global width 128
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_triton_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and triton_kernels.IMPORTED), reason="needs a CUDA GPU and Triton"
)


def _with_random_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics and affine terms, so folding mistakes cannot hide behind identity BNs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.rand(c, generator=generator) * 2 - 1)
                module.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return _with_random_bn(gu2net(**TINY))


@pytest.mark.parametrize("anatomy", ["head", "hand", "chest"])
def test_rewrite_matches_eager_for_each_anatomy(tiny_model, anatomy):
    x = torch.randn(2, 1, 64, 48, generator=torch.Generator().manual_seed(1))
    net = rewrite_for_inference(tiny_model, anatomy)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), tiny_model(x, anatomy), atol=1e-4, rtol=0)


def test_rewrite_full_width_matches_eager_at_small_size():
    torch.manual_seed(2)
    model = _with_random_bn(gu2net(["chest"]), seed=2)
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(rewrite_for_inference(model, "chest")(x), model(x, "chest"), atol=1e-4, rtol=0)


def test_rewrite_leaves_the_source_model_untouched(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    rewrite_for_inference(tiny_model, "hand", dtype=torch.bfloat16, channels_last=True)
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _expected_counts(widths, global_width):
    """BN channels and depthwise-bias channels per anatomy, from the architecture (reference.md §1-2)."""
    w0, w1, w2, w3, w4 = widths
    blocks = [  # (in, mid, out) of the nine separable double convs
        (w0, w0, w0), (w0, w1, w1), (w1, w2, w2), (w2, w3, w3), (w3, w4, w4),
        ((w3 + w4), (w3 + w4) // 2, w2), (2 * w2, w2, w1), (2 * w1, w1, w0), (2 * w0, w0, w0),
    ]  # fmt: skip
    bn_channels = sum(mid + out for _, mid, out in blocks) + 5 * global_width
    depthwise_channels = sum(cin + mid for cin, mid, _ in blocks)
    return bn_channels, depthwise_channels


def test_parameter_and_operator_counts_full_width():
    """Known answers: reference.md §4 active parameters; the rewrite removes 2 BN parameters per channel and the
    depthwise biases, and every batch_norm op; 46 convolutions remain on the cuDNN path (18 fused pairs x 2 + 5
    dilated + 5 plain), 18 LeakyReLU and 5 ReLU."""
    torch.manual_seed(3)
    model = gu2net()
    active = {"head": 2_742_694, "hand": 2_756_554, "chest": 2_732_684}
    bn_channels, depthwise_channels = _expected_counts(FULL_WIDTHS, 128)
    x = torch.zeros(1, 1, 32, 32)
    for anatomy, params in active.items():
        eager = summarize(select_anatomy(model, anatomy), x, anatomy)
        fused = summarize(rewrite_for_inference(model, anatomy), x)
        assert eager.parameters == params
        assert fused.parameters == params - 2 * bn_channels - depthwise_channels
    assert eager.modules == {"BatchNorm2d": 23, "Conv2d": 46}
    assert fused.modules == {"Conv2d": 5, "FusedConvReLU": 5, "FusedSeparableConv": 18}
    assert (eager.aten_ops["batch_norm"], fused.aten_ops.get("batch_norm", 0)) == (23, 0)
    assert eager.aten_ops["conv2d"] == fused.aten_ops["conv2d"] == 46
    assert (fused.aten_ops["leaky_relu"], fused.aten_ops["relu"]) == (18, 5)


def test_precision_and_channels_last(tiny_model):
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected = tiny_model(x, "chest")
        nhwc = rewrite_for_inference(tiny_model, "chest", channels_last=True)
        stage = nhwc.model.local_net.in_block.stage1
        assert stage.pointwise_weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(nhwc(x), expected, atol=1e-4, rtol=0)
        bf16 = rewrite_for_inference(tiny_model, "chest", dtype=torch.bfloat16)
        assert bf16.model.local_net.in_block.stage1.pointwise_weight.dtype == torch.bfloat16
        out = bf16(x)
        assert out.dtype == torch.float32  # callers always get float32 heatmaps
        torch.testing.assert_close(out, expected, atol=3e-2, rtol=0)  # bf16: 8 mantissa bits over ~50 layers


def test_triton_kernels_asked_for_without_triton_or_gpu_fail_in_one_line(tiny_model):
    if triton_kernels.available():
        pytest.skip("Triton can run here")
    with pytest.raises(LandmarkEdgeError, match="Triton"):
        rewrite_for_inference(tiny_model, "chest", kernels="triton")


def test_triton_kernels_under_the_interpreter_match_eager():
    """The Triton kernels on CPU tensors through TRITON_INTERPRET=1: odd sizes, batch 1, both layouts."""
    if not triton_kernels.IMPORTED:
        pytest.skip(f"Triton not importable: {triton_kernels.unavailable_reason()}")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "triton_interpreted.py")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    errors = json.loads(done.stdout)
    assert len(errors) == 16
    assert max(errors.values()) < 1e-5, errors


@pytest.fixture()
def one_triton_config(monkeypatch):
    """Each kernel launched with its first autotune configuration only: the result does not depend on the tile
    sizes, and autotuning all 8 for every shape, dtype and layout is what made the GPU tests take minutes."""
    for tuned in (triton_kernels._separable_tuned, triton_kernels._dilated_tuned):
        monkeypatch.setattr(tuned, "configs", tuned.configs[:1])


def _check_kernels_against_cudnn(shape, dtype, layouts=(torch.contiguous_format, torch.channels_last)):
    """fp32 within 1e-4 relative (TF32 off), fp16 within 1e-2 and bf16 within 4e-2 of the largest output."""
    n, c_in, c_out, h, w = shape
    tolerance = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}[dtype]
    generator = torch.Generator(device="cuda").manual_seed(0)
    rand = lambda *s: torch.randn(*s, device="cuda", generator=generator)  # noqa: E731
    x, bias = rand(n, c_in, h, w), rand(c_out)
    dw, pw, weight = rand(c_in, 1, 3, 3), rand(c_out, c_in, 1, 1) / c_in**0.5, rand(c_out, c_in, 3, 3) / c_in**0.5
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        ref_sep = F.leaky_relu(F.conv2d(F.conv2d(x, dw, None, padding=1, groups=c_in), pw, bias), 0.01)
        ref_dil = [F.relu(F.conv2d(x, weight, bias, padding=d, dilation=d)) for d in (1, 2, 5)]
        cast = [t.to(dtype) for t in (x, dw, pw, bias, weight)]
        for memory_format in layouts:
            xin = cast[0].contiguous(memory_format=memory_format)
            out = triton_kernels.fused_separable(xin, cast[1], cast[2], cast[3], 0.01).float()
            assert (out - ref_sep).abs().max() <= tolerance * ref_sep.abs().max()
            for d, ref in zip((1, 2, 5), ref_dil, strict=True):
                out = triton_kernels.dilated_conv_relu(xin, cast[4], cast[3], d).float()
                assert (out - ref).abs().max() <= tolerance * ref.abs().max()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


@pytest.mark.gpu
@needs_triton_gpu
@pytest.mark.parametrize(
    "shape, dtype",
    [((1, 3, 5, 7, 9), torch.float32), ((2, 64, 48, 67, 45), torch.float16), ((2, 64, 48, 67, 45), torch.bfloat16),
     ((1, 32, 64, 128, 96), torch.float32)],
)  # fmt: skip
def test_triton_kernels_on_gpu_match_cudnn(shape, dtype, one_triton_config):
    """Odd sizes, channel counts off the tile sizes, every dtype, both layouts, one launch configuration."""
    _check_kernels_against_cudnn(shape, dtype)


@pytest.mark.gpu
@needs_triton_gpu
def test_autotuned_triton_kernels_on_gpu_match_cudnn():
    """The autotuned launch (all 8 configurations benchmarked) at a full-resolution GU2Net stage shape, fp16."""
    _check_kernels_against_cudnn((1, 64, 64, 256, 256), torch.float16, layouts=(torch.channels_last,))


def test_batch_buckets_and_padding():
    assert batch_buckets(1) == [1]
    assert batch_buckets(32) == [1, 2, 4, 8, 16, 32]
    assert batch_buckets(12) == [1, 2, 4, 8, 12]
    assert [bucket_for(b, 12) for b in (1, 3, 5, 9, 12)] == [1, 4, 8, 12, 12]
    with pytest.raises(LandmarkEdgeError, match="1..12"):
        bucket_for(13, 12)
    x = torch.ones(3, 1, 2, 2)
    padded = pad_batch(x, 4)
    assert padded.shape == (4, 1, 2, 2) and padded[3].abs().sum() == 0 and torch.equal(padded[:3], x)


def test_backend_options_and_artefact_errors(tmp_path, chest_only_weights):
    with pytest.raises(LandmarkEdgeError, match="unknown option"):
        CompileOptions.from_dict({"mode": "default", "graphs": True})
    chest = get_anatomy("chest")
    with pytest.raises(BackendUnavailable, match="--artifact"):
        create_backend("aoti", BackendRequest(None, chest))
    bogus = tmp_path / "bogus.pt2"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="bogus.pt2: not a loadable"):
        load_pt2(bogus)
    result = CliRunner().invoke(app, ["compile", "-w", str(chest_only_weights), "-a", "chest", "-o", "x.onnx"])
    assert result.exit_code == 2 and "must be named *.pt2" in result.stderr


def test_aoti_refuses_an_anatomy_precision_or_batch_the_package_was_not_compiled_for(tmp_path, monkeypatch):
    """Checked from the package's metadata, so a request never runs silently as something else."""
    from landmark_edge.runtime import compiled

    package = compiled.Pt2Package(runner=lambda x: x, anatomy=get_anatomy("chest"), height=512, width=512,
                                  dtype="float16", max_batch_size=4, device_type="cpu", metadata={})  # fmt: skip
    monkeypatch.setattr(compiled, "load_pt2", lambda path, device: package)
    path = tmp_path / "chest.pt2"
    ask = dict(weights=None, artifact=path, max_batch_size=4)
    with pytest.raises(BackendUnavailable, match="chest.pt2: package is for chest, not head"):
        create_backend("aoti", BackendRequest(**ask, anatomy=get_anatomy("head"), precision="fp16"))
    with pytest.raises(BackendUnavailable, match=r"a fp16 package; run it with --precision fp16 or make a fp32 one "
                                                 r"\(landmark-edge compile --precision fp32\)"):
        create_backend("aoti", BackendRequest(**ask, anatomy=package.anatomy, precision="fp32"))
    with pytest.raises(BackendUnavailable, match="the package runs batches up to 4, not 8"):
        create_backend("aoti", BackendRequest(**(ask | {"max_batch_size": 8}), anatomy=package.anatomy,
                                              precision="fp16"))
    opened = create_backend("aoti", BackendRequest(**ask, anatomy=package.anatomy, precision="fp16"))
    assert opened.anatomy.name == "chest"


def test_compile_options_keep_the_mode_and_silence_autotuning():
    """torch.compile takes a mode or options, not both: the mode is expanded, the quiet switches added."""
    tuned = compile_options("max-autotune-no-cudagraphs")
    assert tuned["max_autotune"] is True and tuned["coordinate_descent_tuning"] is True
    for options in (tuned, compile_options(None), compile_options(DEFAULT_CUDA_MODE)):
        assert options["autotune_num_choices_displayed"] == 0
        assert options["max_autotune_report_choices_stats"] is False
    assert "max_autotune" not in compile_options(DEFAULT_CUDA_MODE)  # the start-up default autotunes nothing
    assert CompileOptions().kernels == "cudnn"  # Triton kernels: opt-in until a GPU run shows them faster


@pytest.mark.slow
def test_compiled_backend_on_cpu_is_built_for_every_bucket_quietly(chest_only_weights, capfd):
    """torch.compile (Inductor, C++ on CPU) of the rewritten model: every bucket (1, 2, 4) is compiled while the
    backend is built, reported as one progress line each and nothing else on stdout/stderr; serving batches of
    1..4 afterwards compiles nothing more; 3 images padded into the batch-4 bucket give the torch landmarks."""
    lines = []
    request = BackendRequest(chest_only_weights, get_anatomy("chest"), decode="argmax", max_batch_size=4,
                             progress=lines.append)  # fmt: skip
    pixels = np.random.default_rng(5).integers(0, 255, (4, 512, 512), dtype=np.uint8)  # the chest grid
    expected = create_backend("torch", request).run(pixels[:3], return_heatmaps=True)
    capfd.readouterr()
    before = counters["stats"]["unique_graphs"]
    backend = create_backend("compiled", request)
    assert capfd.readouterr() == ("", "")
    assert [line.split(" (")[0] for line in lines[:3]] == [f"compiling chest: batch {b}" for b in (1, 2, 4)]
    assert lines[3].startswith("compiled chest for batch 1..4 in ") and len(lines) == 4
    compilations = counters["stats"]["unique_graphs"]
    assert compilations - before == 2  # batch 1, and one dynamic-batch graph for 2 and 4 (not one per bucket)
    got = backend.run(pixels[:3], return_heatmaps=True)
    for size in (1, 2, 4):
        backend.run(pixels[:size])
    assert counters["stats"]["unique_graphs"] == compilations
    np.testing.assert_allclose(got.heatmaps, expected.heatmaps, atol=1e-5)
    np.testing.assert_array_equal(got.xy, expected.xy)


@pytest.mark.slow
def test_compile_command_package_runs_in_infer_without_weights(tmp_path, chest_only_weights):
    """`compile` -> .pt2 -> `infer --backend aoti --artifact` (no --weights) gives the torch backend's landmarks."""
    runner = CliRunner()
    package = tmp_path / "chest.pt2"
    result = runner.invoke(app, ["compile", "-w", str(chest_only_weights), "-a", "chest", "-o", str(package),
                                 "--max-batch", "2", "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["max_abs_heatmap_diff_vs_eager_fp32"] < 1e-5
    assert report["rewritten"]["aten_ops"].get("batch_norm", 0) == 0
    assert load_pt2(package).metadata["weights_sha256"] == report["weights_sha256"]
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(6).integers(0, 255, (300, 260), dtype=np.uint8)).save(image)
    common = [str(image), "-a", "chest", "--format", "json", "--decode", "argmax"]
    eager = runner.invoke(app, ["infer", *common, "-w", str(chest_only_weights), "--backend", "torch"])
    packaged = runner.invoke(app, ["infer", *common, "--backend", "aoti", "--artifact", str(package), "-b", "2"])
    assert packaged.exit_code == 0, packaged.output
    landmarks = [json.loads(r.stdout)[0]["landmarks"] for r in (eager, packaged)]
    assert [(p["x"], p["y"]) for p in landmarks[0]] == [(p["x"], p["y"]) for p in landmarks[1]]


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("kernels", ["cudnn", "triton"])
def test_compiled_backend_with_cuda_graphs_matches_torch(chest_only_weights, kernels, request):
    """Buckets 1, 2, 4 built and captured as CUDA graphs; 3 images padded to 4; a second call replays the graphs."""
    if kernels == "triton":
        if not triton_kernels.IMPORTED:
            pytest.skip("needs Triton")
        request.getfixturevalue("one_triton_config")
    backend_request = BackendRequest(chest_only_weights, get_anatomy("chest"), decode="argmax", device="cuda",
                                     max_batch_size=4, options={"kernels": kernels})  # fmt: skip
    pixels = np.random.default_rng(7).integers(0, 255, (3, 512, 512), dtype=np.uint8)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        expected = create_backend("torch", backend_request).run(pixels, return_heatmaps=True)
        backend = create_backend("compiled", backend_request)
        assert backend.graphs is not None and len(backend.graphs._graphs) == 3  # all buckets captured when built
        for _ in range(2):
            got = backend.run(pixels, return_heatmaps=True)
            np.testing.assert_allclose(got.heatmaps, expected.heatmaps, atol=1e-4)
        got_one = backend.run(pixels[:1], return_heatmaps=True)
        np.testing.assert_allclose(got_one.heatmaps, expected.heatmaps[:1], atol=1e-4)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
