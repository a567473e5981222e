"""Controlled framing changes of a test split: how far weights hold up outside their training framing.

A device with a tighter field of view (the skull larger in the frame, its top cut off), a patient placed a little
differently, a detector of another size: each *shift* is one deterministic affine map of every test image (about
its centre, in its own pixels), applied to the stored image before the usual preprocessing, with the
annotations moved by the same map (:mod:`landmark_edge.affine`). Errors are measured in the shifted image's
geometry, the one a user of such an image has: its pixels, with its own spacing (the original's divided by the
magnification), so head errors stay anatomical millimetres; hand errors use the 50 mm wrist width measured in the
shifted image (scale-free); chest errors are the shifted image's pixels divided by the magnification, that is
pixels of the unshifted 512 x 512 image, so that conditions compare. Landmarks the shift moves out of the frame
are counted and left out. The *original* protocol only: the reference protocol's fixed factors presuppose the
unshifted grid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from landmark_edge.affine import apply_points, centre, similarity
from landmark_edge.anatomy import Anatomy, SpacingRule
from landmark_edge.data import SplitData
from landmark_edge.evaluation.evaluate import evaluate_split
from landmark_edge.evaluation.metrics import summarize
from landmark_edge.runtime.backend import Backend


@dataclass(frozen=True)
class Shift:
    """One framing change: magnification about the centre (or keeping the bottom edge), then a rotation."""

    name: str
    scale: float = 1.0  # > 1 zooms in: the anatomy fills more of the frame
    angle_deg: float = 0.0  # counter-clockwise as displayed
    keep_bottom: bool = False  # zoom into the bottom of the frame: only the top (and the sides) are cut

    def matrix(self, size: tuple[int, int]) -> np.ndarray | None:
        """The map in pixels of an image of ``size`` (None for the unchanged framing)."""
        if self.scale == 1.0 and self.angle_deg == 0.0:
            return None
        middle = centre(size)
        source = middle.copy()
        if self.keep_bottom:
            source[1] += (size[1] - size[1] / self.scale) / 2
        return similarity(source, middle, (self.scale, self.scale), self.angle_deg)

    @property
    def description(self) -> str:
        parts = []
        if self.scale != 1.0:
            parts.append(f"x{self.scale:g} about the " + ("bottom edge (top cut off)" if self.keep_bottom else "centre"))
        if self.angle_deg:
            parts.append(f"rotated {self.angle_deg:+g} deg")
        return ", ".join(parts) or "unchanged"


SHIFTS: dict[str, tuple[Shift, ...]] = {
    "zoom": (
        Shift("none"),
        Shift("zoom-0.8", 0.8),
        Shift("zoom-0.9", 0.9),
        Shift("zoom-1.1", 1.1),
        Shift("zoom-1.25", 1.25),
        Shift("crop-top-1.25", 1.25, keep_bottom=True),
        Shift("crop-top-1.4", 1.4, keep_bottom=True),
        Shift("rotate-10", angle_deg=-10.0),
        Shift("rotate-5", angle_deg=-5.0),
        Shift("rotate+5", angle_deg=5.0),
        Shift("rotate+10", angle_deg=10.0),
    ),
}


def shifted(split: SplitData, shift: Shift) -> SplitData:
    """The split seen through ``shift``: every sample a moved view of its file, with moved labels and spacing."""
    samples = []
    for sample in split.samples:
        matrix = shift.matrix(sample.original_size)
        if matrix is None:
            samples.append(sample)
            continue
        spacing = None if sample.spacing_mm is None else tuple(s / shift.scale for s in sample.spacing_mm)
        samples.append(dataclasses.replace(sample, landmarks=apply_points(matrix, sample.landmarks),
                                           spacing_mm=spacing, view=matrix))  # fmt: skip
    return SplitData(split.anatomy, split.split, samples, list(split.skipped))


def evaluate_shift(
    backend: Backend, split: SplitData, anatomy: Anatomy, shift: Shift, batch_size: int = 8, workers: int = 2,
    progress: bool = True,
) -> dict:  # fmt: skip
    """Summary, per-landmark and per-image errors of ``backend`` on ``split`` under ``shift``."""
    moved = shifted(split, shift)
    evaluation = evaluate_split(backend, moved, anatomy, batch_size, workers, progress)
    errors = evaluation.errors()["original"]
    if anatomy.spacing_rule is SpacingRule.PIXELS:
        errors = errors / shift.scale  # pixels of the unshifted image
    inside = np.array([_in_frame(s.landmarks, s.original_size) for s in evaluation.samples], dtype=bool)
    inside = inside.reshape(errors.shape)
    return {
        "description": shift.description,
        "images": len(evaluation.samples),
        "failures": evaluation.failures,
        "landmarks_out_of_frame": int((~inside).sum()),
        "unit": anatomy.unit,
        **summarize(errors[inside], anatomy.sdr_thresholds),
        "per_landmark": [
            {"index": c + 1, "name": anatomy.landmark_name(c),
             **summarize(errors[inside[:, c], c], anatomy.sdr_thresholds)}
            for c in range(anatomy.num_landmarks)
        ],
        "per_image": [{"id": s.id, "mre": summarize(errors[i, inside[i]], ())["MRE"]}
                      for i, s in enumerate(evaluation.samples)],
    }


def _in_frame(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C,) whether each point lies on the image (pixel-centre geometry: within half a pixel of the border)."""
    low, high = -0.5, np.asarray(size, dtype=np.float64) - 0.5
    return np.all((points >= low) & (points < high), axis=-1)
