"""Low-confidence flags: weak heatmap peaks, and a landmark layout unlike the anatomy's.

The layout check compares the detected points with the anatomy's *typical layout* (the mean of its training
labels, ``layouts.json``) after the best affine map from the detections onto it, so position, size, aspect
ratio, rotation and shear do not matter and only the *arrangement* does. The residual is reported as a fraction
of the typical layout's spread: 0 for a perfect fit, about 0.8-0.95 for points scattered at random. What it
catches: landmarks in the wrong order or scattered (a wrong ``--anatomy``, a photo or a non-X-ray), all points
collapsed on one spot, and a mirrored layout (a flipped film, a right hand where the training hands are left).
What it does not catch: one or two landmarks a few millimetres off on an otherwise plausible layout.

``layouts.json`` is written by ``scripts/make_layouts.py`` from the label files in the shared data folder. An
anatomy's thresholds there, the layout limit and a minimum peak per landmark, are fitted for trained weights by
:mod:`landmark_edge.flag_thresholds` (run by ``benchmarks/calibrate_flags.py --write``; rates in
``benchmarks/results/flags.md``), which replays :func:`rule_flags`, this rule, on measured :class:`Evidence`; an
anatomy without that calibration keeps the label rule, a fixed multiple of the 99th percentile of the labels' own
residuals, and ``DEFAULT_MIN_CONFIDENCE``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from landmark_edge.anatomy import Anatomy
from landmark_edge.results import ImageResult

LAYOUTS_FILE = Path(__file__).with_name("layouts.json")
# Minimum peak for an anatomy without calibrated per-landmark thresholds (a trained GU2Net, BCE on 0..1 Gaussian
# targets, peaks near 1 on clear landmarks); --min-confidence overrides every threshold.
DEFAULT_MIN_CONFIDENCE = 0.1
THRESHOLD_MARGIN = 2.0  # x the 99th percentile of training-label residuals: room for a model's own error


@dataclass(frozen=True)
class Layout:
    """An anatomy's typical landmark arrangement (C, 2), centred with unit RMS spread, its residual limit and
    the minimum heatmap peak of each landmark (``None``: not calibrated, ``DEFAULT_MIN_CONFIDENCE`` applies)."""

    mean: np.ndarray
    threshold: float
    min_confidence: tuple[float, ...] | None = None


def affine_residual(points: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Fit ``target ~ [points, 1] @ A`` by least squares; return (RMS residual / RMS spread of target, det of A).

    Mapping the detections onto the layout (not the reverse) keeps collapsed detections from fitting trivially.
    """
    design = np.hstack([points, np.ones((len(points), 1))])
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coefficients
    spread = target - target.mean(axis=0)
    ratio = float(np.sqrt((residual**2).sum() / (spread**2).sum()))
    return ratio, float(np.linalg.det(coefficients[:2]))


def fit_layout(shapes: np.ndarray, iterations: int = 10) -> Layout:
    """Generalised affine Procrustes over (N, C, 2) label shapes: their mean arrangement and residual limit."""
    mean = _normalise(shapes[0])
    for _ in range(iterations):
        aligned = [_align(shape, mean) for shape in shapes]
        mean = _normalise(np.mean(aligned, axis=0))
    residuals = [affine_residual(shape, mean)[0] for shape in shapes]
    return Layout(mean=mean, threshold=float(np.quantile(residuals, 0.99) * THRESHOLD_MARGIN))


def _align(shape: np.ndarray, target: np.ndarray) -> np.ndarray:
    design = np.hstack([shape, np.ones((len(shape), 1))])
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    return design @ coefficients


def _normalise(shape: np.ndarray) -> np.ndarray:
    centred = shape - shape.mean(axis=0)
    return centred / np.sqrt((centred**2).sum(axis=1).mean())


@cache
def typical_layouts() -> dict[str, Layout]:
    """The shipped layouts (read once: every result of a run is checked against them)."""
    return read_layouts(LAYOUTS_FILE)


def read_layouts(path: Path) -> dict[str, Layout]:
    data = json.loads(path.read_text())
    return {
        name: Layout(np.asarray(entry["mean"]), entry["threshold"], _tuple_or_none(entry.get("min_confidence")))
        for name, entry in data["anatomies"].items()
    }


def _tuple_or_none(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)


@dataclass(frozen=True)
class Evidence:
    """What the flag rule reads from one result, apart from any threshold: the fitting
    (:mod:`landmark_edge.flag_thresholds`) replays the rule on stored evidence under candidate thresholds, so the
    thresholds are fitted on exactly the checks ``infer`` runs."""

    width: int
    height: int
    confidence: np.ndarray  # (C,) heatmap peaks
    fit: tuple[float, float] | None  # (residual, determinant) against the typical layout; None: the anatomy has none


