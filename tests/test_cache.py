"""The verified cache: every entry checked against its recorded sha256, damaged ones rebuilt with one warning,
concurrent first use exporting once (real processes), folder entries, and the ``cache`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark_edge.cli import app
from landmark_edge.io.cache import CACHE_ENV, cached_bytes, cached_folder, list_entries, record_path

runner = CliRunner()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def counting(data: bytes, calls: list):
    def make() -> bytes:
        calls.append(1)
        return data

    return make


def test_entry_is_recorded_and_a_verified_hit_does_not_rebuild(cache):
    calls = []
    data = os.urandom(50_000)
    assert cached_bytes("onnx/a.onnx", counting(data, calls)) == data
    assert cached_bytes("onnx/a.onnx", counting(b"other", calls)) == data
    assert calls == [1]
    record = json.loads(record_path(cache / "onnx/a.onnx").read_text())
    assert record["size"] == len(data) and len(record["sha256"]) == 64


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    for i in range(100):
        data[1000 + 37 * i] ^= 0xA5
    path.write_bytes(bytes(data))


def _unrecord(path):
    record_path(path).unlink()


def _unreadable(path):
    path.unlink()
    path.mkdir()  # reading it fails (IsADirectoryError) even as root, where chmod 000 would not


@pytest.mark.parametrize("damage", [_truncate, _flip, _unrecord, _unreadable])
def test_damaged_entry_is_discarded_and_rebuilt_with_one_warning(cache, capsys, damage):
    data = os.urandom(50_000)
    cached_bytes("onnx/a.onnx", lambda: data)
    damage(cache / "onnx/a.onnx")
    calls = []
    assert cached_bytes("onnx/a.onnx", counting(data, calls)) == data
    assert calls == [1]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: cache entry {cache / 'onnx/a.onnx'}: ")
    assert "discarded and rebuilt" in lines[0]
    calls.clear()
    assert cached_bytes("onnx/a.onnx", counting(data, calls)) == data and calls == []  # whole again


def test_a_rebuild_removes_a_killed_writers_temp_files(cache):
    (cache / "onnx").mkdir(parents=True)
    leftover = cache / "onnx" / ".a.onnx.k1ll3d.tmp"
    leftover.write_bytes(b"half")
    other = cache / "onnx" / ".b.onnx.k1ll3d.tmp"  # another entry's: its writer may be alive
    other.write_bytes(b"half")
    cached_bytes("onnx/a.onnx", lambda: b"whole")
    assert not leftover.exists() and other.exists()


def test_unwritable_cache_builds_uncached(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    calls = []
    assert cached_bytes("onnx/a.onnx", counting(b"data", calls)) == b"data"
    assert cached_bytes("onnx/a.onnx", counting(b"data", calls)) == b"data"
    assert calls == [1, 1]


def test_folder_entry_keeps_recorded_files_and_drops_damaged_or_unrecorded_ones(cache, capsys):
    with cached_folder("openvino/key") as folder:
        (folder / "model.blob").write_bytes(b"compiled" * 100)
        (folder / "other.blob").write_bytes(b"kernels" * 100)
    with cached_folder("openvino/key") as folder:
        assert sorted(p.name for p in folder.iterdir()) == ["model.blob", "other.blob"]
    assert capsys.readouterr().err == ""
    _flip_small(folder / "model.blob")
    (folder / "stray.blob").write_bytes(b"not recorded")
    (folder / ".model.blob.x.tmp").write_bytes(b"leftover")
    with cached_folder("openvino/key") as folder:
        assert sorted(p.name for p in folder.iterdir()) == ["other.blob"]  # what the library rebuilds from
        (folder / "model.blob").write_bytes(b"compiled" * 100)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2 and all("discarded and rebuilt" in line for line in warnings)
    assert any(str(folder / "model.blob") in line and "damaged" in line for line in warnings)
    assert any(str(folder / "stray.blob") in line and "not recorded" in line for line in warnings)
    assert {e.status for e in list_entries()} == {"ok"}


def _flip_small(path):
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))


# N processes started together on an empty cache, each asking for the same entry; the make() of each appends a
# line to a counter file and takes a while, as an export does.
_CONCURRENT = textwrap.dedent("""
    import sys, time
    from landmark_edge.io.cache import cached_bytes

    def make():
        with open(sys.argv[1], "a") as count:
            count.write("export\\n")
        time.sleep(1.0)
        return b"graph" * 100_000

    assert cached_bytes("onnx/shared.onnx", make) == b"graph" * 100_000
