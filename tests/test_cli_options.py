"""One option vocabulary across commands: typed, strict backend options, one --option syntax, readable help."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark_edge.anatomy import get_anatomy
from landmark_edge.cli import app
from landmark_edge.commands.options import current_spellings
from landmark_edge.runtime.onnxruntime import OrtOptions
from landmark_edge.runtime.options import BackendOptionError
from landmark_edge.runtime.registry import BackendRequest, check_options, create_backend

runner = CliRunner()
COMMANDS = ("pack", "train", "evaluate", "import-checkpoint", "export", "build", "compile", "infer", "bench", "info")


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120), dtype=np.uint8), "L").save(path)
    return path


def test_unknown_backend_option_names_the_backend_and_its_keys():
    with pytest.raises(BackendOptionError) as error:
        check_options("onnxruntime", {"thread": 2})
    line = str(error.value)
    assert line.startswith("onnxruntime backend: unknown option(s) thread (known: threads, ")
    assert "trt_engine_cache" in line and "\n" not in line
    with pytest.raises(BackendOptionError, match=r"torch backend: unknown option\(s\) threads \(known: none\)"):
        check_options("torch", {"threads": 2})
    with pytest.raises(BackendOptionError, match="onnxruntime backend: option threads: "):
        check_options("onnxruntime", {"threads": "many"})


def test_options_reach_the_backend_typed():
    options = OrtOptions.parse("onnxruntime", {"threads": 2, "calibration": "calib"})
    assert options.threads == 2 and str(options.calibration) == "calib"
    assert options.calibration_fields() == {"images": options.calibration, "count": 64, "method": "minmax"}


def test_create_backend_refuses_options_before_loading(tmp_path):
    missing = tmp_path / "not-there.safetensors"  # never opened: the option is refused first
    with pytest.raises(BackendOptionError, match="torch backend: unknown option"):
        create_backend("torch", BackendRequest(missing, get_anatomy("chest"), options={"mode": "x"}))


def test_infer_option_syntax_is_the_same_as_bench(image, tiny_weights):
    base = ["infer", str(image), "-a", "chest", "-w", str(tiny_weights), "--backend", "torch"]
    wrong = runner.invoke(app, [*base, "--option", "nokey"])
    assert wrong.exit_code == 2 and "expected KEY=VALUE or NAME:KEY=VALUE" in wrong.stderr
    foreign = runner.invoke(app, [*base, "--option", "onnxruntime:threads=2"])
    assert foreign.exit_code == 2 and "this run uses the torch backend" in foreign.stderr
    unknown = runner.invoke(app, [*base, "--option", "threads=2"])
    assert unknown.exit_code == 2 and "torch backend: unknown option(s) threads (known: none)" in unknown.stderr
    named = runner.invoke(app, [*base, "--backend", "onnxruntime", "--option", "onnxruntime:threads=1",
                                "--format", "json"])  # fmt: skip
    assert named.exit_code == 0, named.output


def test_bad_backend_is_reported_before_inputs_or_weights(tmp_path):
    result = runner.invoke(app, ["infer", str(tmp_path / "none.png"), "-a", "chest", "--backend", "onnx",
                                 "-w", str(tmp_path / "none.safetensors")])  # fmt: skip
    assert result.exit_code == 2 and "unknown backend 'onnx'" in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_python_type_names_and_no_broken_sentences(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert not re.search(r"<(str|int|float|bool|path|list\[[^]]*\])( range)?>", result.stdout), result.stdout
    description = result.stdout.split("╭")[0]  # the docstring's paragraphs, before the option panels
    for paragraph in filter(None, (p.strip() for p in description.split("\n \n"))):
        lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
        # at 200 columns a paragraph under 200 characters fits one line: a second line is a hard break
        if not paragraph.startswith("Usage") and sum(map(len, lines)) < 180:
            assert len(lines) == 1, paragraph


def test_info_without_weights_shows_the_registry_and_exits_0(tmp_path, monkeypatch):
    from landmark_edge import weights

    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", tmp_path / "not-shipped.safetensors")
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "Anatomies" in result.stdout and "chest" in result.stdout and "no weights file" in result.stderr


def test_info_summary_and_json_carry_the_sha256(tiny_weights):
    from landmark_edge.weights import file_sha256

    digest = file_sha256(tiny_weights)
    table = runner.invoke(app, ["info", "-w", str(tiny_weights)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and f"sha256        {digest}" in table.stdout and "Heads in this file" in table.stdout
    as_json = runner.invoke(app, ["info", "-w", str(tiny_weights), "--format", "json"])
    report = json.loads(as_json.stdout)
    assert report["weights"]["sha256"] == digest and report["weights"]["path"] == str(tiny_weights)
    assert [a["name"] for a in report["anatomies"]] == ["head", "hand", "chest"]


def test_hand_spacing_follows_the_wrist_width_rule():
    hand = get_anatomy("hand")
    xy = np.zeros((37, 2))
    xy[4] = (300.0, 400.0)  # landmark 5, 500 px from landmark 1: 50 mm / 500 px
    confidence = np.full(37, 0.5)
    (mm_x, mm_y), source = hand.spacing_from_landmarks(xy, confidence)
    assert mm_x == mm_y == pytest.approx(0.1) and "wrist width" in source
    confidence[0] = 0.0  # landmark 1 not found: no spacing
    assert hand.spacing_from_landmarks(xy, confidence) is None
    assert get_anatomy("chest").spacing_from_landmarks(xy[:6], confidence[:6]) is None


def test_hand_results_give_mm_in_infer(tmp_path, tiny_weights):
    path = tmp_path / "hand.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 150), dtype=np.uint8), "L").save(path)
    result = runner.invoke(app, ["infer", str(path), "-a", "hand", "-w", str(tiny_weights), "--format", "json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)[0]
    first, fifth = outcome["landmarks"][0], outcome["landmarks"][4]
    width_px = np.hypot(first["x"] - fifth["x"], first["y"] - fifth["y"])
    assert outcome["spacing_source"].startswith("wrist width")
    assert outcome["spacing_mm"][0] == pytest.approx(50.0 / width_px, rel=1e-3)
    assert first["x_mm"] == pytest.approx(first["x"] * outcome["spacing_mm"][0], abs=2e-3)


def test_a_flag_prints_once(image, tiny_weights):
    result = runner.invoke(app, ["infer", str(image), "-a", "chest", "-w", str(tiny_weights),
                                 "--min-confidence", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    flag = "6 of 6 landmarks below confidence 1"
    assert (result.stdout + result.stderr).count(flag) == 1


def test_old_spelling_still_works_with_one_deprecation_line(image, tiny_weights):
    base = ["infer", str(image), "-a", "chest", "-w", str(tiny_weights), "--backend", "torch", "-f", "json"]
    new = runner.invoke(app, [*base, "--executor", "process"])
    old = runner.invoke(app, [*base, "--engine", "process"])
    assert new.exit_code == old.exit_code == 0
    assert old.stdout == new.stdout
    assert old.stderr.count("--engine is deprecated") == 1
    assert "warning: --engine is deprecated: use --executor" in old.stderr and "deprecated" not in new.stderr
    assert "--engine" not in runner.invoke(app, ["infer", "--help"], env={"COLUMNS": "200"}).stdout


def test_old_spellings_are_rewritten_only_where_the_new_one_exists():
    assert current_spellings(["--engine=ray", "x", "--", "--engine"], {"--executor"}) == [
        "--executor=ray", "x", "--", "--engine"
    ]
    assert current_spellings(["--engine", "ray"], {"--backend"}) == ["--engine", "ray"]  # no --executor: untouched
    assert current_spellings(["--json", "--max-batch-size", "2"], {"--format", "--max-batch"}) == [
        "--format", "json", "--max-batch", "2"
    ]
    assert current_spellings(["--image", "a.png", "--overlays", "d"], {"--images", "--overlay"}) == [
        "--images", "a.png", "--overlay", "d"
    ]


@pytest.mark.parametrize(("command", "old", "new"), [
    ("infer", ["--engine", "ray"], "--executor"), ("export", ["--image", "x.png"], "--images"),
    ("evaluate", ["--overlays", "d"], "--overlay"), ("compile", ["--max-batch-size", "2"], "--max-batch"),
    ("bench", ["--json"], "--format json"), ("build", ["--json"], "--format json"),
])  # fmt: skip
def test_every_old_spelling_parses_as_its_new_one_with_one_line(command, old, new, capsys):
    """Each command accepts its old spelling (one deprecation line) and hides it from the help."""
    import typer

    from landmark_edge.cli import make_app

    click_command = typer.main.get_command(make_app([command])).get_command(None, command)
    required = {"infer": ["x.png", "-a", "chest"], "compile": ["-a", "chest", "-o", "x.pt2"], "build": ["x.onnx"],
                "export": ["-a", "chest"], "bench": ["-a", "chest"], "evaluate": ["--data", "d"]}[command]  # fmt: skip
    parsed = click_command.make_context(command, [*required, *old]).params  # parsed, never run
    assert capsys.readouterr().err.count(f"{old[0]} is deprecated: use {new}") == 1
    key = {"--executor": "executor", "--images": "images", "--overlay": "overlay", "--max-batch": "max_batch",
           "--format json": "output_format"}[new]  # fmt: skip
    assert str(getattr(parsed[key], "value", parsed[key])) == {"--executor": "ray", "--images": "[PosixPath('x.png')]",
                                                               "--overlay": "d", "--max-batch": "2"}.get(new, "json")
    help_text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
    assert new.split()[0] in help_text and not re.search(rf"{old[0]}(?![\w-])", help_text)
    bad = runner.invoke(app, ["infer", "x.png", "-a", "chest", "--engine", "spark"])
    assert bad.exit_code == 2 and "--executor must be one of process, ray" in bad.stderr
