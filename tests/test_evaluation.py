"""Evaluation: each anatomy's mm conversion under both protocols, the summaries, and the evaluation plumbing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landmark_edge.anatomy import get_anatomy
from landmark_edge.data import SplitData, grid_label, load_split, pack, render_heatmaps
from landmark_edge.decode import decode_heatmaps
from landmark_edge.evaluation import evaluate_split, original_errors, reference_errors, summarize, write_overlays
from landmark_edge.runtime.backend import Backend, Prediction
from landmark_edge.runtime.eager import TorchBackend
from landmark_edge.runtime.pipeline import run_inference
from landmark_edge.transforms import read_grid_pixels
from landmark_edge.weights import load_weights
from tests.test_data import make_chest_root

HEAD, HAND, CHEST = (get_anatomy(n) for n in ("head", "hand", "chest"))


def _points(count: int, offset=(0.0, 0.0)) -> np.ndarray:
    base = np.stack([np.arange(count) * 7.0 + 20, np.arange(count) * 3.0 + 40], axis=-1)
    return (base + np.asarray(offset))[None]


def test_reference_head_uses_one_factor_on_both_axes():
    truth = _points(19)
    errors = reference_errors(truth + [3, 4], truth, HEAD)  # 5 grid px
    assert errors == pytest.approx(np.full((1, 19), 5 * 0.46875))
    errors = reference_errors(truth + [0, 2], truth, HEAD)
    assert errors == pytest.approx(np.full((1, 19), 2 * 0.46875))


def test_reference_hand_takes_landmarks_1_and_5_as_50_mm_on_the_grid():
    truth = _points(37)
    truth[0, 4] = truth[0, 0] + [30, 40]  # wrist width 50 grid px -> 1 mm per px
    pred = truth + [6, 8]  # 10 px
    assert reference_errors(pred, truth, HAND) == pytest.approx(np.full((1, 37), 10.0))
    truth2 = truth.copy()
    truth2[0, 4] = truth2[0, 0] + [0, 25]  # 25 px -> 2 mm per px
    assert reference_errors(truth2 + [3, 4], truth2, HAND) == pytest.approx(np.full((1, 37), 10.0))


def test_reference_chest_is_in_grid_pixels():
    truth = _points(6)
    assert reference_errors(truth + [5, 12], truth, CHEST) == pytest.approx(np.full((1, 6), 13.0))


def test_original_head_uses_the_per_axis_spacing():
    truth = _points(19)
    assert original_errors(truth + [3, 4], truth, HEAD) == pytest.approx(np.full((1, 19), 0.5))  # 0.1 mm/px
    spacing = np.array([[0.1, 0.2]])
    expected = math.hypot(3 * 0.1, 4 * 0.2)
    assert original_errors(truth + [3, 4], truth, HEAD, spacing) == pytest.approx(np.full((1, 19), expected))


def test_original_hand_measures_the_wrist_width_in_original_pixels():
    truth = _points(37)
    truth[0, 4] = truth[0, 0] + [300, 400]  # 500 original px = 50 mm -> 0.1 mm per px
    assert original_errors(truth + [6, 8], truth, HAND) == pytest.approx(np.full((1, 37), 1.0))


def test_original_chest_is_in_pixels():
    truth = _points(6)
    assert original_errors(truth + [0.6, 0.8], truth, CHEST) == pytest.approx(np.full((1, 6), 1.0))


def test_summary_mre_std_and_sdr():
    summary = summarize(np.array([[1.0, 2.0], [3.0, 4.0]]), (2.0, 2.5, 4.0))
    assert summary["MRE"] == 2.5 and summary["STD"] == pytest.approx(math.sqrt(1.25))
    assert summary["SDR"] == {"2.0": 0.5, "2.5": 0.5, "4.0": 1.0}
    assert summarize(np.zeros((0, 6)), (2.0,))["MRE"] is None


class _Oracle(Backend):
    """A backend whose heatmaps are the training targets shifted by ``shift`` grid pixels: errors are known."""

    name = "oracle"

    def __init__(self, anatomy, labels, shift=(0, 0)):
        super().__init__(anatomy, "subpixel")
        self.labels, self.shift, self.seen = labels, torch.tensor(shift), 0

    def run(self, pixels, *, return_heatmaps=False):
        labels = self.labels[self.seen : self.seen + len(pixels)] + self.shift
        self.seen += len(pixels)
        heatmaps = render_heatmaps(labels, self.anatomy.grid_hw)
        xy, confidence = decode_heatmaps(heatmaps, self.decode)
        return Prediction(xy.numpy(), confidence.numpy(), heatmaps.numpy() if return_heatmaps else None)


def test_evaluate_split_with_known_predictions(tmp_path):
    data = make_chest_root(tmp_path / "data", 3, size=64)
    split = load_split(data, CHEST, "train")
    labels = torch.from_numpy(np.stack([grid_label(s, CHEST) for s in split.samples]))
    exact = evaluate_split(_Oracle(CHEST, labels), split, CHEST, batch_size=2, progress=False)
    report = exact.report()
    assert report["images"] == 3 and report["reference"]["MRE"] == 0.0 and report["reference"]["SDR"]["2.0"] == 1.0
    # A perfect model of the reference labels g = round(8 p) (64 -> 512 px) lands, mapped back with pixel-centre
    # geometry, at (g + 0.5) / 8 - 0.5: the reference convention's bias shows in the original protocol.
    truth = np.stack([s.landmarks for s in split.samples])
    back = np.round(truth * 8) / 8 + 1 / 16 - 1 / 2
    assert report["original"]["MRE"] == pytest.approx(np.hypot(*(back - truth).transpose(2, 0, 1)).mean())
    shifted = evaluate_split(_Oracle(CHEST, labels, (3, 4)), split, CHEST, batch_size=2, progress=False)
    assert shifted.report()["reference"]["MRE"] == pytest.approx(5.0)
    assert [p["MRE"] for p in shifted.report()["reference"]["per_landmark"]] == pytest.approx([5.0] * 6)
    written = write_overlays(shifted, tmp_path / "overlays", worst=2)
    assert len(written) == 2 and all(p.stat().st_size > 0 for p in written)


def test_skipped_samples_are_carried_into_the_report():
    split = SplitData("chest", "test", samples=[], skipped=["labels/x.txt: label file missing"])
    result = evaluate_split(_Oracle(CHEST, torch.zeros(0, 6, 2)), split, CHEST, progress=False).report()
    assert result["images"] == 0 and result["failures"] == ["labels/x.txt: label file missing"]
    assert result["reference"]["MRE"] is None


def test_evaluation_keeps_the_sessions_finished_results(tmp_path, chest_only_weights):
    """evaluate runs the session infer runs: its results are infer's for the same files, flags included, while its
    errors come from the backend's unrounded output, not from the results' rounded fields."""
    split = load_split(make_chest_root(tmp_path / "data", 3, size=64), CHEST, "train")
    backend = TorchBackend(load_weights(chest_only_weights, "chest")[0], CHEST)
    evaluation = evaluate_split(backend, split, CHEST, batch_size=3, progress=False)
    inferred = list(run_inference([s.image for s in split.samples], CHEST, backend, batch_size=3))
    assert [r.to_dict() for r in evaluation.results] == [r.to_dict() for r in inferred]
    assert all(r.flags for r in evaluation.results)  # a random network's weak peaks
    raw = backend.run(np.stack([read_grid_pixels(s.image, CHEST.grid) for s in split.samples]), return_heatmaps=True)
    np.testing.assert_array_equal(np.stack(evaluation.pred_grid_subpixel), raw.xy)
    argmax, _ = decode_heatmaps(torch.from_numpy(raw.heatmaps), "argmax")
    np.testing.assert_array_equal(np.stack(evaluation.pred_grid_argmax), argmax.numpy())


def test_packed_samples_are_reported_in_their_originals_frame(tmp_path, chest_only_weights):
    """A packed sample is read from its grid-sized copy; its result maps back to the original's pixels."""
    raw = make_chest_root(tmp_path / "raw", 3, size=64)
    pack(raw, tmp_path / "packed", [CHEST])
    split = load_split(tmp_path / "packed", CHEST, "train")
    backend = TorchBackend(load_weights(chest_only_weights, "chest")[0], CHEST)
    evaluation = evaluate_split(backend, split, CHEST, batch_size=2, progress=False)
    assert [(r.width, r.height) for r in evaluation.results] == [(64, 64)] * 3
    original = [lm.x for lm in evaluation.results[0].landmarks]
    grid = np.array([lm.grid_x for lm in evaluation.results[0].landmarks])
    np.testing.assert_allclose(original, (grid + 0.5) * 64 / 512 - 0.5, atol=2e-3)


def test_an_unreadable_image_is_a_failure_line_and_the_others_are_scored(tmp_path, chest_only_weights):
    split = load_split(make_chest_root(tmp_path / "data", 3, size=64), CHEST, "train")
    split.samples[1].image.write_bytes(b"not an image")
    backend = TorchBackend(load_weights(chest_only_weights, "chest")[0], CHEST)
    evaluation = evaluate_split(backend, split, CHEST, batch_size=2, progress=False)
    kept = [split.samples[0], split.samples[2]]
    assert [s.id for s in evaluation.samples] == [s.id for s in kept] and [r.path for r in evaluation.results] == [str(s.image) for s in kept]
    assert len(evaluation.failures) == 1 and split.samples[1].image.name in evaluation.failures[0]
    assert evaluation.report()["images"] == 2
