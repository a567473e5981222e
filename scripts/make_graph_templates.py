"""Write the graph templates of the shipped network (``landmark_edge/export/templates/``): one per anatomy of the
default weights and per graph decoding (none, argmax, subpixel), at the default opset.

    PYTHONPATH=. python scripts/make_graph_templates.py

Rerun it after a change to the network, the exported module, torch's exporter or onnxslim; the tests say when (a
filled template must equal a fresh export). Each template is made twice, from the shipped weights and from the
same network with other weight values, and refused unless both agree: a template must not depend on the values
it leaves out (see :mod:`landmark_edge.export.graph_template`).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import onnx
import torch

from landmark_edge.anatomy import get_anatomy
from landmark_edge.decode import DecodeMethod
from landmark_edge.export.graph_template import TEMPLATE_FOLDER, make_template, template_name
from landmark_edge.export.onnx import ExportGraph, export_module, exported_graph, module_tensors
from landmark_edge.io.atomic import atomic_path
from landmark_edge.weights import DEFAULT_WEIGHTS, load_weights

OPSET = 18  # the default of export, of every shipped profile and of the graph infer makes from weights
OUT = Path(__file__).resolve().parents[1] / "landmark_edge" / "export" / TEMPLATE_FOLDER


def template(module: ExportGraph, anatomy: str, architecture: dict) -> onnx.ModelProto:
    return make_template(exported_graph(module, get_anatomy(anatomy), OPSET), module_tensors(module), architecture)


def perturbed(module: ExportGraph) -> ExportGraph:
    """A copy with every float tensor moved by noise: the same network with other weight values."""
    other = copy.deepcopy(module)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in other.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.01 * torch.randn(tensor.shape, generator=generator))
    return other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    model, info = load_weights(DEFAULT_WEIGHTS)
    for decode in (DecodeMethod.SUBPIXEL, DecodeMethod.ARGMAX, None):  # infer's default first
        for anatomy in info.anatomy_names:
            module = export_module(model, anatomy, decode)
            made = template(module, anatomy, info.architecture)
            if made.SerializeToString() != template(perturbed(module), anatomy, info.architecture).SerializeToString():
                raise SystemExit(f"{anatomy}, decode {decode}: the exported graph depends on the weight values")
            path = args.out / template_name(anatomy, decode, OPSET)
            with atomic_path(path) as tmp:
                tmp.write_bytes(made.SerializeToString())
            print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
