"""Shared fixtures: real data location, tiny models and weights files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from landmark_edge.cli import app
from landmark_edge.decode import DecodeMethod
from landmark_edge.io.cache import CACHE_ENV
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


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """In-memory ONNX exports are cached per user: the tests fill a folder of their own, never ~/.cache."""
    folder = tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv(CACHE_ENV, str(folder))
    yield folder
    patch.undo()


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


# One export per anatomy, each with a different graph decoding, so the three decode modes are all covered.
DECODES = {"head": None, "hand": DecodeMethod.ARGMAX, "chest": DecodeMethod.SUBPIXEL}


class Exports:
    """``exports[name]`` is the path of that anatomy's graph, exported through the CLI on first use."""

    def __init__(self, weights: Path, folder: Path) -> None:
        self.weights, self.folder = weights, folder
        self.reports: dict[str, dict] = {}  # the CLI's --json report (validation at batch 1 and 3)

    def __getitem__(self, name: str) -> Path:
        path = self.folder / f"{name}.onnx"
        if name not in self.reports:
            decode = DECODES[name]
            args = ["export", "-a", name, "-w", str(self.weights), "-o", str(path), "--format", "json"]
            result = CliRunner().invoke(app, [*args, "--decode", decode.value if decode else "none"])
            assert result.exit_code == 0, result.stderr
            (self.reports[name],) = json.loads(result.stdout)
        return path


@pytest.fixture(scope="session")
def exported(tiny_weights, tmp_path_factory) -> Exports:
    """ONNX graphs of the tiny weights, exported on first use and shared by the whole session."""
    return Exports(tiny_weights, tmp_path_factory.mktemp("onnx"))