""")


def test_concurrent_first_use_builds_once(tmp_path):
    counter = tmp_path / "exports.txt"
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache")}
    processes = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(counter)], env=env) for _ in range(5)]
    assert [p.wait(timeout=120) for p in processes] == [0] * 5
    assert counter.read_text().splitlines() == ["export"]


# A one-image `infer` run as the console script runs it, counting the in-memory ONNX exports it makes.
_INFER_COUNTING_EXPORTS = textwrap.dedent("""
    import sys
    from landmark_edge.cli import make_app
    from landmark_edge.export.loaders import OnnxFromWeights

    real = OnnxFromWeights.graph

    def counted(self, *args):
        with open(sys.argv[1], "a") as count:
            count.write("export\\n")
        return real(self, *args)

    OnnxFromWeights.graph = counted
    make_app(["infer"])(sys.argv[2:], prog_name="landmark-edge")
""")


def test_concurrent_infer_on_an_empty_cache_exports_once(tmp_path, tiny_weights):
    """A job array's processes on an empty cache: one exports, the others wait and reuse it; same results."""
    from landmark_edge.export.onnx import EXAMPLE_IMAGE

    counter = tmp_path / "exports.txt"
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _INFER_COUNTING_EXPORTS, str(counter), "infer", str(EXAMPLE_IMAGE), "-a",
               "chest", "-w", str(tiny_weights), "-f", "json"]  # fmt: skip
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]  # fmt: skip
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], [err for _, err in outputs]
    assert counter.read_text().splitlines() == ["export"]
    assert len({out for out, _ in outputs}) == 1 and json.loads(outputs[0][0])[0]["ok"]


@pytest.mark.parametrize("damage", [_truncate, _flip])
def test_infer_on_a_damaged_cached_graph_rebuilds_it_and_gives_the_same_landmarks(tmp_path, tiny_weights, damage):
    """The issue's two cases: a truncated graph (exit 2 before) and ~100 flipped bytes (other landmarks before)."""
    scan = tmp_path / "scan.png"
    Image.effect_noise((240, 260), 40).save(scan)
    args = ["infer", str(scan), "-a", "chest", "-w", str(tiny_weights), "-f", "json"]
    clean = runner.invoke(app, args)
    assert clean.exit_code == 0, clean.stderr
    (graph,) = [e.path for e in list_entries() if e.path.suffix == ".onnx" and "chest" in e.path.name
                and "subpixel" in e.path.name and e.status == "ok" and _made_from(e.path, tiny_weights)]  # fmt: skip
    damage(graph)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(clean.stdout)
    cache_lines = [line for line in again.stderr.splitlines() if "cache entry" in line]
    assert len(cache_lines) == 1 and cache_lines[0].startswith(f"warning: cache entry {graph}: ")


def _made_from(path, weights) -> bool:
    from landmark_edge.weights import file_sha256

    return path.name.startswith(file_sha256(weights)[:16])


def test_cache_command_lists_and_prunes(cache):
    cached_bytes("onnx/good.onnx", lambda: b"good")
    cached_bytes("onnx/bad.onnx", lambda: b"bad")
    (cache / "onnx" / "bad.onnx").write_bytes(b"BAD")
    (cache / "onnx" / ".good.onnx.dead.tmp").write_bytes(b"x")
    listed = runner.invoke(app, ["cache", "list"])
    assert listed.exit_code == 0
    assert {line.split()[0]: line.split()[-1] for line in listed.stdout.splitlines()[:-1]} == {
        "damaged": "onnx/bad.onnx", "temporary": "onnx/.good.onnx.dead.tmp", "ok": "onnx/good.onnx"}  # fmt: skip
    pruned = runner.invoke(app, ["cache", "prune"])
    assert pruned.exit_code == 0 and "removed 2 of 3 entries" in pruned.stdout
    assert [(e.path.name, e.status) for e in list_entries()] == [("good.onnx", "ok")]
    assert runner.invoke(app, ["cache", "clear"]).exit_code == 0 and list_entries() == []
    assert runner.invoke(app, ["cache", "nonsense"]).exit_code == 2
