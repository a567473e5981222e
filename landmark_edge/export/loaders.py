"""Loaders that make an artifact in memory when called (Polygraphy's ``OnnxFromPath`` shape).

A caller passes one to the runtime (``BackendRequest.onnx_loader``), so the ``onnxruntime`` backend can run
weights without the runtime importing the exporter. Constructing a loader is cheap; ONNX and torch are imported
only when it is called.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from landmark_edge.anatomy import Anatomy
from landmark_edge.decode import DecodeMethod

if TYPE_CHECKING:
    import onnx


@dataclass
class OnnxFromWeights:
    """Calling it gives a weights file's graph for one anatomy (BatchNorm folded, decoder attached), serialized.

    With ``calibration`` fields (:class:`~landmark_edge.export.profiles.Calibration`'s: images, count, method) the
    graph is quantized to int8 for ONNX Runtime's CPU provider. Making the graph costs seconds (importing torch,
    folding BatchNorm and copying the weights into a shipped graph template; for a network without one, torch's
    exporter: most of a one-image ``infer``), so the graph is cached in the user's cache folder under a name made of the weights' sha256,
    anatomy, decoding, precision (int8: its calibration) and the package version. The weights header is still
    read and the shipped file's checksum checked on every call, so an anatomy the weights mark unfit, or a damaged
    install, is refused as without the cache. A cache hit imports neither torch nor ONNX.
    """

    weights: str | Path
    anatomy: Anatomy
    decode: DecodeMethod | None = None
    require_fit: bool = True

    def __call__(self, calibration: dict | None = None) -> bytes:
        from landmark_edge import __version__
        from landmark_edge.io.cache import cached_bytes
        from landmark_edge.weights import check_anatomy, checked_sha256, read_info

        check_anatomy(read_info(self.weights), self.weights, self.anatomy.name, require_fit=self.require_fit)
        decode = "none" if self.decode is None else self.decode.value
        parts = [checked_sha256(self.weights)[:16], self.anatomy.name, decode, "fp32" if calibration is None else "int8"]
        if calibration is not None:
            parts.append(hashlib.sha256(json.dumps(calibration, sort_keys=True, default=str).encode()).hexdigest()[:12])
        return cached_bytes(f"onnx/{'-'.join(parts)}-v{__version__}.onnx", lambda: self.graph(calibration).SerializeToString())

    def graph(self, calibration: dict | None = None) -> onnx.ModelProto:
        """The graph itself, exported now (uncached)."""
        from landmark_edge.export.onnx import onnx_graph
        from landmark_edge.export.profiles import Calibration
        from landmark_edge.export.quantize import quantize_for_cpu

        graph, _ = onnx_graph(self.weights, self.anatomy, decode=self.decode, require_fit=self.require_fit)
        if calibration is None:
            return graph
        return quantize_for_cpu(graph, self.anatomy, Calibration.model_validate(calibration))
