"""Interrupted runs (real SIGINT/SIGTERM in subprocesses) that resume byte-identically, and outputs that cannot be
written (ENOSPC/EACCES, injected everywhere and on a real size-limited file system): one line naming the path,
earlier files whole, the exit status of README's table."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from factories import save
from PIL import Image
from typer.testing import CliRunner

import landmark_edge.io.atomic as atomic
from landmark_edge.cli import app
from landmark_edge.errors import OutputError

runner = CliRunner()
IMAGES = 60


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(5)
    for i in range(IMAGES):
        (folder / f"{i // 20}").mkdir(exist_ok=True)
        save(folder / f"{i // 20}" / f"{i:03d}.png", Image.fromarray(rng.integers(0, 255, (64, 60), dtype=np.uint8)))
    return folder


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _infer_command(scans: Path, weights: Path, out: Path, with_out_dir: bool, backend: str) -> list[str]:
    args = ["infer", str(scans), "-a", "chest", "-w", str(weights), "-b", "2", "-f", "jsonl", "-o",
            str(out / "all.jsonl"), "--backend", backend]  # fmt: skip
    return args + (["--out-dir", str(out / "results")] if with_out_dir else [])


def _python(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "landmark_edge", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


# OpenVINO takes the SIGTERM case: a compiled model alive at a signal's exit must not crash the interpreter's
# shutdown (one did, in a training process, before the backends learned to close).
@pytest.mark.parametrize(
    ("signal_number", "with_out_dir", "backend"),
    [(signal.SIGTERM, True, "openvino"), (signal.SIGINT, False, "onnxruntime")],
)
def test_signal_stops_within_a_batch_and_the_resumed_run_is_byte_identical(
    scans, tiny_weights, tmp_path, signal_number, with_out_dir, backend
):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="openvino is not installed (pip install 'landmark-edge[openvino]')")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = _infer_command(scans, tiny_weights, whole, with_out_dir, backend)
    done = subprocess.run(_python(args), env=_env(), capture_output=True, text=True)  # also fills the graph cache
    assert done.returncode == 0, done.stderr
    cut.mkdir()
    command = _python(_infer_command(scans, tiny_weights, cut, with_out_dir, backend))
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = (cut / "results") if with_out_dir else cut
    deadline = time.monotonic() + 300
    while not _started(progress) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("warning:")]  # flags of random weights
    assert len(lines) == 1, stderr
    name = signal.Signals(signal_number).name
    kept = json_lines = [json.loads(line) for line in (cut / "all.jsonl").read_text().splitlines()]
    assert all(line["ok"] for line in json_lines) and 0 < len(kept) < IMAGES  # every complete line, and not all
    where = cut / "results" if with_out_dir else cut / "all.jsonl"
    assert lines[0].startswith(f"interrupted ({name}): {len(kept)} of {IMAGES} results on disk in {where}; resume with: ")
    if with_out_dir:
        assert len(list((cut / "results").rglob("*.json"))) == len(kept)
    assert not list(cut.rglob("*.tmp"))
    resume = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert resume[0] == "landmark-edge" and resume[-1] == "--skip-existing"
    resumed = subprocess.run(_python(resume[1:]), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"--skip-existing: reusing {len(kept)} of {len(kept)} results found" in resumed.stderr
    assert files(cut) == files(whole)


def _started(folder: Path) -> bool:
    """The first result is on disk (a result file, or a line in the JSONL stream's temp file): the run is going."""
    return any(p.suffix == ".json" or (p.suffix == ".tmp" and p.stat().st_size) for p in folder.rglob("*"))


# --- outputs that cannot be written --------------------------------------------------------------------------


def _fail_writes(monkeypatch, suffix: str, after: int, code: int = errno.ENOSPC) -> list[Path]:
    """Make the atomic write of the ``after``-th file ending in ``suffix`` (and every later one) fail with
    ``code``, as a full disk or a read-only folder does at the moment the file is committed."""
    real, seen = atomic._commit, []

    def commit(tmp: Path, target: Path) -> None:
        if target.name.endswith(suffix):
            seen.append(target)
            if len(seen) > after:
                raise OSError(code, os.strerror(code), str(tmp))
        real(tmp, target)

    monkeypatch.setattr(atomic, "_commit", commit)
    return seen


@pytest.mark.parametrize(
    ("what", "suffix", "extra"),
    [
        ("results", ".png.json", []),
        ("overlays", ".png.png", ["--overlay", "{out}/overlays"]),
        ("heatmaps", ".npy", ["--save-heatmaps", "{out}/heatmaps"]),
    ],
)
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_per_image_write_failure_is_one_line_and_counts_the_rest_as_failed(
    scans, tiny_weights, tmp_path, monkeypatch, what, suffix, extra, code
):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "all.json").write_text("earlier output\n")
    seen = _fail_writes(monkeypatch, suffix, after=3, code=code)
    args = ["infer", str(scans / "0"), "-a", "chest", "-w", str(tiny_weights), "-b", "2", "--out-dir",
            str(out / "results"), "-f", "json", "-o", str(out / "all.json"), *(e.format(out=out) for e in extra)]
    result = runner.invoke(app, args)
    failing = seen[3]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {failing}: cannot write ({os.strerror(code)}); earlier files are unchanged"]
    written = sorted((out / "results").rglob("*.json"))
    assert len(written) == 3  # the failing image's JSON (written last, as the mark that all are done) is not
    assert all(json.loads(p.read_text())["ok"] for p in written)  # earlier files whole
    assert result.exit_code == 10 + (20 - 3), result.stderr  # 3 processed, 17 failed
    assert (out / "all.json").read_text() == "earlier output\n"
    assert not list(out.rglob("*.tmp"))


