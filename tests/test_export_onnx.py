"""ONNX export: every anatomy, ORT vs PyTorch at batch 1 and 3, metadata, in-graph decoding, BN folding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from landmark_edge.anatomy import ANATOMIES, get_anatomy
from landmark_edge.contracts import ArtifactError, read_onnx_info
from landmark_edge.decode import DecodeMethod, decode_heatmaps
from landmark_edge.export.onnx import (
    FP32_TOLERANCE,
    LANDMARK_TOLERANCE_PX,
    ExportError,
    fold_batchnorm,
    validate_onnx,
    validation_batch,
)
from landmark_edge.model import gu2net
from landmark_edge.model.gu2net import SingleAnatomy
from landmark_edge.weights import file_sha256, load_weights
from tests.conftest import DATA, DECODES, TINY, require

CHEST_IMAGES = ["chest/pngs/CHNCXR_0001_0.png", "chest/pngs/CHNCXR_0002_0.png", "chest/pngs/CHNCXR_0003_0.png"]


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", list(ANATOMIES))
def test_export_reports_ort_within_tolerance_at_batch_1_and_3(exported, name):
    exported[name]
    diffs = exported.reports[name]["max_abs_diff"]
    assert {"heatmaps@b1", "heatmaps@b3"} <= set(diffs)
    assert all(diffs[f"heatmaps@b{size}"] < FP32_TOLERANCE for size in (1, 3))


def test_onnx_runtime_matches_pytorch_on_real_images_at_batch_1_and_3(exported, tiny_weights):
    """An independent check of the exported chest graph on three real Shenzhen X-rays."""
    anatomy = get_anatomy("chest")
    batch = validation_batch(anatomy, [require(DATA / p) for p in CHEST_IMAGES])
    model, _ = load_weights(tiny_weights, "chest")
    with torch.inference_mode():
        expected = SingleAnatomy(model, "chest").eval()(batch).numpy()
    session = _session(exported["chest"])
    for size in (1, 3):
        heatmaps = session.run(["heatmaps"], {"image": batch[:size].numpy()})[0]
        assert heatmaps.shape == (size, anatomy.num_landmarks, *anatomy.grid_hw)
        assert np.abs(heatmaps - expected[:size]).max() < FP32_TOLERANCE


@pytest.mark.parametrize("name", list(ANATOMIES))
def test_graph_carries_metadata_and_is_folded_with_dynamic_batch(exported, tiny_weights, name):
    anatomy = get_anatomy(name)
    info = read_onnx_info(exported[name])
    assert info.anatomy == name and info.num_landmarks == anatomy.num_landmarks
    assert info.landmark_names == [anatomy.landmark_name(i) for i in range(anatomy.num_landmarks)]
    assert tuple(info.grid) == anatomy.grid
    assert info.spacing_rule == anatomy.spacing_rule.value
    assert info.weights_sha256 == file_sha256(tiny_weights)
    assert info.decode == DECODES[name] and info.opset == 18 and "z-scored" in info.input
    graph = onnx.load(str(exported[name]))
    assert not [n for n in graph.graph.node if n.op_type == "BatchNormalization"]
    batch_dim = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size


def test_in_graph_decoding_equals_python_decoder(exported):
    for name, method in (("hand", DecodeMethod.ARGMAX), ("chest", DecodeMethod.SUBPIXEL)):
        x = validation_batch(get_anatomy(name))
        heatmaps, landmarks, confidence = _session(exported[name]).run(None, {"image": x.numpy()})
        xy, peak = decode_heatmaps(torch.from_numpy(heatmaps), method)
        tolerance = 0.0 if method is DecodeMethod.ARGMAX else LANDMARK_TOLERANCE_PX
        assert np.abs(landmarks - xy.numpy()).max() <= tolerance
        np.testing.assert_array_equal(confidence, peak.numpy())


def test_validation_catches_a_graph_that_differs_from_pytorch(exported):
    graph = onnx.load(str(exported["head"]))
    anatomy = get_anatomy("head")

    def wrong_reference(x: torch.Tensor) -> torch.Tensor:  # the graph's heatmaps are never all 0.5
        return torch.full((len(x), anatomy.num_landmarks, *anatomy.grid_hw), 0.5)

    result = validate_onnx(graph, wrong_reference, validation_batch(anatomy), None)
    assert result.worst_heatmap_diff > FP32_TOLERANCE
    assert set(result.max_abs_diff) == {"heatmaps@b1", "heatmaps@b3"}


def test_export_stops_before_writing_when_over_tolerance(exported, tiny_weights, tmp_path, monkeypatch):
    """The threshold logic of the pipeline: same graph as the fixture's, a tolerance it cannot meet."""
    from landmark_edge.export import onnx as export_onnx

    model, _ = load_weights(tiny_weights, "head")
    monkeypatch.setattr(export_onnx, "onnx_graph", lambda *a, **kw: (onnx.load(str(exported["head"])), model))
    out = tmp_path / "head.onnx"
    with pytest.raises(ExportError, match=r"head: ONNX Runtime differs from PyTorch by .* on heatmaps@b1 \(limit 1e-12\)"):
        export_onnx.export_anatomy(tiny_weights, "head", out, tolerance=1e-12)
    assert not out.exists()


def test_fold_batchnorm_keeps_outputs_and_leaves_the_original_alone():
    torch.manual_seed(3)
    model = gu2net(**TINY).eval()
    for module in model.modules():  # non-trivial statistics, or folding would be the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 1, 64, 64)
    folded = fold_batchnorm(model, "chest")
    with torch.inference_mode():
        torch.testing.assert_close(folded(x, "chest"), model(x, "chest"), atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.global_net.dilated["chest"].modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.global_net.dilated["chest"].modules())


def test_metadata_less_onnx_is_one_line(tmp_path):
    path = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(path))
    with pytest.raises(ArtifactError, match="no landmark-edge metadata"):
        read_onnx_info(path)
