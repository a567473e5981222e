"""The run record every result carries (weights and artifact sha256, backend, precision, versions), in each output
format, and ``--skip-existing`` reusing only results made the same way."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from factories import save
from PIL import Image
from typer.testing import CliRunner

from landmark_edge.cli import app
from landmark_edge.contracts import RUN_COLUMNS, RUN_FORMAT_VERSION
from landmark_edge.results import CSV_COLUMNS, ImageResult, to_jsonl_line
from landmark_edge.weights import file_sha256

runner = CliRunner()


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(7)
    for name in ("a.png", "b.png", "c.png"):
        save(folder / name, Image.fromarray(rng.integers(0, 255, (80, 70), dtype=np.uint8)))
    return folder


def infer(*args: str):
    result = runner.invoke(app, ["infer", *map(str, args)])
    assert result.exit_code == 0, result.stderr
    return result


def test_every_format_carries_the_run_record(scans, tiny_weights, tmp_path):
    sha = file_sha256(tiny_weights)
    (first,) = json.loads(infer(scans / "a.png", "-a", "chest", "-w", tiny_weights, "-f", "json").stdout)
    assert first["run"] == {"format_version": RUN_FORMAT_VERSION, "landmark_edge_version": first["run"][
        "landmark_edge_version"], "backend": "onnxruntime", "precision": "fp32", "weights_sha256": sha,
        "artifact_sha256": None}  # fmt: skip
    torch_run = json.loads(infer(scans / "a.png", "-a", "chest", "-w", tiny_weights, "--backend", "torch",
                                 "--precision", "bf16", "-f", "jsonl").stdout)["run"]  # fmt: skip
    assert (torch_run["backend"], torch_run["precision"], torch_run["weights_sha256"]) == ("torch", "bf16", sha)
    rows = list(csv.DictReader(io.StringIO(infer(scans, "-a", "chest", "-w", tiny_weights, "-f", "csv").stdout)))
    assert list(rows[0])[: len(CSV_COLUMNS)] == CSV_COLUMNS and list(rows[0])[-len(RUN_COLUMNS):] == RUN_COLUMNS
    assert {row["run_weights_sha256"] for row in rows} == {sha} and len(rows) == 3 * 6
    infer(scans / "b.png", "-a", "chest", "-w", tiny_weights, "--out-dir", tmp_path / "r")
    assert json.loads((tmp_path / "r" / "b.png.json").read_text())["run"]["weights_sha256"] == sha


def test_a_user_artifact_is_recorded_by_its_sha256_and_its_recorded_weights(scans, tiny_weights, exported):
    graph = exported["chest"]
    (result,) = json.loads(infer(scans / "a.png", "-a", "chest", "--backend", "onnxruntime", "--artifact", graph,
                                 "-f", "json").stdout)  # fmt: skip
    assert result["run"]["artifact_sha256"] == file_sha256(graph)
    assert result["run"]["weights_sha256"] == file_sha256(tiny_weights)  # from the graph's own metadata


def test_parquet_has_the_csv_columns_measurements_and_run_record_included(tiny_weights, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from landmark_edge.export.onnx import EXAMPLE_IMAGE

    head = EXAMPLE_IMAGE.with_name("head_151.jpg")
    args = [head, "-a", "head", "-w", tiny_weights, "--measurements"]
    text = infer(*args, "-f", "csv").stdout
    infer(*args, "-f", "parquet", "-o", tmp_path / "all.parquet")
    table = pq.read_table(tmp_path / "all.parquet").to_pylist()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(table[0]) == list(rows[0]) and "ANB" in rows[0] and "ANB_class" in rows[0]
    for parquet_row, csv_row in zip(table, rows, strict=True):
        assert {k: "" if v is None else str(v) for k, v in parquet_row.items()} == csv_row


def test_a_result_survives_its_jsonl_line_byte_for_byte(scans, tiny_weights):
    """What resuming from a JSONL output relies on: parsing a line and writing it again gives the same line."""
    for line in infer(scans, "-a", "head", "-w", tiny_weights, "--measurements", "-f", "jsonl").stdout.splitlines():
        assert to_jsonl_line(ImageResult.from_dict(json.loads(line))) == line + "\n"


def test_skip_existing_redoes_results_of_other_weights_and_says_why(scans, tiny_weights, chest_only_weights, tmp_path):
    out = tmp_path / "results"
    infer(scans, "-a", "chest", "-w", tiny_weights, "--out-dir", out)
    old = json.loads((out / "c.png.json").read_text())
    del old["run"]  # as a landmark-edge without run records wrote it
    (out / "c.png.json").write_text(json.dumps(old))
    (out / "b.png.json").unlink()
    again = infer(scans, "-a", "chest", "-w", chest_only_weights, "--out-dir", out, "--skip-existing", "-f", "json")
    assert ("note: --skip-existing: reusing 0 of 2 results found; redoing 2: 1 made by other weights, 1 without a "
            "run record (made by an older landmark-edge)") in again.stderr
    assert {r["run"]["weights_sha256"] for r in json.loads(again.stdout)} == {file_sha256(chest_only_weights)}
    same = infer(scans, "-a", "chest", "-w", chest_only_weights, "--out-dir", out, "--skip-existing", "-f", "json")
    assert "note: --skip-existing: reusing 3 of 3 results found\n" in same.stderr
    assert same.stdout == again.stdout
