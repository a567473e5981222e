"""The bad-input corpus: one run over every bad input mixed with good ones. Each bad input gets one error line
naming it and its problem, every good input is still processed, and the exit code counts the failures."""

import io
import json
import os
from pathlib import Path

import numpy as np
from factories import BAD_INPUTS, UNREADABLE_FOLDER, gradient, make_dicom, save
from PIL import Image
from typer.testing import CliRunner

from landmark_edge.cli import app
from landmark_edge.commands.options import EXIT_FAILED_BASE

runner = CliRunner()


def good_inputs(folder: Path) -> tuple[list[Path], list[Path]]:
    """(command-line arguments, the image files they stand for): formats and names that must all work."""
    folder.mkdir()
    image = Image.fromarray(gradient(96, 120))
    png_bytes = io.BytesIO()
    image.save(png_bytes, format="PNG")
    jpeg_bytes = io.BytesIO()
    image.save(jpeg_bytes, format="JPEG")
    (folder / "png_named.jpg").write_bytes(png_bytes.getvalue())
    (folder / "jpeg_named.dcm").write_bytes(jpeg_bytes.getvalue())
    files = [
        save(folder / "plain.png", image),
        folder / "png_named.jpg",
        folder / "jpeg_named.dcm",
        save(folder / "sixteen.png", Image.fromarray(gradient(96, 120, 65535, np.uint16))),
        save(folder / "palette.png", image.convert("P")),
        save(folder / "rgba.png", image.convert("RGBA")),
        make_dicom(folder / "mono1.dcm", gradient(96, 120, 4095, np.uint16), "MONOCHROME1", spacing=(0.2, 0.1)),
    ]
    series = folder / "series"  # a folder argument: searched recursively, extension-less DICOM included
    (series / "deeper").mkdir(parents=True)
    nested = [make_dicom(series / "deeper" / "IM0001", gradient(dtype=np.uint16)),
              save(series / "scan.tif", Image.fromarray(gradient().astype(np.float32), "F"))]
    return [*files, series], files + nested


def test_bad_input_corpus(tmp_path, tiny_weights, monkeypatch):
    assert len(BAD_INPUTS) >= 30
    bad_folder = tmp_path / "bad"
    bad_folder.mkdir()
    bad = [(case, case.build(bad_folder)) for case in BAD_INPUTS]
    unreadable = tmp_path / UNREADABLE_FOLDER
    unreadable.mkdir()
    save(unreadable / "hidden_from_us.png", Image.fromarray(gradient()))
    real_scandir = os.scandir

    def scandir(path="."):  # tests run as root, where chmod 000 does not stop reading: refuse here instead
        if Path(path) == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    arguments, good_files = good_inputs(tmp_path / "good")
    mixed = [p for pair in zip([path for _, path in bad], arguments * 10) for p in pair] + [unreadable]
    result = runner.invoke(app, ["infer", *map(str, mixed), "-a", "chest", "-w", str(tiny_weights), "-f", "json",
                                 "-b", "4"])
    failures = len(BAD_INPUTS) + 1
    assert result.exit_code == EXIT_FAILED_BASE + failures, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == failures
    for case, path in bad:
        assert any(str(path) in line and case.message in line for line in errors), (case.name, errors)
    assert any(f"{unreadable}: cannot read folder (Permission denied)" in line for line in errors)
    assert f"{failures} of {failures + len(good_files)} inputs failed" in result.stderr
    outcomes = json.loads(result.stdout)
    succeeded = [o["path"] for o in outcomes if o["ok"]]
    assert sorted(succeeded) == sorted(map(str, good_files))
    assert all(len(o["landmarks"]) == 6 for o in outcomes if o["ok"])
