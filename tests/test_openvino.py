"""OpenVINO backend and IR export: exact fp32 against torch, the precision that ran, IR metadata round trip, the
AMD guardrail's failure path (simulated), int8 through NNCF, and one-line refusals; clean skips without OpenVINO."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from landmark_edge.anatomy import get_anatomy
from landmark_edge.cli import app
from landmark_edge.decode import DecodeMethod, decode_heatmaps
from landmark_edge.export.loaders import OnnxFromWeights
from landmark_edge.export.onnx import FP32_TOLERANCE, LANDMARK_TOLERANCE_PX
from landmark_edge.export.profiles import ProfileError, load_profile, with_overrides
from landmark_edge.runtime.registry import BackendRequest, BackendUnavailable, create_backend
from landmark_edge.transforms import read_grid_pixels
from tests.conftest import DATA, require

CHEST = get_anatomy("chest")
HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(
    not HAVE_OPENVINO, reason="openvino not installed (pip install 'landmark-edge[openvino]')"
)
needs_nncf = pytest.mark.skipif(
    importlib.util.find_spec("nncf") is None, reason="nncf not installed (pip install 'landmark-edge[openvino-export]')"
)


def _pixels(batch: int = 2) -> np.ndarray:
    from landmark_edge.export.onnx import EXAMPLE_IMAGE

    pixels = read_grid_pixels(EXAMPLE_IMAGE, CHEST.grid)
    return np.stack([pixels, np.fliplr(pixels)][:batch])


def _request(weights, artifact=None, graph_decode=DecodeMethod.SUBPIXEL, **kw) -> BackendRequest:
    """A request as the commands make it, its cached graph decoding ``graph_decode`` in the graph."""
    loader = OnnxFromWeights(weights, CHEST, graph_decode)
    return BackendRequest(weights, CHEST, artifact=artifact, onnx_loader=loader, **kw)


def _export_ir(weights, out, *extra: str) -> dict:
    args = ["export", "-a", "chest", "-w", str(weights), "--to", "openvino", "-o", str(out), "--decode", "subpixel"]
    result = CliRunner().invoke(app, [*args, *extra, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    (report,) = json.loads(result.stdout)
    return report


def test_without_openvino_the_backend_is_unavailable_in_one_line(tiny_weights, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(BackendUnavailable) as error:
        create_backend("openvino", _request(tiny_weights))
    assert "\n" not in str(error.value) and "landmark-edge[openvino]" in str(error.value)


@needs_openvino
def test_fp32_matches_torch_and_reports_what_ran(tiny_weights):
    """The weights' cached graph in OpenVINO: the f32 hint is set, heatmaps equal torch's, the runtime graph says
    fp32; a decoder other than the graph's decodes its heatmaps on the host."""
    from landmark_edge.runtime.openvino import OvOptions, compile_properties

    assert compile_properties("fp32", OvOptions())["INFERENCE_PRECISION_HINT"] == "f32"
    want = create_backend("torch", _request(tiny_weights)).run(_pixels(), return_heatmaps=True)
    for decode in (DecodeMethod.SUBPIXEL, DecodeMethod.ARGMAX):
        backend = create_backend("openvino", _request(tiny_weights, decode=decode, options={"threads": 1}))
        assert backend.graph_decodes is (decode is DecodeMethod.SUBPIXEL)
        assert backend.run_info().precision == "fp32" and set(backend.layers.values()) == {"fp32"}
        got = backend.run(_pixels(), return_heatmaps=True)
        assert np.abs(got.heatmaps - want.heatmaps).max() < FP32_TOLERANCE
        backend.close()
        own, _ = decode_heatmaps(torch.from_numpy(got.heatmaps), decode)
        assert np.abs(got.xy - own.numpy()).max() <= LANDMARK_TOLERANCE_PX


@needs_openvino
def test_options_are_typed_and_int8_needs_an_ir(tiny_weights):
    with pytest.raises(Exception, match="unknown option"):
        create_backend("openvino", _request(tiny_weights, options={"thread": 2}))
    with pytest.raises(BackendUnavailable, match="cpu-openvino-int8") as error:
        create_backend("openvino", _request(tiny_weights, precision="int8"))
    assert "\n" not in str(error.value)


