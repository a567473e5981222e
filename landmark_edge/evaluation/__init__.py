"""Evaluation under the reference protocol (paper numbers) and at original resolution (what users get)."""

from landmark_edge.evaluation.evaluate import PROTOCOLS, AnatomyEvaluation, evaluate_split, write_overlays
from landmark_edge.evaluation.metrics import original_errors, per_landmark, reference_errors, summarize
from landmark_edge.evaluation.shifts import SHIFTS, Shift, evaluate_shift, shifted

__all__ = [
    "PROTOCOLS", "SHIFTS", "AnatomyEvaluation", "Shift", "evaluate_shift", "evaluate_split", "original_errors",
    "per_landmark", "reference_errors", "shifted", "summarize", "write_overlays",
]  # fmt: skip
