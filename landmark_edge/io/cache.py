"""The user's cache folder: artefacts derived from a weights file (exported ONNX graphs), reused across runs.

An entry's name carries everything it was made from (weights sha256, anatomy, decoding, precision, ...), so a
different weights file or option is a different entry and nothing is ever invalidated in place. Entries are
written atomically: two processes filling the same entry at once both end with a whole file. Where the folder
cannot be written (read-only home), the artefact is used uncached.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from landmark_edge.io.atomic import atomic_path

CACHE_ENV = "LANDMARK_EDGE_CACHE"  # overrides the folder (tests, shared machines, read-only homes)


def cache_dir() -> Path:
    """``$LANDMARK_EDGE_CACHE``, else ``$XDG_CACHE_HOME/landmark-edge``, else ``~/.cache/landmark-edge``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "landmark-edge"


def cached_bytes(name: str, make: Callable[[], bytes]) -> bytes:
    """The cache entry ``name`` (a relative path), made by ``make()`` and stored when it is not there yet."""
    path = cache_dir() / name
    if path.is_file():
        return path.read_bytes()
    data = make()
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError:
        pass  # an unwritable cache costs time on the next run, never this run's result
    return data
