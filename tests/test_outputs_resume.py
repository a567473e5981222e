"""Outputs: per-image results, overlays, streaming JSONL, atomic writes, and resuming an interrupted folder run."""

import json

import numpy as np
import pytest
from factories import gradient, save
from PIL import Image
from typer.testing import CliRunner

import landmark_edge.inference as infer_job
from landmark_edge.cli import app

runner = CliRunner()


@pytest.fixture()
def folder(tmp_path):
    """Three scans in nested sub-folders, two of them with the same file name."""
    rng = np.random.default_rng(3)
    for name in ("a/001.png", "b/001.png", "b/c/004.png"):
        (tmp_path / "scans" / name).parent.mkdir(parents=True, exist_ok=True)
        save(tmp_path / "scans" / name, Image.fromarray(rng.integers(0, 255, (70, 60), dtype=np.uint8)))
    return tmp_path / "scans"


def run(folder, out, weights, *extra):
    args = ["infer", str(folder), "-a", "chest", "-w", str(weights), "-b", "1", "--out-dir", str(out / "results"),
            "--overlay", str(out / "overlays"), "-f", "json", "-o", str(out / "all.json"), *extra]
    return runner.invoke(app, args)


def files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_interrupted_run_resumed_equals_uninterrupted(folder, tmp_path, tiny_weights, monkeypatch):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(folder, whole, tiny_weights).exit_code == 0
    (resumed).mkdir()
    (resumed / "all.json").write_text("earlier output\n")
    real = infer_job.run_inference
    processed, stop_at = [], [1]

    def interrupted(paths, *args, **kwargs):
        for count, outcome in enumerate(real(paths, *args, **kwargs)):
            if count == stop_at[0]:
                raise KeyboardInterrupt
            processed.append(outcome.path)
            yield outcome

    monkeypatch.setattr(infer_job, "run_inference", interrupted)
    result = run(folder, resumed, tiny_weights)
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert (resumed / "all.json").read_text() == "earlier output\n"  # nothing earlier lost, nothing half-written
    assert len(files(resumed / "results")) == 1 and not list(resumed.rglob("*.tmp"))
    processed.clear()
    stop_at[0] = None
    result = run(folder, resumed, tiny_weights, "--skip-existing")
    assert result.exit_code == 0, result.output
    assert len(processed) == 2  # only the images the interrupted run had not finished
    assert files(resumed) == files(whole)
    names = {str(p) for p in files(whole / "results")}
    assert names == {"a/001.png.json", "b/001.png.json", "b/c/004.png.json"}


def test_skip_existing_needs_out_dir_and_recomputes_another_anatomy(folder, tmp_path, tiny_weights):
    result = runner.invoke(app, ["infer", str(folder), "-a", "chest", "-w", str(tiny_weights), "--skip-existing"])
    assert result.exit_code == 2 and "--skip-existing resumes from per-image results: give --out-dir" in result.stderr
    out, one = tmp_path / "out", folder / "a"
    assert run(one, out, tiny_weights).exit_code == 0
    result = run(one, out, tiny_weights, "--skip-existing", "-a", "head")
    assert result.exit_code == 0
    assert all(o["anatomy"] == "head" and len(o["landmarks"]) == 19 for o in json.loads((out / "all.json").read_text()))


def test_overlay_draws_numbered_landmarks_on_the_original(tmp_path, tiny_weights):
    path = save(tmp_path / "scan.png", Image.fromarray(gradient(300, 240)))
    result = runner.invoke(app, ["infer", str(path), "-a", "chest", "-w", str(tiny_weights), "--overlay",
                                 str(tmp_path / "ov"), "-f", "json"])
    assert result.exit_code == 0, result.output
    overlay = np.asarray(Image.open(tmp_path / "ov" / "scan.png.png"))
    assert overlay.shape == (300, 240, 3)
    grey = overlay[..., 0] == overlay[..., 1]
    assert (~grey).sum() > 0 and grey.mean() > 0.5  # coloured marks on a grey picture of the original
    for lm in json.loads(result.stdout)[0]["landmarks"]:
        x, y = round(lm["x"]), round(lm["y"])
        window = ~grey[max(0, y - 12): y + 13, max(0, x - 12): x + 13]
        assert window.any(), lm  # each landmark is marked where it was found


def test_jsonl_streams_and_flags_low_confidence(folder, tmp_path, tiny_weights):
    out = tmp_path / "all.jsonl"
    result = runner.invoke(app, ["infer", str(folder), "-a", "chest", "-w", str(tiny_weights), "-f", "jsonl", "-o",
                                 str(out), "--min-confidence", "1"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and all(line["ok"] for line in lines)
    assert all("6 of 6 landmarks below confidence 1 (1, 2, 3, 4, 5, 6)" in line["flags"] for line in lines)
    assert result.stderr.count("warning:") >= 3 and "3 of 3 results flagged (weak heatmap peaks" in result.stderr
