"""Writing the engine file: a small JSON header followed by TensorRT's serialized engine.

The layout and the header (:class:`~landmark_edge.contracts.EngineHeader`) are the contract in
:mod:`landmark_edge.contracts`, which the TensorRT runtime reads; the header carries the anatomy, grid and landmark
names, so an engine file is self-describing like a weights file.
"""

from __future__ import annotations

from pathlib import Path

from landmark_edge.contracts import EngineHeader, engine_file_bytes
from landmark_edge.io.atomic import atomic_open


def write_engine(path: str | Path, header: EngineHeader, engine: bytes) -> Path:
    """Write header and engine atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(engine_file_bytes(header, engine))
    return Path(path)
