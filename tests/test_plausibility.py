"""Low-confidence flags: weak peaks, and landmark layouts unlike the anatomy's training labels."""

import json
import runpy

import numpy as np
import pytest
from conftest import DATA, REPO, require

from landmark_edge.anatomy import get_anatomy
from landmark_edge.plausibility import (
    DEFAULT_MIN_CONFIDENCE,
    LAYOUTS_FILE,
    confidence_flags,
    layout_flags,
    min_confidences,
    typical_layouts,
)

rng = np.random.default_rng(7)


def pictured(mean: np.ndarray, noise: float = 0.0) -> np.ndarray:
    """The typical layout as it might appear in a 2000 x 2400 px film: rotated, anisotropically scaled, moved."""
    angle = np.deg2rad(8)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = mean @ rotation.T * [600, 700] + [1000, 1200]
    return points + rng.normal(0, noise, points.shape)


@pytest.mark.parametrize("name", ["head", "hand", "chest"])
def test_layout_check_passes_the_typical_layout_and_catches_gross_errors(name):
    anatomy = get_anatomy(name)
    good = pictured(typical_layouts()[name].mean, noise=5.0)
    assert layout_flags(good, anatomy) == []
    assert "layout unlike a" in layout_flags(rng.uniform(0, 2000, good.shape), anatomy)[0]
    assert "layout unlike a" in layout_flags(np.full(good.shape, 500.0) + rng.normal(0, 1, good.shape), anatomy)[0]
    reordered = good[np.roll(np.arange(len(good)), 1)]  # every landmark given its neighbour's name
    assert "layout unlike a" in layout_flags(reordered, anatomy)[0]
    mirrored = good * [-1, 1] + [3000, 0]
    assert "mirrored" in layout_flags(mirrored, anatomy)[0]


def test_real_labels_pass_and_the_wrong_anatomy_is_caught():
    ceph = require(DATA / "ISBI2015_ceph" / "400_senior")
    head = get_anatomy("head")
    for index in (1, 151, 400):
        labels = np.loadtxt(ceph / f"{index:03d}.txt", delimiter=",", max_rows=19)
        assert layout_flags(labels, head) == []
    hand_rows = np.loadtxt(require(DATA / "hand" / "all.csv"), delimiter=",", max_rows=3)[:, 1:]
    for row in hand_rows:  # a hand's first 19 landmarks read as a head
        assert layout_flags(row.reshape(-1, 2)[:19], head)


def test_shipped_layouts_are_reproduced_from_the_labels():
    require(DATA / "ISBI2015_ceph")
    script = runpy.run_path(str(REPO / "scripts" / "make_layouts.py"))
    rebuilt = script["layouts_document"](DATA)["anatomies"]
    shipped = json.loads(LAYOUTS_FILE.read_text())["anatomies"]
    for name, entry in shipped.items():
        np.testing.assert_allclose(entry["mean"], rebuilt[name]["mean"], atol=1e-4)
        if "calibrated" not in entry:  # calibrated limits come from benchmarks/calibrate_flags.py, not the labels
            assert entry["threshold"] == pytest.approx(rebuilt[name]["threshold"], abs=1e-3)


def test_confidence_flags_name_the_weak_landmarks():
    peaks = [0.9, 0.05, 0.5, 0.01]
    assert confidence_flags(peaks, (0.1,) * 4) == ["2 of 4 landmarks below confidence 0.1 (2, 4)"]
    assert confidence_flags(peaks, (0.01,) * 4) == []
    assert confidence_flags(peaks, (0.95, 0.01, 0.6, 0.01)) == [
        "2 of 4 landmarks below their calibrated minimum peak (1, 3)"
    ]


def test_calibrated_thresholds_are_used_unless_overridden():
    shipped = json.loads(LAYOUTS_FILE.read_text())["anatomies"]
    for name, entry in shipped.items():
        anatomy = get_anatomy(name)
        calibrated = entry.get("min_confidence")
        expected = tuple(calibrated) if calibrated else (DEFAULT_MIN_CONFIDENCE,) * anatomy.num_landmarks
        assert min_confidences(anatomy) == expected
        assert len(expected) == anatomy.num_landmarks
        assert min_confidences(anatomy, 0.5) == (0.5,) * anatomy.num_landmarks
    assert "min_confidence" not in shipped["hand"]  # unfit weights: nothing to calibrate on


def test_an_anatomy_without_a_typical_layout_says_so():
    from landmark_edge.anatomy import Anatomy

    knee = Anatomy(name="knee", num_landmarks=4, grid=(64, 64))
    (flag,) = layout_flags(np.random.default_rng(0).uniform(0, 64, (4, 2)), knee)
    assert flag.startswith("layout not checked: layouts.json has no typical knee layout")
