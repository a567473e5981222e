"""Graph templates: the exported ONNX graphs of the shipped network with their weights left out.

Why: on a fresh install the first ``infer`` needs the ONNX graph of the weights, and torch's exporter spends
most of that call tracing and decomposing the network (``benchmarks/results/cold_start.md``). The graph's
*structure* depends only on the network's architecture, the anatomy, the decoder and the opset, not on the
weight values, so the package ships that structure (about 50 KB per graph instead of 11 MB with weights) and
the first call copies the weights' tensors into it.

A template is the graph exactly as the exporter and onnxslim wrote it, except that each initializer that is a
tensor of the exported module (BatchNorm folded) holds no bytes: it is marked as ONNX external data whose
``location`` is the tensor's ``state_dict`` name. The few other initializers (shape constants, ~150 bytes)
stay inline. :func:`fill_template` copies the module's tensors back, so the filled graph is byte for byte the
exporter's. ``scripts/make_graph_templates.py`` writes the templates and refuses one that changes when the
weight values change; the tests compare the filled template with a fresh export.

A template is used only when it fits: same architecture (recorded in the template), the anatomy's grid, the
opset, and simplification on. Any other request (other widths, a new anatomy, another opset) exports as before.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import onnx
from onnx import numpy_helper

from landmark_edge.anatomy import Anatomy
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import LandmarkEdgeError

TEMPLATE_FOLDER = "templates"  # package data beside this module
ARCHITECTURE_KEY = "landmark_edge.template.architecture"  # the GU2Net arguments the template was exported from
_EXTERNAL = onnx.TensorProto.EXTERNAL


class TemplateError(LandmarkEdgeError):
    """A shipped graph template does not fit the tensors it is filled with (a template out of date)."""


def template_name(anatomy: str, decode: DecodeMethod | None, opset: int) -> str:
    return f"{anatomy}-{'none' if decode is None else decode.value}-opset{opset}.onnx"


def make_template(graph: onnx.ModelProto, state: dict[str, np.ndarray], architecture: dict) -> onnx.ModelProto:
    """``graph`` (exported from a module whose tensors are ``state``) with those tensors' bytes left out."""
    template = onnx.ModelProto()
    template.CopyFrom(graph)
    for tensor in template.graph.initializer:
        source = state.get(tensor.name)
        if source is None or not np.array_equal(numpy_helper.to_array(tensor), source):
            continue  # a constant of the graph itself: kept
        tensor.ClearField("raw_data")
        tensor.data_location = _EXTERNAL
        tensor.external_data.add(key="location", value=tensor.name)
    entry = template.metadata_props.add()
    entry.key, entry.value = ARCHITECTURE_KEY, json.dumps(architecture, sort_keys=True)
    return template


def fill_template(template: onnx.ModelProto, state: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The graph with every left-out tensor copied from ``state``; a name, shape or type that does not match
    is a :class:`TemplateError` (the template is out of date), never a silently different graph."""
    graph = onnx.ModelProto()
    graph.CopyFrom(template)
    kept = [p for p in graph.metadata_props if p.key != ARCHITECTURE_KEY]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    for tensor in graph.graph.initializer:
        if tensor.data_location != _EXTERNAL:
            continue
        name = next(entry.value for entry in tensor.external_data if entry.key == "location")
        source = state.get(name)
        filled = None if source is None else numpy_helper.from_array(np.ascontiguousarray(source), tensor.name)
        if filled is None or filled.data_type != tensor.data_type or list(filled.dims) != list(tensor.dims):
            raise TemplateError(f"a shipped graph template does not match the weights' tensor {name}: rewrite the "
                                "templates (scripts/make_graph_templates.py)")  # fmt: skip
        tensor.raw_data = filled.raw_data
        tensor.ClearField("data_location")
        del tensor.external_data[:]
    return graph


def shipped_template(
    anatomy: Anatomy, decode: DecodeMethod | None, opset: int, architecture: dict
) -> onnx.ModelProto | None:
    """The shipped template for this graph, or None when there is none or it was made for another network."""
    path = resources.files(__package__) / TEMPLATE_FOLDER / template_name(anatomy.name, decode, opset)
    if not path.is_file():
        return None
    template = onnx.load_from_string(path.read_bytes())  # a ModelProto; external data stays unresolved
    recorded = next((p.value for p in template.metadata_props if p.key == ARCHITECTURE_KEY), None)
    grid = [d.dim_value for d in template.graph.input[0].type.tensor_type.shape.dim[2:]]
    fits = recorded is not None and json.loads(recorded) == json.loads(json.dumps(architecture))  # tuples as lists
    return template if fits and grid == list(anatomy.grid_hw) else None