@needs_openvino
def test_ir_export_round_trip_fp32_and_bf16(tiny_weights, tmp_path):
    """The saved fp32 IR is checked within 1e-4 of torch, carries the graph's metadata and precision, and runs
    through --artifact; a bf16 IR says bf16 and its hint, and is refused at another precision."""
    import openvino as ov

    from landmark_edge.contracts import IR_PRECISION_HINT, IR_SECTION

    report = _export_ir(tiny_weights, tmp_path / "chest.xml")
    assert max(v for k, v in report["max_abs_diff"].items() if k.startswith("heatmaps")) < FP32_TOLERANCE
    assert (tmp_path / "chest.bin").is_file()
    model = ov.Core().read_model(str(tmp_path / "chest.xml"))
    assert model.get_rt_info([IR_SECTION, "precision"]).astype(str) == "fp32"
    assert model.get_rt_info([IR_SECTION, "anatomy"]).astype(str) == "chest"
    assert all(op.get_output_element_type(0).get_type_name() != "f16" for op in model.get_ordered_ops()
               if op.get_type_name() == "Constant")  # fmt: skip  (saved without fp16 weight compression)
    want = create_backend("torch", _request(tiny_weights)).run(_pixels(), return_heatmaps=True)
    backend = create_backend("openvino", BackendRequest(None, CHEST, artifact=tmp_path / "chest.xml"))
    assert backend.info.decode is DecodeMethod.SUBPIXEL and backend.graph_decodes
    assert np.abs(backend.run(_pixels(), return_heatmaps=True).heatmaps - want.heatmaps).max() < FP32_TOLERANCE
    backend.close()

    bf16 = _export_ir(tiny_weights, tmp_path / "chest.bf16.xml", "--precision", "bf16")
    assert bf16["precision"] == "bf16" and bf16["drift"] is not None
    model = ov.Core().read_model(str(tmp_path / "chest.bf16.xml"))
    assert model.get_rt_info([IR_SECTION, IR_PRECISION_HINT]).astype(str) == "bf16"
    with pytest.raises(BackendUnavailable, match="--precision bf16") as error:
        create_backend("openvino", BackendRequest(None, CHEST, artifact=tmp_path / "chest.bf16.xml"))
    assert "\n" not in str(error.value)
    ran = create_backend("openvino", BackendRequest(None, CHEST, precision="bf16", artifact=tmp_path / "chest.bf16.xml"))
    assert ran.run_info().precision in ("bf16", "fp32")  # fp32 where the CPU has no bf16: read back, not echoed
    ran.close()


@needs_openvino
def test_probe_crash_is_one_line_naming_the_fallback_and_is_remembered(tiny_weights, monkeypatch, tmp_path):
    """A compile that kills the process (SIGFPE, openvino#35943) is caught in the probe's subprocess."""
    from landmark_edge.runtime import openvino as backend_module

    monkeypatch.setenv("LANDMARK_EDGE_CACHE", str(tmp_path))
    monkeypatch.setattr(backend_module, "PROBE_CODE", "import os, signal; os.kill(os.getpid(), signal.SIGFPE)")
    with pytest.raises(BackendUnavailable) as error:
        create_backend("openvino", _request(tiny_weights))
    message = str(error.value)
    assert "\n" not in message and signal.SIGFPE.name in message and "--backend onnxruntime" in message

    def no_second_probe(*args, **kwargs):
        raise AssertionError("the probe's result is kept per machine and OpenVINO version")

    monkeypatch.setattr(subprocess, "run", no_second_probe)
    with pytest.raises(BackendUnavailable, match="SIGFPE"):
        create_backend("openvino", _request(tiny_weights))


def test_openvino_profiles_validate_and_refuse_what_openvino_cannot_write():
    bf16, int8 = load_profile("cpu-openvino-bf16"), load_profile("cpu-openvino-int8")
    assert (bf16.format, bf16.precision, int8.format, int8.precision) == ("openvino", "bf16", "openvino", "int8")
    assert int8.accuracy_control is not None and int8.calibration is not None
    with pytest.raises(ProfileError, match="fp16"):
        with_overrides(bf16, "test", precision="fp16")
    assert with_overrides(int8, "test", max_drift=0.25).accuracy_control.max_drift == 0.25


@needs_openvino
@needs_nncf
def test_int8_ir_through_nncf_records_what_stayed_float(tiny_weights, tmp_path):
    """NNCF accuracy control on the tiny network: an int8 IR whose runtime graph runs int8 layers, the heatmap
    product and decoder in the ignored scope, each float layer with its reason, and the bound's verdict."""
    chest = require(DATA / "chest" / "pngs")
    report = _export_ir(
        tiny_weights, tmp_path / "chest.int8.xml", "--precision", "int8",
        "--calibration", str(chest / "CHNCXR_000[1-3]_0.png"), "--validation", str(chest / "CHNCXR_025[0-1]_0.png"),
        "--max-drift", "1000",
    )  # fmt: skip
    int8 = report["int8"]
    assert int8["unit"] == "px" and int8["max_drift"] == 1000 and int8["met"] is True
    assert "heatmaps" in int8["ignored"] and int8["quantized"] > 0
    assert all(why for why in int8["float_layers"].values())
    backend = create_backend("openvino", BackendRequest(None, CHEST, precision="int8", artifact=tmp_path / "chest.int8.xml"))
    assert "int8" in backend.run_info().precision.split("+")