def test_aggregate_output_write_failure_keeps_the_old_file(scans, tiny_weights, tmp_path, monkeypatch):
    out = tmp_path / "all.csv"
    out.write_text("earlier output\n")
    _fail_writes(monkeypatch, "all.csv", after=0)
    result = runner.invoke(app, ["infer", str(scans / "1"), "-a", "chest", "-w", str(tiny_weights), "-f", "csv",
                                 "-o", str(out)])  # fmt: skip
    assert result.exit_code == 10 + 20, result.stderr  # nothing was written: every input failed
    assert f"error: {out}: cannot write (No space left on device)" in result.stderr
    assert out.read_text() == "earlier output\n" and not list(tmp_path.glob(".*.tmp"))


def test_export_write_failure_is_one_line_and_keeps_the_old_file(tiny_weights, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"earlier graph")
    _fail_writes(monkeypatch, ".onnx", after=0)
    result = runner.invoke(app, ["export", "-a", "chest", "-w", str(tiny_weights), "-o", str(out)])
    assert result.exit_code == 2
    assert f"error: {out}: cannot write (No space left on device)" in result.stderr
    assert out.read_bytes() == b"earlier graph" and not list(tmp_path.glob(".*.tmp"))


def test_checkpoint_write_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from landmark_edge.training.checkpoint import read_checkpoint_bytes, save_checkpoint

    save_checkpoint(tmp_path, {"iteration": 1, "x": list(range(1000))})
    before = read_checkpoint_bytes(tmp_path)
    _fail_writes(monkeypatch, ".pt.000", after=0)
    with pytest.raises(OutputError, match=r"checkpoint-00000002\.pt\.000: cannot write \(No space left on device\)"):
        save_checkpoint(tmp_path, {"iteration": 2, "x": list(range(2000))})
    assert read_checkpoint_bytes(tmp_path) == before


@pytest.fixture()
def small_filesystem(tmp_path):
    """A 300 KiB tmpfs (root can mount one here; elsewhere the test says why it cannot run)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True,
                          text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {made.stderr.strip() or made.returncode}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_stops_with_one_line_and_whole_earlier_files(scans, tiny_weights, small_filesystem):
    out = small_filesystem
    result = subprocess.run(_python(["infer", str(scans), "-a", "chest", "-w", str(tiny_weights), "-b", "2",
                                     "--out-dir", str(out / "results"), "--overlay", str(out / "overlays"),
                                     "-f", "json"]), env=_env(), capture_output=True, text=True)  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write (No space left on device)" in errors[0], result.stderr
    written = list((out / "results").rglob("*.json"))
    assert 0 < len(written) < IMAGES
    assert all(json.loads(p.read_text())["ok"] for p in written)
    assert result.returncode == 10 + min(IMAGES - len(written), 100)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
