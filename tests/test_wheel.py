"""The wheel is complete: built from this checkout and installed into a folder of its own, it exports with a
shipped deployment profile and infers, each command a new process that imports landmark-edge from that folder
only (the dependencies come from the environment, as `pip install landmark-edge` would have them).

Not marked slow: the wheel is what users install. Its cost is one build and install (no compiler, no network)
and the two commands, which need no torch export thanks to the shipped graph templates; export's validation
against PyTorch at batch 1 and 3 is most of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "landmark_edge", "export")


def _run(arguments: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(arguments, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, arguments))}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder the wheel is installed into (``pip install --target``).

    Built from a copy of the sources, so the build leaves nothing in the checkout (build/, *.egg-info) and sees
    no stray file that a clean checkout would lack beyond what package-data admits.
    """
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    dist, target = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("landmark_edge-*.whl")
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)])
    return target


def test_wheel_carries_every_profile_and_graph_template(installed):
    shipped = sorted(p.name for p in (installed / "landmark_edge" / "profiles").glob("*.yaml"))
    assert shipped and shipped == sorted(p.name for p in (ROOT / "export").glob("*.yaml"))
    templates = ROOT / "landmark_edge" / "export" / "templates"
    assert sorted(p.name for p in (installed / "landmark_edge" / "export" / "templates").glob("*.onnx")) == sorted(
        p.name for p in templates.glob("*.onnx")
    )


def test_installed_wheel_exports_with_a_profile_and_infers(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed), "LANDMARK_EDGE_CACHE": str(tmp_path / "cache")}
    where = _run([sys.executable, "-c", "import landmark_edge; print(landmark_edge.__file__)"], env=env, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed)
    cli = [sys.executable, "-m", "landmark_edge"]
    report = _run([*cli, "export", "-a", "chest", "--profile", "cpu-onnxruntime", "-o", "chest.onnx", "--json"],
                  env=env, cwd=tmp_path)  # fmt: skip
    (row,) = json.loads(report.stdout)
    assert row["decode"] == "subpixel" and row["opset"] == 18 and (tmp_path / "chest.onnx").is_file()
    image = installed / "landmark_edge" / "examples" / "chest_CHNCXR_0001_0.png"
    result = _run([*cli, "infer", str(image), "-a", "chest", "-f", "json"], env=env, cwd=tmp_path)
    (record,) = json.loads(result.stdout)
    assert len(record["landmarks"]) == 6
    assert list((tmp_path / "cache").rglob("*.onnx"))  # the first call made the graph and cached it
