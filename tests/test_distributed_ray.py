"""``infer --executor ray`` on a local 2-CPU Ray cluster: the same results, failures and exit code as the
single-machine path, resuming from ``--out-dir``, and a killed actor retried without losing a result.

One cluster serves the whole module (starting Ray costs seconds); the tiny random weights keep the network fast.
"""

import csv
import io
import os
import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from factories import BAD_INPUTS, gradient, make_dicom, save
from PIL import Image
from typer.testing import CliRunner

import landmark_edge.inference as infer_job
from landmark_edge.cli import app
from ray_crash import crash_once

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'landmark-edge[ray]')")
pq = pytest.importorskip("pyarrow.parquet")
from landmark_edge.distributed import ray as ray_executor  # noqa: E402

runner = CliRunner()
SUMMARY = re.compile(r"^ray: (\d+) images, (\d+) failed in .* images/s\); time summed over workers: preprocess ")
BAD = ("empty PNG", "truncated JPEG", "constant 16-bit", "DICOM without pixel data")


@pytest.fixture(scope="module")
def cluster():
    """A local cluster for the module; its workers can import the tests' own modules (``ray_crash``)."""
    saved = os.environ.get("PYTHONPATH")
    tests = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, saved]))  # inherited by the workers Ray starts
    _, started = ray_executor.connect("local", num_cpus=2)
    yield
    if started:
        ray.shutdown()
    if saved is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Good scans of every stored dtype (8/16-bit, RGB, float TIFF, DICOM with spacing) among bad files."""
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(5)
    save(folder / "a.png", Image.fromarray(rng.integers(0, 255, (90, 70), dtype=np.uint8)))
    save(folder / "b_sixteen.png", Image.fromarray(gradient(96, 120, 65535, np.uint16)))
    save(folder / "c_rgb.jpg", Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)))
    save(folder / "d_float.tif", Image.fromarray(gradient().astype(np.float32), "F"))
    make_dicom(folder / "e_mono1.dcm", gradient(96, 120, 4095, np.uint16), "MONOCHROME1", spacing=(0.2, 0.1))
    for case in BAD_INPUTS:
        if case.name in BAD:
            case.build(folder)
    return folder


def infer(scans, weights, out, *extra):
    args = ["infer", str(scans), "-a", "chest", "-w", str(weights), "-b", "2", "--out-dir", str(out / "results")]
    return runner.invoke(app, [*args, *extra])


def per_image(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted((out / "results").rglob("*")) if p.is_file()}


def error_lines(result):
    return sorted(line for line in result.stderr.splitlines() if line.startswith("error:"))


def summary(result):
    (match,) = [m for m in map(SUMMARY.match, result.stderr.splitlines()) if m]
    return int(match[1]), int(match[2])


@pytest.fixture(scope="module")
def single(scans, tiny_weights, tmp_path_factory):
    """The single-machine run every Ray run is compared with."""
    out = tmp_path_factory.mktemp("single")
    result = infer(scans, tiny_weights, out, "-f", "jsonl", "-o", str(out / "all.jsonl"))
    assert result.exit_code == 10 + len(BAD), result.output
    (out / "all.csv").write_text(
        infer(scans, tiny_weights, out, "-f", "csv", "--skip-existing").stdout, encoding="utf-8"
    )
    return out, result


def test_ray_gives_the_single_machine_results_failures_and_exit_code(cluster, scans, tiny_weights, single, tmp_path):
    reference, expected = single
    result = infer(scans, tiny_weights, tmp_path, "--executor", "ray", "-f", "parquet", "-o", str(tmp_path / "all.pq"))
    assert result.exit_code == expected.exit_code == 10 + len(BAD), result.output
    assert error_lines(result) == error_lines(expected) and len(error_lines(result)) == len(BAD)
    assert summary(result) == (5 + len(BAD), len(BAD))  # ours, once; no Ray progress bars or log lines
    assert [line for line in result.stderr.splitlines() if not SUMMARY.match(line)] == expected.stderr.splitlines()
    assert per_image(tmp_path) == per_image(reference) and len(per_image(tmp_path)) == 5  # byte for byte
    table = pq.read_table(tmp_path / "all.pq").to_pylist()
    rows = list(csv.DictReader(io.StringIO((reference / "all.csv").read_text(encoding="utf-8"))))
    assert [{k: "" if v is None else str(v) for k, v in row.items()} for row in table] == rows
    assert len(rows) == 5 * 6  # six chest landmarks per good scan


def test_resumed_ray_run_skips_finished_images(cluster, scans, tiny_weights, single, tmp_path, monkeypatch):
    reference, _ = single
    real, received = infer_job.ray_inference, []

    def interrupted(*args, **kwargs):  # the user presses Ctrl-C after two results came back
        for outcome in real(*args, **kwargs):
            if len(received) == 2:
                raise KeyboardInterrupt
            received.append(outcome)
            yield outcome

    monkeypatch.setattr(infer_job, "ray_inference", interrupted)
    assert infer(scans, tiny_weights, tmp_path, "--executor", "ray").exit_code == 130
    finished = [outcome for outcome in received if outcome.ok]
    assert len(per_image(tmp_path)) == len(finished) >= 1  # a.png comes first and is good
    monkeypatch.undo()
    out = str(tmp_path / "all.jsonl")
    result = infer(scans, tiny_weights, tmp_path, "--executor", "ray", "--skip-existing", "-f", "jsonl", "-o", out)
    assert result.exit_code == 10 + len(BAD), result.output
    assert summary(result) == (5 + len(BAD) - len(finished), len(BAD))  # failures are retried, results reused
    assert (tmp_path / "all.jsonl").read_bytes() == (reference / "all.jsonl").read_bytes()
    assert per_image(tmp_path) == per_image(reference)


def test_killed_actor_is_retried_without_losing_a_result(
    cluster, scans, tiny_weights, single, tmp_path, monkeypatch
):  # fmt: skip
    reference, expected = single
    marker = tmp_path / "crash-next-batch"
    marker.write_text("the first actor to read this exits\n")
    real = infer_job.ray_inference

    def with_a_crash(paths, anatomy, make_backend, *args, **kwargs):  # every actor's backend may kill its process
        return real(paths, anatomy, partial(crash_once, str(marker), make_backend), *args, **kwargs)

    monkeypatch.setattr(infer_job, "ray_inference", with_a_crash)
    result = infer(scans, tiny_weights, tmp_path, "--executor", "ray")
    assert not marker.exists()  # an actor did die on its first batch
    assert result.exit_code == expected.exit_code, result.output
    assert error_lines(result) == error_lines(expected)
    assert per_image(tmp_path) == per_image(reference)


def test_ray_missing_is_one_line(monkeypatch, tmp_path, tiny_weights):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if the extra were not installed
    save(tmp_path / "scan.png", Image.fromarray(gradient()))
    result = runner.invoke(app, ["infer", str(tmp_path / "scan.png"), "-a", "chest", "-w", str(tiny_weights),
                                 "--executor", "ray"])
    assert result.exit_code == 2
    assert result.stderr.strip() == 'error: the ray executor needs Ray: pip install "landmark-edge[ray]"'


def test_backend_that_cannot_load_on_the_cluster_is_one_line(cluster, scans, tiny_weights, tmp_path):
    package = tmp_path / "gone.pt2"  # the request is well formed; only loading it, in the actors, fails
    result = infer(scans, tiny_weights, tmp_path, "--executor", "ray", "--backend", "aoti", "--artifact", str(package))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == f"error: ray executor: {package}: AOTInductor package not found"
    assert not (tmp_path / "results").exists()
