"""Benchmark records: every field of where and how present, both files atomic, a failed render writes nothing."""

from __future__ import annotations

import json
import os

import pytest

from landmark_edge import __version__
from landmark_edge.bench.records import command_line, write_record


def body(record: dict) -> str:
    return f"# A record\n\nrows: {record['rows']}\n"


def test_a_record_says_where_when_and_how(tmp_path):
    argv = [os.path.join(os.getcwd(), "benchmarks", "x.py"), "--data", "dir with space"]
    record = write_record(tmp_path / "x", {"rows": [1, 2]}, body, argv=argv)
    stored = json.loads((tmp_path / "x.json").read_text())
    assert stored == record and stored["rows"] == [1, 2]
    made = stored["record"]
    assert set(made) == {"created", "command", "git_commit", "environment", "libraries"}
    assert made["command"] == "PYTHONPATH=. python benchmarks/x.py --data 'dir with space'"
    environment = made["environment"]
    assert environment["cpu_cores"] >= 1 and environment["landmark_edge"] == __version__ and environment["torch"]
    assert made["libraries"]["numpy"]  # installed: a version; an absent library is null
    assert "ray" in made["libraries"] and made["created"].endswith("+00:00")
    markdown = (tmp_path / "x.md").read_text().splitlines()
    assert markdown[0] == "# A record" and markdown[2].startswith(f"Recorded {made['created']} on ")
    assert f"({environment['cpu_cores']} cores)" in markdown[2] and made["command"] in markdown
    assert markdown[2].count(f"torch {environment['torch']}") == 1  # each library once, torch included
    assert markdown[-1] == "rows: [1, 2]"


def test_a_failed_render_leaves_the_previous_record_whole(tmp_path):
    write_record(tmp_path / "x", {"rows": [1]}, body, argv=["x.py"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(record: dict) -> str:
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError):
        write_record(tmp_path / "x", {"rows": [2]}, broken, argv=["x.py"])
    with pytest.raises(ValueError):  # NaN is no JSON number: refused before anything is written
        write_record(tmp_path / "x", {"rows": [float("nan")]}, body, argv=["x.py"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file left either


def test_an_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def killed(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_record(tmp_path / "x", {"rows": [1]}, body, argv=["x.py"])
    assert list(tmp_path.iterdir()) == []


def test_the_command_is_relative_to_the_repository_root_when_it_can_be(tmp_path):
    expected = "PYTHONPATH=. python benchmarks/cold_start.py --runs 2"
    assert command_line(["benchmarks/cold_start.py", "--runs", "2"]) == expected
    assert command_line([str(tmp_path / "x.py")]) == f"PYTHONPATH=. python {tmp_path / 'x.py'}"
    assert command_line(["benchmarks/ray_local.sh", "/tmp/out", "250"]) == "bash benchmarks/ray_local.sh /tmp/out 250"


def test_every_benchmark_script_writes_through_the_helper():
    """A record that does not say where it was made cannot be compared: no script describes the machine itself."""
    from pathlib import Path

    scripts = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.py"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert "write_record" in text, f"{script.name}: write its record through landmark_edge.bench.records"
        for own_description in ("CPU cores", "cpu_count()", "platform.processor", "platform.machine()"):
            assert own_description not in text, f"{script.name}: {own_description} (the record says where)"
