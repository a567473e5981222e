"""Hostile and careless file systems: every oddity is one line naming the path, the other inputs are processed.

One ``infer`` run goes over a symlink loop (as the folder argument and inside a folder), a dangling link, FIFOs, a
device, an unreadable file, a file deleted after the listing, a file that grows while read, names that are not
UTF-8 or hold rich markup, an over-long name and a folder nested past PATH_MAX, mixed with good images.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from factories import gradient, save
from PIL import Image
from typer.testing import CliRunner

from landmark_edge.cli import app
from landmark_edge.commands.options import EXIT_FAILED_BASE, error_line, out_console, warning_line
from landmark_edge.errors import WeightsError
from landmark_edge.io import files
from landmark_edge.runtime.compiled import load_pt2

SYSFS_WRITE_ONLY = Path("/sys/bus/pci/rescan")  # a regular file that even root cannot read


class _StagedRaces:
    """``os`` as :mod:`landmark_edge.io.files` sees it, with races staged at the worst moment: a file deleted just
    before its first open (after the folder was listed) or its second (after inference, before its overlay), and
    one that grows while it is being read."""

    VANISH_AT_OPEN = {"vanishing.png": 1, "short_lived.png": 2}

    def __init__(self) -> None:
        self.opens: dict[str, int] = {}

    def __getattr__(self, name):
        return getattr(os, name)

    def open(self, path, flags, *args):
        name = Path(path).name
        self.opens[name] = self.opens.get(name, 0) + 1
        if self.VANISH_AT_OPEN.get(name) == self.opens[name]:
            os.unlink(path)
        return os.open(path, flags, *args)

    @staticmethod
    def fdopen(descriptor, *args, **kwargs):
        target = os.readlink(f"/proc/self/fd/{descriptor}")
        if target.endswith("growing.png"):
            with open(target, "ab") as handle:
                handle.write(b"more bytes from a writer")
        return os.fdopen(descriptor, *args, **kwargs)


def _unreadable_file(folder: Path) -> Path | None:
    """A regular file the test's user cannot read: mode 000 for a normal user; as root (who reads anything) a
    write-only sysfs attribute, where the kernel exists; None when neither is possible."""
    path = folder / "unreadable.png"
    if os.geteuid() != 0:
        save(path, Image.fromarray(gradient()))
        path.chmod(0)
        return path
    if SYSFS_WRITE_ONLY.is_file():
        path.symlink_to(SYSFS_WRITE_ONLY)
        return path
    return None


def _nested_past_path_max(folder: Path) -> Path:
    """A folder with an image nested so deep that its path exceeds PATH_MAX (built with relative calls)."""
    top = folder / "deep"
    top.mkdir()
    descriptor = os.open(top, os.O_RDONLY)
    try:
        for _ in range(24):  # 24 x 200 bytes > 4096
            os.mkdir("d" * 200, dir_fd=descriptor)
            inner = os.open("d" * 200, os.O_RDONLY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
        image = os.open("lost.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=descriptor)
        with os.fdopen(image, "wb") as handle:
            Image.fromarray(gradient()).save(handle, format="PNG")
    finally:
        os.close(descriptor)
    return top


def _hostile_inputs(root: Path) -> tuple[list[str], dict[str, str]]:
    """(command-line arguments, {path that must be named: the problem its one line must state})."""
    folder = root / "scans"
    folder.mkdir()
    expected: dict[str, str] = {}

    def expect(path: Path, problem: str) -> Path:
        expected[os.fsdecode(path)] = problem
        return path

    loop = expect(root / "loop_folder", "symbolic link loop")
    loop.symlink_to(loop)
    expect(folder / "cycle", "symbolic link loop").symlink_to(folder / "cycle")
    expect(folder / "dangling.png", "broken symbolic link, file not found").symlink_to(folder / "gone.png")
    os.mkfifo(expect(folder / "pipe.png", "not a file: a named pipe (FIFO)"))
    os.mkfifo(expect(folder / "IM_PIPE", "not a file: a named pipe (FIFO)"))  # extension-less: a DICOM candidate
    expect(folder / "zero.dcm", "not a file: a character device").symlink_to("/dev/zero")
    save(expect(folder / "vanishing.png", "file not found"), Image.fromarray(gradient()))
    save(expect(folder / "growing.png", "file changed while it was read"), Image.fromarray(gradient()))
    (expect(folder / "scan[1].png", "not a readable image")).write_text("[bold red]not an image[/]")
    undecodable = expect(folder / "study[2].dcm", "install the decoders with pip install 'landmark-edge[dicom]'")
    from factories import _undecodable_dicom

    _undecodable_dicom(folder).rename(undecodable)
    not_utf8_bad = Path(os.fsdecode(bytes(folder) + b"/bad_\xfe.png"))
    expect(not_utf8_bad, "not a readable image").write_text("hello")
    unreadable = _unreadable_file(folder)
    if unreadable is not None:
        expect(unreadable, "cannot read file (permission denied)")
    deep = _nested_past_path_max(root)
    expected[str(deep / ("d" * 200))[:100]] = "cannot read folder (File name too long)"  # its line names the long path
    too_long = expect(root / ("n" * 300 + ".png"), "file name or path too long")
    return [str(loop), str(folder), str(too_long), str(deep)], expected


def _good_inputs(folder: Path) -> list[Path]:
    folder.mkdir()
    image = Image.fromarray(gradient(160, 200))
    not_utf8 = Path(os.fsdecode(bytes(folder) + b"/scan_\xff.png"))
    return [save(folder / "a.png", image), save(folder / "good[1].png", image), save(not_utf8, image),
            save(folder / "b.png", Image.fromarray(gradient(160, 200, 65535, np.uint16)))]  # fmt: skip


def _alarm(seconds: int):
    def fail(*_):
        raise TimeoutError(f"infer still running after {seconds} s (blocked on a FIFO or device?)")

    signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)


def test_one_run_over_every_file_system_oddity(tmp_path, tiny_weights, monkeypatch):
    arguments, expected = _hostile_inputs(tmp_path)
    good = _good_inputs(tmp_path / "good")
    monkeypatch.setattr(files, "os", _StagedRaces())
    out = tmp_path / "results.jsonl"
    _alarm(120)
    try:
        result = CliRunner().invoke(app, ["infer", *arguments, *map(str, good), "-a", "chest", "-w", str(tiny_weights),
                                          "-f", "jsonl", "-o", str(out), "--out-dir", str(tmp_path / "per_image")])
    finally:
        signal.alarm(0)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for path, problem in expected.items():
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        assert any(shown in line and problem in line for line in errors), (path, problem, errors)
    assert len(errors) == len(expected)
    assert result.exit_code == EXIT_FAILED_BASE + len(expected)
    assert f"{len(expected)} of {len(expected) + len(good)} inputs failed" in result.stderr
    outcomes = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(o["path"] for o in outcomes if o["ok"]) == sorted(map(str, good))
    assert all(len(o["landmarks"]) == 6 for o in outcomes if o["ok"])
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any(f"{good[1]}: " in line for line in warned)  # a bracketed name keeps its brackets in a warning too
    assert any("scan_\\xff.png" in line for line in warned)  # undecodable bytes shown, not dropped


def test_overlay_is_drawn_from_the_decoded_image_so_a_file_gone_after_reading_still_gets_one(
    tmp_path, tiny_weights, monkeypatch
):
    """Deleted right after inference would have removed it before a second read: ``--overlay`` draws from the
    pixels the pipeline decoded, so each file is opened once and both results and overlays are written."""
    gone = save(tmp_path / "short_lived.png", Image.fromarray(gradient(160, 200)))
    stays = save(tmp_path / "stays.png", Image.fromarray(gradient(160, 200)))
    races = _StagedRaces()
    monkeypatch.setattr(files, "os", races)
    result = CliRunner().invoke(app, ["infer", str(gone), str(stays), "-a", "chest", "-w", str(tiny_weights),
                                      "--overlay", str(tmp_path / "overlays"), "-f", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [o["ok"] for o in json.loads(result.stdout)] == [True, True]
    assert races.opens == {"short_lived.png": 1, "stays.png": 1}
    assert all((tmp_path / "overlays" / f"{name}.png").is_file() for name in ("short_lived.png", "stays.png"))


def test_image_gone_before_a_ray_overlay_rereads_it_is_that_inputs_failure(tmp_path, tiny_weights):
    """Ray decodes in its read tasks and ships results only, so its overlays read the file again: one that
    vanished by then is that input's failure (one line), not a crash."""
    from landmark_edge.anatomy import get_anatomy
    from landmark_edge.inference import _finish
    from landmark_edge.results import ImageFailure, ResultStore

    image = save(tmp_path / "short_lived.png", Image.fromarray(gradient(160, 200)))
    out_dir = tmp_path / "per_image"
    result = CliRunner().invoke(app, ["infer", str(image), "-a", "chest", "-w", str(tiny_weights), "--out-dir",
                                      str(out_dir), "-f", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    store = ResultStore(out_dir, [image])
    finished = store.load(image)
    image.unlink()
    outcome = _finish(finished, store, tmp_path / "overlays")
    assert isinstance(outcome, ImageFailure) and outcome.error == f"{image}: file not found"


def test_unreadable_file_for_this_user(tmp_path, tiny_weights):
    """The permission case alone, so the reason is visible where neither way to make it exists."""
    path = _unreadable_file(tmp_path)
    if path is None:
        pytest.skip("running as root without a write-only sysfs file: no file this user cannot read")
    result = CliRunner().invoke(app, ["infer", str(path), "-a", "chest", "-w", str(tiny_weights)])
    assert result.exit_code == EXIT_FAILED_BASE + 1
    assert result.stderr.strip() == f"error: {path}: cannot read file (permission denied)\n1 of 1 inputs failed".strip()


def test_messages_are_printed_as_written(capsys):
    """Markup, control characters and undecodable bytes in a message are shown, not interpreted: the line stays
    one line, keeps ``[dicom]``, and a terminal escape in a hostile file name cannot restyle the terminal."""
    hostile = os.fsdecode(b"/in/[bold]x\x1b[31m\nred\xff.png")
    error_line(f"{hostile}: install the decoders with pip install 'landmark-edge[dicom]'")
    warning_line("[/]")
    assert capsys.readouterr().err.splitlines() == [
        "error: /in/[bold]x\\x1b[31m\\nred\\xff.png: install the decoders with pip install 'landmark-edge[dicom]'",
        "warning: [/]",
    ]


def test_report_tables_print_cells_as_written(capsys):
    """Table cells hold artifact paths and library text: ``model[fp16].onnx`` keeps its brackets on stdout."""
    from rich.table import Table

    table = Table("artifact", "note")
    table.add_row("out/model[fp16].onnx", "pip install 'landmark-edge[dicom]' [/]")
    out_console(width=200).print(table)
    printed = capsys.readouterr().out
    assert "out/model[fp16].onnx" in printed and "'landmark-edge[dicom]' [/]" in printed


def test_every_command_prints_through_the_markup_free_consoles():
    """A ``Console()`` made anywhere else would interpret markup in its cells again (issue 19, item 3)."""
    import ast

    package = Path(__file__).resolve().parents[1] / "landmark_edge"
    made = [f"{path.relative_to(package)}:{node.lineno}" for path in package.rglob("*.py")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Console"
            and not any(k.arg == "markup" for k in node.keywords)]  # fmt: skip
    assert made == []


def test_pt2_without_our_metadata_is_never_loaded(tmp_path, monkeypatch):
    """A .pt2 runs native code as it loads: one without landmark-edge metadata is refused before loading."""
    import zipfile

    import torch

    def never(*args, **kwargs):
        raise AssertionError("aoti_load_package was called on a foreign package")

    monkeypatch.setattr(torch._inductor, "aoti_load_package", never)
    foreign = tmp_path / "foreign.pt2"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("package/data/aotinductor/model/model.so", b"\x7fELF native code")
        archive.writestr("package/data/aotinductor/model/model_metadata.json", json.dumps({"AOTI_DEVICE_KEY": "cpu"}))
    with pytest.raises(WeightsError, match=r"foreign\.pt2: not a landmark-edge package .*; not loaded"):
        load_pt2(foreign)


def test_text_outputs_keep_a_non_utf8_name_as_its_bytes(tmp_path):
    """CSV and table files name a non-UTF-8 file with its own bytes (as ``ls`` does) instead of failing the run."""
    from landmark_edge.io.atomic import atomic_write_text

    name = os.fsdecode(b"scan_\xff.png")
    atomic_write_text(tmp_path / "out.csv", f"path\n{name}\n")
    assert (tmp_path / "out.csv").read_bytes() == b"path\nscan_\xff.png\n"
