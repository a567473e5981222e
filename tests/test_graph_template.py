"""Shipped graph templates: filled with the weights they give the exporter's graph byte for byte, cover every
anatomy and decoding of the shipped network, and stay out of the way of any other network."""

from __future__ import annotations

import dataclasses

import onnx
import pytest

from landmark_edge.anatomy import get_anatomy
from landmark_edge.decode import DecodeMethod
from landmark_edge.export import graph_template, onnx as export_onnx
from landmark_edge.export.graph_template import TemplateError, fill_template, shipped_template
from landmark_edge.export.onnx import export_module, module_tensors, onnx_graph
from landmark_edge.weights import DEFAULT_WEIGHTS, load_weights, read_info

DECODINGS = (None, *DecodeMethod)
# The graph a one-image `infer` makes on a fresh install; the others take a full export each (slow).
EVERY_GRAPH = [
    (a, d) if (a, d) == ("chest", DecodeMethod.SUBPIXEL) else pytest.param(a, d, marks=pytest.mark.slow)
    for a in read_info(DEFAULT_WEIGHTS).anatomy_names
    for d in DECODINGS
]


@pytest.fixture(scope="module")
def shipped():
    return load_weights(DEFAULT_WEIGHTS)


@pytest.mark.parametrize(("anatomy", "decode"), EVERY_GRAPH)
def test_filled_template_is_the_exporters_graph(anatomy, decode, monkeypatch):
    """If this fails after a change to the network, the exporter or onnxslim: scripts/make_graph_templates.py."""
    target = get_anatomy(anatomy)
    with monkeypatch.context() as patch:
        patch.setattr(export_onnx, "shipped_template", lambda *args: None)
        exported, _ = onnx_graph(DEFAULT_WEIGHTS, target, decode=decode, require_fit=False)
    monkeypatch.setattr(export_onnx, "torch_to_onnx", _no_export)
    filled, _ = onnx_graph(DEFAULT_WEIGHTS, target, decode=decode, require_fit=False)
    assert filled.SerializeToString() == exported.SerializeToString()


def _no_export(*args, **kwargs):
    raise AssertionError("the exporter ran although a shipped template fits")


def test_every_anatomy_and_decoding_has_a_template_that_fills(shipped):
    model, info = shipped
    for anatomy in info.anatomy_names:
        for decode in DECODINGS:
            template = shipped_template(get_anatomy(anatomy), decode, 18, info.architecture)
            assert template is not None, (anatomy, decode)
            graph = fill_template(template, module_tensors(export_module(model, anatomy, decode)))
            assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
            assert graph.ByteSize() > 100 * template.ByteSize()  # the weights are in (11 MB vs ~50 KB)
            onnx.checker.check_model(graph, full_check=True)


def test_no_template_for_another_network_grid_or_opset(shipped, tiny_weights):
    _, info = shipped
    chest, subpixel = get_anatomy("chest"), DecodeMethod.SUBPIXEL
    assert shipped_template(chest, subpixel, 18, info.architecture) is not None
    assert shipped_template(chest, subpixel, 18, read_info(tiny_weights).architecture) is None
    assert shipped_template(chest, subpixel, 17, info.architecture) is None
    other_grid = dataclasses.replace(chest, grid=(chest.grid[0] // 2, chest.grid[1] // 2))
    assert shipped_template(other_grid, subpixel, 18, info.architecture) is None


def test_a_template_that_does_not_fit_the_tensors_is_refused(shipped):
    model, info = shipped
    template = shipped_template(get_anatomy("chest"), DecodeMethod.SUBPIXEL, 18, info.architecture)
    tensors = module_tensors(export_module(model, "chest", DecodeMethod.SUBPIXEL))
    name = next(t.name for t in template.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    with pytest.raises(TemplateError, match=name):
        fill_template(template, {**tensors, name: tensors[name][:1]})
    with pytest.raises(TemplateError, match=name):
        fill_template(template, {k: v for k, v in tensors.items() if k != name})
    assert graph_template.ARCHITECTURE_KEY not in {p.key for p in fill_template(template, tensors).metadata_props}
