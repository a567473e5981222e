"""Loaders that make an artifact in memory when called (Polygraphy's ``OnnxFromPath`` shape).

A caller passes one to the runtime (``BackendRequest.onnx_loader``), so the ``onnxruntime`` backend can run
weights without the runtime importing the exporter. Constructing a loader is cheap; ONNX and torch are imported
only when it is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from landmark_edge.anatomy import Anatomy
from landmark_edge.decode import DecodeMethod

if TYPE_CHECKING:
    import onnx


@dataclass
class OnnxFromWeights:
    """Calling it exports a weights file's graph for one anatomy (BatchNorm folded, decoder attached).

    With ``calibration`` fields (:class:`~landmark_edge.export.profiles.Calibration`'s: images, count, method) the
    graph is quantized to int8 for ONNX Runtime's CPU provider.
    """

    weights: str | Path
    anatomy: Anatomy
    decode: DecodeMethod | None = None
    require_fit: bool = True

    def __call__(self, calibration: dict | None = None) -> onnx.ModelProto:
        from landmark_edge.export.onnx import onnx_graph
        from landmark_edge.export.profiles import Calibration
        from landmark_edge.export.quantize import quantize_for_cpu

        graph, _ = onnx_graph(self.weights, self.anatomy, decode=self.decode, require_fit=self.require_fit)
        if calibration is None:
            return graph
        return quantize_for_cpu(graph, self.anatomy, Calibration.model_validate(calibration))
