"""int8 graphs for ONNX Runtime's CPU provider: quantized network, float heatmaps and decoder, metadata, backend."""

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from landmark_edge.anatomy import get_anatomy
from landmark_edge.cli import app
from landmark_edge.decode import DecodeMethod
from landmark_edge.contracts import HEATMAPS, read_onnx_info
from landmark_edge.export.onnx import onnx_graph
from landmark_edge.export.quantize import fine_stage_nodes, float_tail_nodes
from landmark_edge.runtime.registry import BackendRequest, BackendUnavailable, create_backend
from tests.conftest import DATA, require

runner = CliRunner()


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory):
    """Four real chest X-rays (the calibration set is the user's choice; four keep the test fast)."""
    source = require(DATA / "chest" / "pngs")
    folder = tmp_path_factory.mktemp("calibration")
    for path in sorted(source.glob("*.png"))[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.fixture(scope="module")
def int8_graph(tiny_weights, calibration_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "chest.int8.onnx"
    result = runner.invoke(app, ["export", "-a", "chest", "-w", str(tiny_weights), "-o", str(out), "--decode",
                                 "subpixel", "--onnx-precision", "int8", "--calibration", str(calibration_dir),
                                 "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)[0]


def test_float_tail_is_the_product_and_everything_after_it(tiny_weights):
    graph, _ = onnx_graph(tiny_weights, get_anatomy("chest"), decode=DecodeMethod.SUBPIXEL)
    tail = set(float_tail_nodes(graph))
    producer = next(n for n in graph.graph.node if HEATMAPS in n.output)
    assert producer.op_type == "Mul" and producer.name in tail
    downstream = {n.name for n in graph.graph.node if n.op_type in ("ArgMax", "Log", "GatherElements", "ReduceMax")}
    assert downstream and downstream <= tail
    assert not any(n.op_type == "Conv" for n in graph.graph.node if n.name in tail)


def test_fine_stages_are_the_nodes_at_half_the_grid_or_finer(tiny_weights):
    """Every conv at 512 or 256 px (encoder and decoder) stays float; none of the 128 px and coarser ones does."""
    graph, _ = onnx_graph(tiny_weights, get_anatomy("chest"), decode=DecodeMethod.SUBPIXEL)
    inferred = onnx.shape_inference.infer_shapes(graph)
    side = {v.name: v.type.tensor_type.shape.dim[2].dim_value for v in inferred.graph.value_info
            if len(v.type.tensor_type.shape.dim) == 4}  # fmt: skip
    fine = set(fine_stage_nodes(graph))
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert {side[n.output[0]] for n in convs if n.name in fine} == {512, 256}
    assert {side[n.output[0]] for n in convs if n.name not in fine} == {128, 64, 32}
    encoder_first = convs[0]  # the full-resolution stem, and the last conv before the local heatmaps
    assert encoder_first.name in fine and any(n.name in fine and n.output[0] in side for n in convs[-10:])


def test_int8_export_quantizes_the_network_and_keeps_the_tail_float(int8_graph):
    path, report = int8_graph
    model = onnx.load(str(path))
    info = read_onnx_info(model)
    assert info.precision == "int8" and info.decode == DecodeMethod.SUBPIXEL
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 20 and ops.count("DequantizeLinear") > 20
    producer = next(n for n in model.graph.node if HEATMAPS in n.output)
    assert producer.op_type == "Mul"  # the product is computed in float, not dequantized from 8 bits
    assert report["int8_drift_px"] is not None and np.isfinite(report["int8_drift_px"])


def test_infer_runs_the_int8_graph_and_refuses_a_precision_mismatch(int8_graph, calibration_dir):
    path, _ = int8_graph
    image = sorted(calibration_dir.glob("*.png"))[0]
    ok = runner.invoke(app, ["infer", str(image), "-a", "chest", "--backend", "onnxruntime", "--precision", "int8",
                             "--artifact", str(path), "-f", "json"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    landmarks = json.loads(ok.stdout)[0]["landmarks"]
    assert len(landmarks) == 6 and all(0 <= lm["x"] < 512 and 0 <= lm["y"] < 512 for lm in landmarks)
    wrong = runner.invoke(app, ["infer", str(image), "-a", "chest", "--backend", "onnxruntime", "--artifact",
                                str(path)])  # fmt: skip
    assert wrong.exit_code == 2 and "is an int8 graph; run it with --precision int8" in wrong.stderr


def test_in_memory_int8_needs_calibration_images(tiny_weights):
    request = BackendRequest(tiny_weights, get_anatomy("chest"), precision="int8")
    with pytest.raises(BackendUnavailable, match="onnxruntime int8: give calibration images"):
        create_backend("onnxruntime", request)


def test_int8_export_without_calibration_is_one_line(tiny_weights, tmp_path):
    result = runner.invoke(app, ["export", "-a", "chest", "-w", str(tiny_weights), "-o", str(tmp_path / "x.onnx"),
                                 "--onnx-precision", "int8"])  # fmt: skip
    assert result.exit_code == 2 and "onnx_precision int8 needs a calibration section" in result.stderr
    assert not (tmp_path / "x.onnx").exists()
