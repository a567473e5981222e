"""`landmark-edge infer` through Typer's CliRunner: help, output schemas, and bad input."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark_edge.cli import app
from landmark_edge.commands.options import EXIT_FAILED_BASE

runner = CliRunner()


@pytest.fixture()
def images(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (size, mode) in enumerate([((300, 260), "L"), ((120, 90), "RGB")]):
        shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
        path = tmp_path / f"scan{i}.png"
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)
        paths.append(path)
    return paths


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_commands_and_options():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("infer", "import-checkpoint", "info"):
        assert command in result.stdout
    result = invoke("infer", "--help")
    assert result.exit_code == 0 and "--anatomy" in result.stdout and "--decode" in result.stdout


def test_json_output_schema(images, tiny_weights):
    result = invoke("infer", *images, "--anatomy", "head", "-w", tiny_weights, "--format", "json", "-b", "2")
    assert result.exit_code == 0, result.output
    outcomes = json.loads(result.stdout)
    assert [o["path"] for o in outcomes] == [str(p) for p in images]
    first = outcomes[0]
    assert first["anatomy"] == "head" and (first["width"], first["height"]) == (300, 260)
    assert first["spacing_mm"] == [0.1, 0.1] and first["spacing_source"] == "head default"
    assert len(first["landmarks"]) == 19 and first["landmarks"][0]["name"] == "sella"
    landmark = first["landmarks"][0]
    assert set(landmark) == {"index", "name", "x", "y", "x_mm", "y_mm", "confidence", "grid_x", "grid_y"}
    assert 0 <= landmark["x"] < 300 and 0 <= landmark["y"] < 260 and 0 < landmark["confidence"] < 1
    assert landmark["x_mm"] == pytest.approx(landmark["x"] * 0.1, abs=1e-3)


def test_csv_out_file_spacing_override_and_heatmaps(images, tiny_weights, tmp_path):
    out, maps = tmp_path / "out" / "landmarks.csv", tmp_path / "maps"
    result = invoke("infer", images[0], "-a", "chest", "-w", tiny_weights, "-f", "csv", "-o", out,
                    "--spacing", "0.5", "--save-heatmaps", maps, "--decode", "argmax")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 6 and rows[0]["anatomy"] == "chest"
    assert float(rows[0]["x_mm"]) == pytest.approx(float(rows[0]["x"]) * 0.5, abs=1e-3)
    assert float(rows[0]["grid_x"]).is_integer()
    heatmaps = np.load(maps / "scan0.npy")
    assert heatmaps.shape == (6, 512, 512) and heatmaps.dtype == np.float32
    assert not list(out.parent.glob(".*tmp"))


def test_table_output_is_readable(images, tiny_weights):
    result = invoke("infer", images[1], "-a", "hand", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    # hand: the wrist-width rule gives the spacing (issue 16); chest has no physical spacing at all
    assert "scan1.png" in result.stdout and "L37" in result.stdout and "(wrist width (50 mm" in result.stdout
    chest = invoke("infer", images[1], "-a", "chest", "-w", tiny_weights)
    assert chest.exit_code == 0 and "spacing unknown" in chest.stdout


def test_bad_inputs_fail_one_line_each_and_the_rest_still_run(images, tiny_weights, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("hello")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(images[0].read_bytes()[:300])
    missing = tmp_path / "missing.png"
    result = invoke("infer", missing, images[0], text, truncated, images[1], "-a", "chest", "-w", tiny_weights,
                    "-f", "json")
    assert result.exit_code == EXIT_FAILED_BASE + 3
    outcomes = json.loads(result.stdout)
    assert [o["ok"] for o in outcomes] == [False, True, False, False, True]
    assert f"{missing}: file not found" in result.stderr
    assert f"{text}: not a readable image (PNG, JPEG, BMP, TIFF) or DICOM file" in result.stderr
    assert f"{truncated}: truncated or corrupt image" in result.stderr
    assert "3 of 5 inputs failed" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_anatomy(images, tiny_weights):
    result = invoke("infer", images[0], "-a", "foot", "-w", tiny_weights)
    assert result.exit_code == 2
    assert "unknown anatomy 'foot'" in result.stderr and "Traceback" not in result.output


def test_weights_for_other_anatomies(images, chest_only_weights):
    result = invoke("infer", images[0], "-a", "hand", "-w", chest_only_weights)
    assert result.exit_code == 2
    assert f"{chest_only_weights}: weights are for chest, not hand" in result.stderr


def test_not_a_weights_file(images, tmp_path):
    bogus = tmp_path / "w.safetensors"
    bogus.write_bytes(b"\x00" * 64)
    result = invoke("infer", images[0], "-a", "chest", "-w", bogus)
    assert result.exit_code == 2 and f"{bogus}: not a landmark-edge weights file" in result.stderr


def test_no_weights_and_none_shipped(images, monkeypatch, tmp_path):
    monkeypatch.setattr("landmark_edge.weights.DEFAULT_WEIGHTS", tmp_path / "absent.safetensors")
    result = invoke("infer", images[0], "-a", "chest")
    assert result.exit_code == 2
    assert "no --weights given and this install ships no default weights yet" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_outputs_get_ordinary_file_permissions(images, tiny_weights, tmp_path):
    """Atomic writes go through mkstemp (0600); the renamed output must be readable like any open() file."""
    import os

    out = tmp_path / "landmarks.json"
    result = invoke("infer", images[0], "-a", "chest", "-w", tiny_weights, "-f", "json", "-o", out)
    assert result.exit_code == 0, result.output
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


def test_weights_files_get_ordinary_permissions(tmp_path):
    """safetensors writes its file itself; the atomic rename must still leave it readable like open() would."""
    import os

    from landmark_edge.model import gu2net
    from landmark_edge.weights import save_weights
    from tests.conftest import TINY

    path = tmp_path / "w.safetensors"
    save_weights(gu2net(["chest"], **TINY), path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
