"""Model selection that sees framing: MRE on the validation images as they are and under framing changes.

The validation loss (BCE summed over heatmap pixels) measures how well the targets are fitted on the framing of
the training images, and says nothing about another device's framing, where the shipped weights break (zoom
0.8: 25 mm on the head, ``benchmarks/results/robustness.md``). So a validation here runs the model being
trained through the evaluation path (:class:`~landmark_edge.runtime.eager.TorchBackend` in an inference session,
original protocol, sub-pixel decoding: what a user gets) on every validation image as it is and on the first
few under fixed framing changes (:mod:`landmark_edge.evaluation.shifts`), and scores each anatomy by its mean
MRE over those conditions divided by the paper's figure for it, so anatomies in mm and in px weigh alike.
"""

from __future__ import annotations

import math

import torch

from landmark_edge.anatomy import Anatomy
from landmark_edge.data import SplitData
from landmark_edge.decode import DecodeMethod
from landmark_edge.evaluation import SHIFTS, Shift, evaluate_shift
from landmark_edge.runtime.eager import TorchBackend

UNSHIFTED = Shift("none")
SELECTION_SHIFTS = ("zoom-0.8", "crop-top-1.4")  # the framings of the other clinic's images the issue names


def named_shift(name: str) -> Shift:
    """The framing change called ``name`` among ``evaluate --shift``'s conditions."""
    known = {shift.name: shift for family in SHIFTS.values() for shift in family}
    if name not in known:
        raise ValueError(f"unknown shift '{name}': choose from {', '.join(known)}")
    return known[name]


def framing_mre(
    model: torch.nn.Module, split: SplitData, anatomy: Anatomy, shifts: list[str], shifted_images: int | None,
    device: torch.device, batch_size: int, workers: int,
) -> dict[str, float | None]:  # fmt: skip
    """MRE (original protocol, the anatomy's unit) of ``model`` per condition: ``none`` on every image of
    ``split``, each shift on its first ``shifted_images`` (all when None). Leaves ``model`` in eval mode."""
    backend = TorchBackend(model, anatomy, DecodeMethod.SUBPIXEL, device)
    few = SplitData(split.anatomy, split.split, split.samples[:shifted_images], [])
    conditions = [(UNSHIFTED, split)] + [(named_shift(name), few) for name in shifts]
    return {
        shift.name: evaluate_shift(backend, samples, anatomy, shift, batch_size, workers, progress=False)["MRE"]
        for shift, samples in conditions
    }


def framing_score(mre: dict[str, dict[str, float | None]], anatomies: dict[str, Anatomy]) -> float:
    """Mean over anatomies of the mean MRE over conditions relative to the paper's figure (lower is better;
    ``inf`` when nothing was measured). An anatomy without a paper figure counts in its own unit."""
    scores = []
    for name, conditions in mre.items():
        values = [value for value in conditions.values() if value is not None]
        if values:
            scores.append(sum(values) / len(values) / (anatomies[name].paper_mre or 1.0))
    return sum(scores) / len(scores) if scores else math.inf