@needs_openvino
def test_real_images_fp32_within_1e4_and_bf16_bounded(tmp_path):
    """Shipped weights on real chest X-rays: OpenVINO fp32 heatmaps within 1e-4 of torch; bf16 (where the CPU runs
    it) moves no landmark more than 0.5 px."""
    from landmark_edge.weights import DEFAULT_WEIGHTS

    files = sorted(require(DATA / "chest" / "pngs").glob("CHNCXR_02[5-7]?_0.png"))[:2]
    pixels = np.stack([read_grid_pixels(path, CHEST.grid) for path in files])
    want = create_backend("torch", _request(DEFAULT_WEIGHTS)).run(pixels, return_heatmaps=True)
    fp32 = create_backend("openvino", _request(DEFAULT_WEIGHTS)).run(pixels, return_heatmaps=True)
    assert np.abs(fp32.heatmaps - want.heatmaps).max() < FP32_TOLERANCE
    bf16_backend = create_backend("openvino", _request(DEFAULT_WEIGHTS, precision="bf16"))
    bf16 = bf16_backend.run(pixels)
    assert np.linalg.norm(bf16.xy - want.xy, axis=-1).max() <= 0.5, bf16_backend.precision


@needs_openvino
def test_an_int8_ir_over_its_drift_bound_is_saved_with_one_warning(tiny_weights, tmp_path, monkeypatch):
    """When accuracy control runs out of iterations above the bound (the shipped chest weights: 2.24 px against
    1 px), export still writes the IR but says so in one line naming it, the drift and the bound."""
    import landmark_edge.export.openvino as openvino_export
    from landmark_edge.export.onnx import Validation

    def over_bound(weights, anatomy, out, **kwargs):
        int8 = openvino_export.Int8Report("px", 1.0, 16, 32, {}, initial_drift=23.5, final_drift=2.24, met=False)
        return openvino_export.IrReport(anatomy, Path(out), "int8", DecodeMethod.SUBPIXEL, Validation(), 2.24, "px",
                                        int8)  # fmt: skip

    monkeypatch.setattr(openvino_export, "export_ir", over_bound)
    out = tmp_path / "chest.int8.xml"
    result = CliRunner().invoke(app, ["export", "-a", "chest", "-w", str(tiny_weights), "--profile",
                                      "cpu-openvino-int8", "--calibration", str(tmp_path), "--validation",
                                      str(tmp_path), "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    iterations = load_profile("cpu-openvino-int8").accuracy_control.max_iterations
    assert str(out) in line and "2.24 px, over the bound of 1 px" in line
    assert f"{iterations} accuracy-control iterations" in line


def test_drift_metric_measures_original_pixels_and_reports_each_full_validation():
    """NNCF's validation function: the largest landmark move in original-image pixels (one landmark shifted 3 grid
    px on an image twice the grid's size moves 6 px; the six landmarks' mean move is 1 px, the tie-break), offset
    so higher is better; a full validation is one reported accuracy-control step, a subset (layer ranking) is
    counted, not reported."""
    from landmark_edge.contracts import HEATMAPS
    from landmark_edge.export.openvino import MEAN_MOVE_WEIGHT, METRIC_OFFSET, DriftImages, drift_metric

    height, width = CHEST.grid[1], CHEST.grid[0]
    ys, xs = np.mgrid[0:height, 0:width]

    def peaks(shift: float) -> np.ndarray:
        centres = [(100 + 40 * k + (shift if k == 0 else 0), 200 + 20 * k) for k in range(CHEST.num_landmarks)]
        maps = [np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 18.0) for x, y in centres]
        return np.stack(maps)[None].astype(np.float32)

    images = DriftImages(CHEST, [np.zeros((1, 1, height, width), np.float32)] * 2, [(2 * width, 2 * height)] * 2)
    images.set_reference(lambda batch: {HEATMAPS: peaks(0.0)})
    said: list[str] = []
    validate = drift_metric(images, lambda model: (lambda batch: {HEATMAPS: peaks(model)}), said.append)

    metric, per_image = validate(3.0, iter([0]))  # a ranking trial on a subset: counted, not reported
    assert metric == pytest.approx(METRIC_OFFSET - 6.0 - MEAN_MOVE_WEIGHT * 1.0, abs=1e-3)
    assert per_image == pytest.approx([METRIC_OFFSET - 6.0], abs=1e-3) and said == []
    metric, per_image = validate(0.0, iter([0, 1]))
    assert metric == pytest.approx(METRIC_OFFSET, abs=1e-6) and per_image == pytest.approx([METRIC_OFFSET] * 2)
    (line,) = said
    assert "step 0: max drift 0 px" in line and "1 ranking trials" in line