def evidence(points: np.ndarray, confidence: Sequence[float], size: tuple[int, int], anatomy: Anatomy) -> Evidence:
    """The evidence of (C, 2) detected points (original pixels) with their peaks, in a ``size`` (W, H) image."""
    return Evidence(int(size[0]), int(size[1]), np.asarray(confidence, dtype=np.float64), _layout_fit(points, anatomy))


def result_evidence(result: ImageResult, anatomy: Anatomy) -> Evidence:
    points = np.array([(lm.x, lm.y) for lm in result.landmarks])
    return evidence(points, [lm.confidence for lm in result.landmarks], (result.width, result.height), anatomy)


def rule_flags(
    found: Evidence, anatomy: Anatomy, min_confidence: tuple[float, ...], max_residual: float | None
) -> dict[str, list[str]]:
    """The flag rule, each check's flags by name (geometry, confidence, layout), under the given thresholds
    (``max_residual`` None: the anatomy's typical layout's)."""
    return {
        "geometry": geometry_flags(found.width, found.height, anatomy),
        "confidence": confidence_flags(found.confidence, min_confidence),
        "layout": _layout_verdict(found.fit, anatomy, max_residual),
    }


CHECKS = ("geometry", "confidence", "layout")  # the keys of rule_flags, in the order flags are reported


def layout_flags(points: np.ndarray, anatomy: Anatomy) -> list[str]:
    """Flags for a (C, 2) arrangement of detected points, in original pixels."""
    return _layout_verdict(_layout_fit(points, anatomy), anatomy, None)


def _layout_fit(points: np.ndarray, anatomy: Anatomy) -> tuple[float, float] | None:
    """(residual, determinant) of the points against the anatomy's typical layout; None where it has none."""
    layout = typical_layouts().get(anatomy.name)
    return None if layout is None else affine_residual(np.asarray(points, dtype=np.float64), layout.mean)


def _layout_verdict(fit: tuple[float, float] | None, anatomy: Anatomy, max_residual: float | None) -> list[str]:
    if fit is None:  # say so: an unchecked layout must not read as a plausible one
        return [f"layout not checked: {LAYOUTS_FILE.name} has no typical {anatomy.name} layout "
                "(scripts/make_layouts.py writes it from the labels)"]
    ratio, determinant = fit
    limit = typical_layouts()[anatomy.name].threshold if max_residual is None else max_residual
    if ratio > limit:
        return [
            f"layout unlike a {anatomy.name} X-ray (residual {ratio:.2f} > {limit:.2f}): "
            f"wrong --anatomy, or not a {anatomy.name} radiograph?"
        ]
    if determinant < 0:
        return [f"layout is mirrored relative to the {anatomy.name} training images (flipped image?)"]
    return []


def min_confidences(anatomy: Anatomy, override: float | None = None) -> tuple[float, ...]:
    """Each landmark's minimum peak: ``override`` for all, else the anatomy's calibrated thresholds or the default."""
    if override is None:
        layout = typical_layouts().get(anatomy.name)
        if layout is not None and layout.min_confidence is not None:
            return layout.min_confidence
    return (DEFAULT_MIN_CONFIDENCE if override is None else override,) * anatomy.num_landmarks


def confidence_flags(confidence: Sequence[float], min_confidence: tuple[float, ...]) -> list[str]:
    """One flag naming the landmarks (1-based) whose peak is below their threshold (one per landmark)."""
    weak = [index for index, (peak, limit) in enumerate(zip(confidence, min_confidence, strict=True), 1)
            if peak < limit]  # fmt: skip
    if not weak:
        return []
    listed = ", ".join(str(index) for index in weak[:10]) + (", ..." if len(weak) > 10 else "")
    limits = sorted({f"{limit:g}" for limit in min_confidence})
    below = f"confidence {limits[0]}" if len(limits) == 1 else "their calibrated minimum peak"
    return [f"{len(weak)} of {len(min_confidence)} landmarks below {below} ({listed})"]


def geometry_flags(width: int, height: int, anatomy: Anatomy) -> list[str]:
    """A flag for an image whose shape or size is far outside the anatomy's training images (the registry's
    rule, :meth:`~landmark_edge.anatomy.Anatomy.geometry_problem`): a 2048 x 64 strip is no chest X-ray."""
    problem = anatomy.geometry_problem(width, height)
    return [] if problem is None else [f"implausible image for {anatomy.name}: {problem}"]


def flag_result(result: ImageResult, anatomy: Anatomy, min_confidence: float | None = None) -> list[str]:
    """Everything suspicious about one result, one readable line each (empty when nothing is).

    ``min_confidence`` overrides every landmark's threshold; None uses the calibrated ones (:func:`min_confidences`).
    """
    checks = rule_flags(result_evidence(result, anatomy), anatomy, min_confidences(anatomy, min_confidence), None)
    return [flag for check in CHECKS for flag in checks[check]]
