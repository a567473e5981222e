"""Opening backends: one function assembles them, and a backend added as one module plus one registry entry is
found in the help, the errors and the bench rows of ``infer``, ``evaluate`` and ``bench``."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark_edge.anatomy import get_anatomy
from landmark_edge.bench.results import BenchReport
from landmark_edge.cli import app
from landmark_edge.runtime.registry import artifact_backends, backend_names
from landmark_edge.transforms import grid_to_original

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
EXAMPLE = REPO / "landmark_edge/examples/chest_CHNCXR_0001_0.png"
OPENER = REPO / "landmark_edge/backends.py"


def _calls(path: Path, name: str) -> list[int]:
    """Lines where ``path`` constructs ``name`` (called by that name or as ``module.name``), except where the
    result is called at once (a script reading a graph from the loader itself hands nothing to the runtime)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    called_at_once = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and id(node) not in called_at_once:
            func = node.func
            if (func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)) == name:
                lines.append(node.lineno)
    return lines


def test_only_open_backend_builds_requests_and_hands_the_onnx_loader_to_the_runtime():
    sources = sorted((REPO / "landmark_edge").rglob("*.py")) + sorted((REPO / "benchmarks").rglob("*.py"))
    found = {
        f"{path.relative_to(REPO)}:{line} {name}"
        for path in sources
        if path != OPENER
        for name in ("BackendRequest", "OnnxFromWeights")
        for line in _calls(path, name)
    }
    assert not found, "build backends with landmark_edge.backends.open_backend"
    assert _calls(OPENER, "BackendRequest") and _calls(OPENER, "OnnxFromWeights")


# Runs in a fresh interpreter: the fake backend's one registry entry is added before the CLI is imported, as a
# plugin's would be, so every help text is built with it. Prints {name: [exit code, stdout, stderr]}.
DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from fake_backend import ENTRY
from landmark_edge.runtime.registry import register
register(ENTRY)
from typer.testing import CliRunner
from landmark_edge.cli import app
runs = {}
for name, args in json.loads(sys.argv[2]).items():
    result = CliRunner().invoke(app, args)
    runs[name] = [result.exit_code, result.stdout, result.stderr]
