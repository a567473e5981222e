"""The shipped default weights and the bundled examples they are checked on."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from landmark_edge.anatomy import get_anatomy
from landmark_edge.cli import app
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import WeightsError
from landmark_edge.export.loaders import OnnxFromWeights
from landmark_edge.weights import DEFAULT_WEIGHTS, DEFAULT_WEIGHTS_SHA256, file_sha256, load_weights, read_info
from tests.conftest import DATA, REPO, require

EXAMPLES = REPO / "landmark_edge" / "examples"
LABELS = json.loads((EXAMPLES / "labels.json").read_text())
# Set from the errors the shipped weights make on these test-split images (largest: head 32.5 px = 3.25 mm at
# 0.1 mm/px, chest 11.7 px of 512), about 10 % above them: a wrong, mis-ordered or damaged file fails.
RADIUS_PX = {"head": 36.0, "chest": 13.0}
# The eager reference: the default CPU backend (ONNX Runtime) would export the full-width graph in every test
# session (~15 s each); it equals torch within 1e-4 (test_onnxruntime_backend.py).
TORCH = ("--backend", "torch")


def test_bundled_example_labels_are_what_the_dataset_code_reads():
    require(DATA)
    from scripts.make_examples import example_labels

    assert {k: v["landmarks"] for k, v in example_labels(DATA).items()} == {
        k: v["landmarks"] for k, v in LABELS.items()
    }


def test_default_weights_load_with_every_anatomy_and_their_checksum():
    assert file_sha256(DEFAULT_WEIGHTS) == DEFAULT_WEIGHTS_SHA256
    model, info = load_weights(DEFAULT_WEIGHTS)
    assert info.anatomy_names == ["head", "hand", "chest"]
    assert sum(p.numel() for p in model.parameters()) == 4_381_052
    assert all(p.dtype == torch.float32 for p in model.parameters())  # stored and computed in fp32 (fp16 storage moved head landmarks: fp16_storage.md)
    assert [e.fit_for_use for e in info.anatomies] == [True, False, True]
    assert info.entry("head").test_metrics["reference"]["MRE"] < 1.6


def test_damaged_default_weights_are_refused(tmp_path, monkeypatch):
    import landmark_edge.weights as weights

    copy = tmp_path / "gu2net_default.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, copy)
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", copy)
    load_weights(copy)  # intact: loads
    _damage(copy)
    with pytest.raises(WeightsError, match="damaged.*reinstall"):
        load_weights(copy)


def test_damaged_default_weights_are_refused_before_their_cached_graph(tmp_path, monkeypatch):
    """The default CPU backend checks the shipped file's checksum too, before it looks in the graph cache."""
    import landmark_edge.weights as weights

    copy = tmp_path / "gu2net_default.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, copy)
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", copy)
    _damage(copy)
    with pytest.raises(WeightsError, match="damaged.*reinstall"):
        OnnxFromWeights(copy, get_anatomy("chest"), DecodeMethod.SUBPIXEL)()


def _damage(path) -> None:
    """Flip one byte of the last tensor."""
    with open(path, "r+b") as handle:
        handle.seek(-3, 2)
        byte = handle.read(1)
        handle.seek(-3, 2)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("anatomy", ["head", "chest"])
def test_default_weights_find_every_landmark_near_its_annotation(anatomy):
    entry = LABELS[anatomy]
    result = CliRunner().invoke(app, ["infer", str(EXAMPLES / entry["file"]), "-a", anatomy, "-f", "json", *TORCH])
    assert result.exit_code == 0, result.output
    found = np.array([[lm["x"], lm["y"]] for lm in json.loads(result.stdout)[0]["landmarks"]])
    errors = np.linalg.norm(found - np.array(entry["landmarks"]), axis=1)
    assert errors.max() <= RADIUS_PX[anatomy], f"{anatomy}: landmark errors {errors.round(1).tolist()} px"
    assert json.loads(result.stdout)[0]["flags"] == []  # a good in-distribution test image passes the flags


@pytest.mark.parametrize(("image", "run_as"), [("chest", "head"), ("head", "chest")])
def test_calibrated_flags_catch_the_wrong_anatomy(image, run_as):
    """An X-ray run as the other anatomy is flagged (benchmarks/results/flags.md: the rates behind the limits)."""
    result = CliRunner().invoke(app, ["infer", str(EXAMPLES / LABELS[image]["file"]), "-a", run_as, "-f", "json",
                                      *TORCH])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["flags"], f"{image} X-ray run as {run_as} was not flagged"


@pytest.mark.parametrize("command", [["infer", str(EXAMPLES / LABELS["hand"]["file"])], ["export", "-o", "x.onnx"]])
def test_hand_is_refused_with_the_default_weights(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*command, "-a", "hand"])
    assert result.exit_code == 2
    assert "unfit for hand" in result.output and "--weights" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_weights_without_readiness_stay_usable(tiny_weights):
    info = read_info(tiny_weights)
    assert all(e.fit_for_use is None for e in info.anatomies)
    load_weights(tiny_weights, "hand")  # an older or imported file: no readiness field, no refusal
