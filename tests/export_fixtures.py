"""Exported graphs shared by the export, ONNX Runtime and TensorRT tests: each exported once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from landmark_edge.cli import app
from landmark_edge.decode import DecodeMethod

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
            args = ["export", "-a", name, "-w", str(self.weights), "-o", str(path), "--json"]
            result = CliRunner().invoke(app, [*args, "--decode", decode.value if decode else "none"])
            assert result.exit_code == 0, result.stderr
            (self.reports[name],) = json.loads(result.stdout)
        return path


@pytest.fixture(scope="session")
def exported(tiny_weights, tmp_path_factory) -> Exports:
    return Exports(tiny_weights, tmp_path_factory.mktemp("onnx"))