print(json.dumps(runs))
"""


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory, tiny_weights) -> tuple[dict[str, list], Path]:
    out = tmp_path_factory.mktemp("bench")
    image, missing_data = str(EXAMPLE), str(out / "no-data")
    calls = {
        "help infer": ["infer", "--help"],
        "help evaluate": ["evaluate", "--help"],
        "help bench": ["bench", "--help"],
        "infer": ["infer", image, "-a", "chest", "--backend", "fake", "--option", "where=0.25", "-f", "json"],
        "infer fp16": ["infer", image, "-a", "chest", "--backend", "fake", "--precision", "fp16"],
        "infer unknown": ["infer", image, "-a", "chest", "--backend", "nope"],
        "infer torch artifact": ["infer", image, "-a", "chest", "--backend", "torch", "--artifact", "m.fake"],
        "infer foreign artifact": ["infer", image, "-a", "chest", "--backend", "onnxruntime", "--artifact", "m.fake"],
        "evaluate int8": ["evaluate", "-d", missing_data, "--backend", "fake", "--precision", "int8"],
        "evaluate option": ["evaluate", "-d", missing_data, "--backend", "fake", "--option", "where=far"],
        "bench": [
            "bench", "-a", "chest", "-w", str(tiny_weights), "--backends", "fake", "--precisions", "fp32,fp16",
            "--artifact", "m.fake", "--batch-sizes", "1", "--iters", "1", "--warmup", "0", "--images",
            str(EXAMPLE.parent), "--max-images", "1", "--out-dir", str(out), "--format", "json",
        ],
    }  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    (out / "m.fake").write_bytes(b"fake")  # the artifact exists, as a real one must: its sha256 is in the run record
    done = subprocess.run([sys.executable, "-c", DRIVER, str(TESTS), json.dumps(calls)], capture_output=True,
                          text=True, env=env, cwd=out, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), out


def test_a_new_backend_is_in_every_commands_help(fake_runs):
    runs, _ = fake_runs
    for command in ("infer", "evaluate", "bench"):
        code, stdout, _ = runs[f"help {command}"]
        assert code == 0 and "fake" in stdout, command
    flat = " ".join(runs["help infer"][1].split())
    assert ".fake" in flat  # --artifact's help lists its files


def test_a_new_backend_runs_and_its_capabilities_give_the_errors(fake_runs):
    runs, _ = fake_runs
    code, stdout, _ = runs["infer"]
    assert code == 0
    width, height = Image.open(EXAMPLE).size
    chest = get_anatomy("chest")
    grid_h, grid_w = chest.grid_hw
    expected = grid_to_original([[0.25 * grid_w, 0.25 * grid_h]], (width, height), chest.grid)[0]
    landmarks = json.loads(stdout)[0]["landmarks"]
    assert len(landmarks) == chest.num_landmarks
    assert all(abs(lm["x"] - expected[0]) < 1e-3 and abs(lm["y"] - expected[1]) < 1e-3 for lm in landmarks)

    def error(name: str) -> str:
        code, _, stderr = runs[name]
        assert code == 2 and stderr.count("\n") == 1, (name, stderr)
        return stderr

    assert "fake backend: precision fp16 not supported (fp32)" in error("infer fp16")
    built_in = backend_names()  # this process's registry: the built-in entries, without the fake one
    assert f"choose from {', '.join(built_in)}, fake" in error("infer unknown")
    readers = ", ".join(spec.name for spec in artifact_backends())
    assert f"artifact is for the {readers} and fake backends" in error("infer torch artifact")
    assert "m.fake: a fake file; run it with --backend fake" in error("infer foreign artifact")
    assert "fake backend: precision int8 not supported (fp32)" in error("evaluate int8")
    assert "fake backend: option where:" in error("evaluate option")


def test_a_new_backend_has_bench_rows_and_its_library_in_the_header(fake_runs):
    runs, out = fake_runs
    code, stdout, stderr = runs["bench"]
    assert code == 0, stderr
    report = BenchReport.model_validate_json((out / "bench.json").read_text())
    assert json.loads(stdout) == json.loads((out / "bench.json").read_text())
    rows = {row.label: row for row in report.rows}
    ran = rows["fake fp32 [artifact=m.fake]"]  # the unnamed --artifact went to the backend of its suffix
    assert ran.status == "ok" and ran.artifact == "m.fake" and ran.drift.images == 1
    assert rows["fake fp16 [artifact=m.fake]"].reason == "fake backend: precision fp16 not supported (fp32)"
    assert report.environment.libraries["fake_backend"] == "0.0.1-test"
    assert "--artifact fake:m.fake" in report.command
    assert "fake_backend 0.0.1-test" in (out / "bench.md").read_text()


def test_allow_fallback_is_one_flag_that_backends_without_a_fallback_ignore(tiny_weights, tmp_path):
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (90, 120), dtype=np.uint8), "L").save(image)
    args = ["infer", str(image), "-a", "chest", "-w", str(tiny_weights), "--backend", "torch", "-f", "json"]
    plain, fallback = (CliRunner().invoke(app, args + extra) for extra in ([], ["--allow-fallback"]))
    assert fallback.exit_code == plain.exit_code == 0, fallback.output
    assert fallback.stdout == plain.stdout


def test_bench_artifacts_go_to_one_backend_each(tiny_weights):
    def run(*extra: str):
        return CliRunner().invoke(app, ["bench", "-a", "chest", "-w", str(tiny_weights), "--backends", "torch", *extra])

    unnamed = run("--artifact", "model.bin")  # no backend reads *.bin: it must be named
    assert unnamed.exit_code == 2 and "--artifact model.bin: name its backend (NAME:PATH" in unnamed.stderr
    elsewhere = run("--artifact", "model.onnx")
    assert elsewhere.exit_code == 2 and "the onnxruntime backend is not among --backends (torch)" in elsewhere.stderr
