"""The flag thresholds' fitting: known answers on synthetic evidence, the rule replayed exactly as ``infer`` runs it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from landmark_edge.anatomy import get_anatomy
from landmark_edge.flag_thresholds import (
    EvidenceSet,
    Thresholds,
    calibrate,
    confidence_thresholds,
    fit_thresholds,
    flag_counts,
    store_thresholds,
)
from landmark_edge.plausibility import (
    LAYOUTS_FILE,
    Evidence,
    flag_result,
    read_layouts,
    result_evidence,
    rule_flags,
    typical_layouts,
)
from landmark_edge.results import ImageResult, Landmark

CHEST = get_anatomy("chest")  # 6 landmarks, a typical layout in layouts.json
SCALE = np.array([0.8, 0.4, 0.6, 0.2, 0.5, 0.3])  # each landmark's typical peak: they differ, as real ones do
PLAUSIBLE = (1024, 1024)  # a chest film's size: no geometry flag


def synthetic(count: int = 100, size: tuple[int, int] = PLAUSIBLE) -> tuple[EvidenceSet, np.ndarray]:
    """``count`` images whose peaks are each landmark's typical peak times one factor per image (a known order),
    with residuals 0, 0.01, ... and no mirrored layout."""
    factor = np.linspace(0.5, 1.5, count)
    cases = EvidenceSet(
        size=np.tile(size, (count, 1)),
        confidence=factor[:, None] * SCALE,
        residual=np.arange(count) / count,
        determinant=np.ones(count),
    )
    return cases, factor


def test_confidence_thresholds_flag_the_budget_and_scale_per_landmark():
    cases, factor = synthetic()
    thresholds = confidence_thresholds(cases.confidence, budget=0.02)
    # every image's score is factor / median(factor); the 2 % "lower" quantile of 100 is the second smallest
    np.testing.assert_allclose(thresholds, factor[1] * SCALE)
    assert int((cases.confidence < thresholds).any(axis=1).sum()) == 1  # only the weakest image: within 2 %


def test_fit_rounds_towards_fewer_flags_and_keeps_the_label_rule():
    cases, factor = synthetic()
    fitted = fit_thresholds(cases, budget=0.02, label_rule=0.5)
    np.testing.assert_allclose(fitted.min_confidence, np.floor(factor[1] * SCALE * 1e4) / 1e4)
    assert fitted.max_residual == 0.9702  # the 98 % quantile of 0, 0.01 .. 0.99, rounded up
    assert fit_thresholds(cases, budget=0.02, label_rule=1.25).max_residual == 1.25  # never below the label rule


def test_counts_replay_the_rule_with_every_check():
    cases, _ = synthetic()
    strip, _ = synthetic(count=4, size=(2048, 64))  # far outside the chest films' shape
    loose = Thresholds((0.0,) * 6, 10.0)
    assert flag_counts(cases, CHEST, loose) == {"geometry": 0, "confidence": 0, "layout": 0, "any": 0, "images": 100}
    assert flag_counts(strip, CHEST, loose)["geometry"] == flag_counts(strip, CHEST, loose)["any"] == 4
    tight = Thresholds(tuple(0.5 * SCALE), 0.895)  # peaks under half the typical: factor < 0.5 none; residual > 0.895
    counts = flag_counts(cases, CHEST, tight)
    assert counts["confidence"] == 0 and counts["layout"] == 10 and counts["any"] == 10
    mirrored = EvidenceSet(cases.size, cases.confidence, cases.residual * 0, -cases.determinant)
    assert flag_counts(mirrored, CHEST, loose)["layout"] == 100


def test_calibrate_reports_the_own_budget_and_the_wrong_anatomy():
    own, _ = synthetic()
    wrong = EvidenceSet(own.size, own.confidence * 1e-3, own.residual + 1.0, own.determinant)
    report = calibrate({("chest", "calibration"): own, ("head", "test"): wrong}, CHEST, 0.02, label_rule=0.5)
    # each check flags at most its 2 %: the weakest image by its peaks, the two widest residuals by the layout
    assert report["rates"]["chest/calibration"] == {"geometry": 0, "confidence": 1, "layout": 2, "any": 3,
                                                    "images": 100}  # fmt: skip
    assert report["rates"]["head/test"] == {"geometry": 0, "confidence": 100, "layout": 100, "any": 100,
                                            "images": 100}  # fmt: skip
    assert report["before"]["chest/calibration"]["confidence"] == 0  # 0.1 is under every synthetic peak
    assert report["distribution"]["head/test"]["mirrored"] == 0


def test_flag_result_is_the_rule_on_its_evidence():
    """``infer``'s flags are exactly the replayed rule under the stored thresholds: one rule, two callers."""
    layout = typical_layouts()["chest"]
    rng = np.random.default_rng(3)
    for size, spread in (((1024, 1024), 0.0), ((2048, 64), 0.0), ((1024, 1024), 400.0)):
        points = layout.mean * 300 + 512 + rng.normal(0, 1 + spread, layout.mean.shape)
        peaks = rng.uniform(0, 0.01, 6)
        landmarks = [Landmark(i + 1, f"L{i + 1}", x, y, None, None, float(c), 0, 0)
                     for i, ((x, y), c) in enumerate(zip(points, peaks))]  # fmt: skip
        result = ImageResult("x.png", "chest", *size, None, "none", "subpixel", landmarks)
        found = result_evidence(result, CHEST)
        replayed = rule_flags(found, CHEST, layout.min_confidence or (0.1,) * 6, layout.threshold)
        assert flag_result(result, CHEST) == [flag for flags in replayed.values() for flag in flags]
        counted = flag_counts(EvidenceSet.of([found]), CHEST, Thresholds(layout.min_confidence, layout.threshold))
        assert counted["any"] == int(bool(flag_result(result, CHEST)))


def test_evidence_round_trips_through_arrays():
    cases, _ = synthetic(count=5)
    stored = cases.arrays("chest/chest/calibration")
    back = EvidenceSet.from_arrays(stored, "chest/chest/calibration")
    assert all(np.array_equal(getattr(back, f), getattr(cases, f)) for f in ("size", "confidence", "residual"))
    assert EvidenceSet.from_arrays({k: v for k, v in stored.items() if not k.endswith("/size")},
                                   "chest/chest/calibration") is None  # an old cache without sizes: measured again
    assert isinstance(next(iter(back)), Evidence)
    with pytest.raises(ValueError, match="typical layout"):
        EvidenceSet.of([Evidence(10, 10, np.ones(4), None)])


def test_store_thresholds_writes_what_infer_reads(tmp_path):
    target = tmp_path / "layouts.json"
    shutil.copy(LAYOUTS_FILE, target)
    store_thresholds({"chest": Thresholds((0.01, 0.02, 0.03, 0.04, 0.05, 0.06), 0.3)}, "synthetic test", target)
    layouts = read_layouts(target)
    assert layouts["chest"].threshold == 0.3 and layouts["chest"].min_confidence == (0.01, 0.02, 0.03, 0.04, 0.05, 0.06)
    document = json.loads(target.read_text())
    assert document["anatomies"]["chest"]["calibrated"] == "synthetic test"
    assert document["anatomies"]["head"] == json.loads(LAYOUTS_FILE.read_text())["anatomies"]["head"]  # untouched
