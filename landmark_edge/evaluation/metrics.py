"""Landmark errors and their summaries under two protocols, driven by each anatomy's spacing rule.

*reference* (reference §9, the paper's numbers): integer argmax predictions against the rounded grid labels, on
the resized grid; head distances times the single 0.46875 mm/px factor on both axes, hand distances times
50 mm / |L1 - L5| measured on the (anisotropically) resized grid per image, chest in grid pixels.

*original* (what a user of the model gets): sub-pixel predictions mapped back to the original image against
the original float annotations; head with the true per-axis spacing (0.1 mm/px), hand with the same 50 mm wrist
width but measured in original pixels (isotropic, as Payer et al. define it), chest in pixels of the stored
512 x 512 image (the Shenzhen originals' aspect and spacing are not available).
"""

from __future__ import annotations

import numpy as np

from landmark_edge.anatomy import Anatomy, SpacingRule


def radial(pred: np.ndarray, truth: np.ndarray, scale_xy: np.ndarray) -> np.ndarray:
    """Euclidean distances of (N, C, 2) points after scaling each axis by (N, 2) factors -> (N, C)."""
    delta = (np.asarray(pred, np.float64) - np.asarray(truth, np.float64)) * np.asarray(scale_xy)[:, None, :]
    return np.sqrt((delta**2).sum(axis=-1))


def _wrist_factor(truth: np.ndarray, anatomy: Anatomy) -> np.ndarray:
    """mm per pixel per image, taking the two wrist landmarks of ``truth`` (N, C, 2) to be ``wrist_width_mm`` apart."""
    first, second = anatomy.wrist_landmarks
    width_px = np.linalg.norm(truth[:, first] - truth[:, second], axis=-1)
    factor = anatomy.wrist_width_mm / width_px
    return np.stack([factor, factor], axis=-1)


def reference_errors(pred_grid: np.ndarray, truth_grid: np.ndarray, anatomy: Anatomy) -> np.ndarray:
    """Reference-protocol errors (N, C) in the anatomy's unit, from integer grid points."""
    count = len(pred_grid)
    if anatomy.spacing_rule is SpacingRule.FIXED:
        scale = np.full((count, 2), anatomy.reference_mm_per_grid_px)
    elif anatomy.spacing_rule is SpacingRule.WRIST_WIDTH:
        scale = _wrist_factor(np.asarray(truth_grid, np.float64), anatomy)
    else:
        scale = np.ones((count, 2))
    return radial(pred_grid, truth_grid, scale)


def original_errors(
    pred: np.ndarray, truth: np.ndarray, anatomy: Anatomy, spacing_mm: np.ndarray | None = None
) -> np.ndarray:
    """Original-resolution errors (N, C): mm where a spacing is known, else pixels.

    ``spacing_mm`` is (N, 2) per-image (x, y) spacing for FIXED anatomies (default: the anatomy's).
    """
    count = len(pred)
    if anatomy.spacing_rule is SpacingRule.FIXED:
        scale = np.broadcast_to(anatomy.default_spacing_mm if spacing_mm is None else spacing_mm, (count, 2))
    elif anatomy.spacing_rule is SpacingRule.WRIST_WIDTH:
        scale = _wrist_factor(np.asarray(truth, np.float64), anatomy)
    else:
        scale = np.ones((count, 2))
    return radial(pred, truth, scale)


def summarize(errors: np.ndarray, thresholds: tuple[float, ...]) -> dict:
    """MRE, STD (population, as ``np.std``) and SDR (fraction with error <= t) of all (N, C) errors pooled."""
    flat = np.asarray(errors, np.float64).ravel()
    if flat.size == 0:
        return {"MRE": None, "STD": None, "SDR": {str(t): None for t in thresholds}}
    return {
        "MRE": float(flat.mean()),
        "STD": float(flat.std()),
        "SDR": {str(t): float((flat <= t).mean()) for t in thresholds},
    }


def per_landmark(errors: np.ndarray, anatomy: Anatomy) -> list[dict]:
    """The summary of each landmark's column of (N, C) errors."""
    return [
        {"index": c + 1, "name": anatomy.landmark_name(c), **summarize(errors[:, c], anatomy.sdr_thresholds)}
        for c in range(errors.shape[1])
    ]
