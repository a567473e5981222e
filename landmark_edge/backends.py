"""Opening a backend: the one place where a user's backend arguments become a ready :class:`Backend`.

It stands above both ``runtime/`` and ``export/`` (which never import each other): the runtime runs artifacts and
the exporter writes them, and only here are the two joined, by handing the runtime export's ONNX loader
(:class:`~landmark_edge.export.loaders.OnnxFromWeights`, the cached graph of a weights file) for a backend that
runs weights through an exported graph. ``infer``, ``evaluate``, ``bench``, the Ray actors and the scripts in
``benchmarks/`` all open their backends through :func:`open_backend`, so what a request means is written once.
(Named for what it hands out; :mod:`landmark_edge.runtime.registry` says what each backend can do.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from landmark_edge.anatomy import Anatomy
from landmark_edge.export.loaders import OnnxFromWeights
from landmark_edge.runtime.backend import Backend, BackendRequest
from landmark_edge.runtime.registry import BackendChoice, create_backend

__all__ = ["BackendChoice", "open_backend"]


def open_backend(
    choice: BackendChoice,
    weights: Path | None,
    anatomy: Anatomy,
    *,
    max_batch_size: int = 32,
    require_fit: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Backend:
    """The backend ``choice`` names, ready for ``anatomy``'s batches of up to ``max_batch_size`` images.

    ``weights`` is None where the artifact carries the network. ``require_fit=False`` opens an anatomy the weights
    mark unfit (``evaluate`` measures it: that is how it is found fit or not). ``progress`` sees one line per step
    of a long build. :class:`~landmark_edge.errors.BackendUnavailable` says why a backend cannot run here.
    """
    request = BackendRequest(
        weights=weights, anatomy=anatomy, decode=choice.decode, device=choice.device, precision=choice.precision,
        max_batch_size=max_batch_size, artifact=choice.artifact, options=dict(choice.options),
        require_fit=require_fit, progress=progress, allow_fallback=choice.allow_fallback,
        onnx_loader=None if weights is None else OnnxFromWeights(weights, anatomy, choice.decode, require_fit),
    )  # fmt: skip
    return create_backend(choice.backend, request)
