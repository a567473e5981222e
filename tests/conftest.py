"""Shared fixtures: real data location, tiny models and weights files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from landmark_edge.model import gu2net
from landmark_edge.weights import save_weights

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
DOCS = SHARED / "docs"
TINY = {"local_widths": (4, 4, 8, 8, 8), "global_width": 8}


def require(path: Path) -> Path:
    """Skip the calling test, with the reason, when real data is not beside the checkout."""
    if not path.exists():
        pytest.skip(f"real data not available: {path} (the shared/ folder beside the checkout)")
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A narrow three-anatomy GU2Net with random weights: fast on CPU, same code path as the real one."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(gu2net(**TINY), path, source="random init for tests")
    return path


@pytest.fixture(scope="session")
def chest_only_weights(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "tiny_chest.safetensors"
    save_weights(gu2net(["chest"], **TINY), path, source="random init for tests")
    return path
