"""Fitting the flag rule's thresholds (:mod:`landmark_edge.plausibility`) on measured results of trained weights.

The rule is not written again here: each image's :class:`~landmark_edge.plausibility.Evidence` (image size, peaks,
layout fit) is measured once, kept as arrays (:class:`EvidenceSet`, storable in an ``.npz``), and every rate is
:func:`~landmark_edge.plausibility.rule_flags` replayed on it under the candidate thresholds, geometry check
included, so a rate here is the rate ``infer`` would show.

What is fitted, on images the network was not trained on (its peaks on training images are far higher, so
minimums fitted there would flag too many new images):

* per landmark, a minimum peak: its median peak times one factor chosen so that ``budget`` of the images get a
  confidence flag (:func:`confidence_thresholds`);
* the layout limit: the ``1 - budget`` quantile of the residuals, never below the label rule (the limit
  :func:`~landmark_edge.plausibility.fit_layout` sets from the labels, which fit themselves better than new
  images will).

:func:`store_thresholds` writes them into ``layouts.json``, where ``infer`` reads them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landmark_edge.anatomy import Anatomy
from landmark_edge.io.atomic import atomic_write_text
from landmark_edge.plausibility import CHECKS, LAYOUTS_FILE, Evidence, rule_flags

CALIBRATED_FIELDS = ("threshold", "min_confidence", "calibrated")  # what store_thresholds writes per anatomy
FIELDS = ("size", "confidence", "residual", "determinant")  # the arrays of an EvidenceSet
DECIMALS = 4  # stored thresholds are rounded towards fewer flags, so the stored values flag what was fitted
BEFORE_MIN_CONFIDENCE = 0.1  # the uncalibrated minimum peak the report compares with (plausibility's default)


@dataclass(frozen=True)
class Thresholds:
    """The rule's fitted thresholds for one anatomy."""

    min_confidence: tuple[float, ...]
    max_residual: float


@dataclass(frozen=True)
class EvidenceSet:
    """The evidence of N results of one anatomy, as arrays: ``size`` (N, 2) W x H, ``confidence`` (N, C),
    ``residual`` and ``determinant`` (N,) against the anatomy's typical layout."""

    size: np.ndarray
    confidence: np.ndarray
    residual: np.ndarray
    determinant: np.ndarray

    @classmethod
    def of(cls, found: Iterable[Evidence]) -> EvidenceSet:
        rows = list(found)
        if any(row.fit is None for row in rows):
            raise ValueError("thresholds are fitted only for an anatomy with a typical layout")
        return cls(
            size=np.array([(row.width, row.height) for row in rows], dtype=np.int64).reshape(-1, 2),
            confidence=np.array([row.confidence for row in rows], dtype=np.float64),
            residual=np.array([row.fit[0] for row in rows], dtype=np.float64),
            determinant=np.array([row.fit[1] for row in rows], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.residual)

    def __iter__(self) -> Iterator[Evidence]:
        for size, confidence, fit in zip(self.size, self.confidence, zip(self.residual, self.determinant)):
            yield Evidence(int(size[0]), int(size[1]), confidence, (float(fit[0]), float(fit[1])))

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Flat ``{prefix/field: array}`` for ``np.savez``."""
        return {f"{prefix}/{name}": getattr(self, name) for name in FIELDS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> EvidenceSet | None:
        """The set stored under ``prefix``, None where it is not (complete) in ``arrays``."""
        keys = {name: f"{prefix}/{name}" for name in FIELDS}
        if not all(key in arrays for key in keys.values()):
            return None
        return cls(**{name: np.asarray(arrays[key]) for name, key in keys.items()})


def confidence_thresholds(confidence: np.ndarray, budget: float) -> np.ndarray:
    """Per-landmark minimum peaks ``t * median_c`` with one ``t``, so that ``budget`` of the images get a flag.

    Landmarks differ in how sharp their peaks are (gonion is the weakest head landmark), so each is scaled by its
    median peak; an image is flagged when its weakest scaled peak is below ``t``, one score per image. (A
    separate quantile per landmark would, on a few dozen images, sit at each landmark's minimum and flag a new
    image about C / (n + 1) of the time.)
    """
    scale = np.median(confidence, axis=0)
    score = (confidence / scale).min(axis=1)
    return np.quantile(score, budget, method="lower") * scale


def fit_thresholds(own: EvidenceSet, budget: float, label_rule: float) -> Thresholds:
    """The thresholds for an anatomy from its own unseen images: ``budget`` of them flagged by each check at
    most, the layout limit never tighter than ``label_rule``."""
    scale = 10.0**DECIMALS
    min_confidence = np.floor(confidence_thresholds(own.confidence, budget) * scale) / scale
    max_residual = float(np.ceil(max(np.quantile(own.residual, 1 - budget), label_rule) * scale) / scale)
    return Thresholds(tuple(float(value) for value in min_confidence), max_residual)


def flag_counts(cases: EvidenceSet, anatomy: Anatomy, thresholds: Thresholds) -> dict[str, int]:
    """How many of the images each check flags, and any check, replaying the rule under ``thresholds``."""
    counts = dict.fromkeys(CHECKS, 0) | {"any": 0, "images": len(cases)}
    for found in cases:
        flags = rule_flags(found, anatomy, thresholds.min_confidence, thresholds.max_residual)
        for check in CHECKS:
            counts[check] += bool(flags[check])
        counts["any"] += any(flags.values())
    return counts


def calibrate(
    cases: dict[tuple[str, str], EvidenceSet], anatomy: Anatomy, budget: float, label_rule: float
) -> dict[str, object]:
    """Fit on ``cases[(anatomy.name, "calibration")]`` and report every case, keyed ``(source, role)`` (the
    anatomy's own images and other anatomies' run as it): flag counts under the fitted thresholds and under the
    uncalibrated ones (``before``), and the spread of the lowest peak and the residual."""
    fitted = fit_thresholds(cases[(anatomy.name, "calibration")], budget, label_rule)
    before = Thresholds((BEFORE_MIN_CONFIDENCE,) * anatomy.num_landmarks, label_rule)
    return {
        "min_confidence": list(fitted.min_confidence),
        "max_residual": fitted.max_residual,
        "rates": {f"{s}/{r}": flag_counts(c, anatomy, fitted) for (s, r), c in cases.items()},
        "before": {f"{s}/{r}": flag_counts(c, anatomy, before) for (s, r), c in cases.items()},
        "distribution": {f"{s}/{r}": spread(c) for (s, r), c in cases.items()},
    }


def spread(cases: EvidenceSet) -> dict[str, object]:
    """Quantiles 5 / 50 / 95 % of the lowest peak per image and of the layout residual; mirrored layouts."""
    return {
        "min_peak_q05_q50_q95": np.quantile(cases.confidence.min(axis=1), [0.05, 0.5, 0.95]).round(3).tolist(),
        "residual_q05_q50_q95": np.quantile(cases.residual, [0.05, 0.5, 0.95]).round(3).tolist(),
        "mirrored": int((cases.determinant < 0).sum()),
    }


def store_thresholds(fitted: dict[str, Thresholds], note: str, path: Path = LAYOUTS_FILE) -> None:
    """Write each anatomy's thresholds, and ``note`` saying where they come from, into the layouts file
    (atomically: ``infer`` may be reading it)."""
    document = json.loads(path.read_text())
    for name, thresholds in fitted.items():
        stored = (thresholds.max_residual, list(thresholds.min_confidence), note)
        document["anatomies"][name] |= dict(zip(CALIBRATED_FIELDS, stored, strict=True))
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")
