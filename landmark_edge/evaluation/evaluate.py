"""Evaluate any backend on a dataset split under both protocols (see :mod:`landmark_edge.evaluation.metrics`).

The split runs through the :class:`~landmark_edge.runtime.pipeline.InferenceSession` that ``infer`` uses, each
sample read through its ``view`` (:class:`SampleReader`), so ONNX Runtime or TensorRT engines are evaluated by
the very code that evaluates eager PyTorch, and each image's finished result (flags included) is kept with its
errors. The errors come from the backend's own unrounded output: its sub-pixel landmarks (the deployed path),
and the reference protocol's integer argmax decoded from the heatmaps it returns with the same
:func:`~landmark_edge.decode.decode_heatmaps`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from landmark_edge.anatomy import Anatomy
from landmark_edge.data import GridDataset, Sample, SplitData, grid_label, read_framed
from landmark_edge.decode import decode_heatmaps
from landmark_edge.errors import LandmarkEdgeError
from landmark_edge.evaluation.metrics import original_errors, per_landmark, reference_errors, summarize
from landmark_edge.io.atomic import atomic_path
from landmark_edge.io.xray import ImageHeader, XrayImage
from landmark_edge.results import ImageFailure, ImageResult
from landmark_edge.runtime.backend import Backend
from landmark_edge.runtime.pipeline import Inference, InferenceSession, Prepared
from landmark_edge.transforms import grid_pixels, grid_to_original, original_to_grid

PROTOCOLS = {
    "reference": "argmax on the resized grid vs the rounded grid labels; head x0.46875 mm/px, hand 50 mm wrist "
    "width on the grid, chest grid px (reference evaluation.py)",
    "original": "sub-pixel decoding mapped to original pixels vs the float annotations; head 0.1 mm/px per axis, "
    "hand 50 mm wrist width in original px, chest px of the stored 512x512 image",
}


class SampleReader:
    """Dataset samples for an :class:`InferenceSession`: the stored image through the sample's ``view`` (an
    evaluation shift), reported in the sample's original frame with its spacing (the annotations' geometry)."""

    def name(self, sample: Sample) -> str:
        return str(sample.image)

    def read(self, sample: Sample, anatomy: Anatomy) -> Prepared:
        image = read_framed(sample)
        source = None if sample.spacing_mm is None else "dataset"
        return Prepared(
            image=XrayImage(sample.image, image, sample.spacing_mm, source),
            pixels=grid_pixels(image, anatomy.grid),
            header=ImageHeader(sample.image, sample.original_size, sample.spacing_mm, source),
        )


@dataclass
class AnatomyEvaluation:
    """One anatomy's predictions and errors on a split, with each image's finished result (flags included)."""

    anatomy: Anatomy
    samples: list[Sample] = field(default_factory=list)
    pred_grid_argmax: list[np.ndarray] = field(default_factory=list)
    pred_grid_subpixel: list[np.ndarray] = field(default_factory=list)
    results: list[ImageResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, sample: Sample, inference: Inference) -> None:
        """One image's output: the reference protocol's argmax decoded from its heatmaps, the sub-pixel landmarks
        as the backend gave them (unrounded)."""
        argmax_xy, _ = decode_heatmaps(torch.from_numpy(inference.heatmaps[None]), "argmax")
        self.samples.append(sample)
        self.pred_grid_argmax.append(argmax_xy[0].numpy())
        self.pred_grid_subpixel.append(inference.grid_xy)
        self.results.append(inference.result)

    def errors(self) -> dict[str, np.ndarray]:
        if not self.samples:
            empty = np.zeros((0, self.anatomy.num_landmarks))
            return {"reference": empty, "original": empty}
        # The reference takes the argmax of the rendered target: a label just off the grid lands on its border.
        last = np.asarray(self.anatomy.grid) - 1
        truth_grid = np.clip(np.stack([grid_label(s, self.anatomy) for s in self.samples]), 0, last)
        truth = np.stack([s.landmarks for s in self.samples])
        pred = np.stack([grid_to_original(xy, s.original_size, self.anatomy.grid)
                         for xy, s in zip(self.pred_grid_subpixel, self.samples)])
        spacing = None
        if all(s.spacing_mm is not None for s in self.samples):
            spacing = np.asarray([s.spacing_mm for s in self.samples], dtype=np.float64)
        return {
            "reference": reference_errors(np.stack(self.pred_grid_argmax), truth_grid, self.anatomy),
            "original": original_errors(pred, truth, self.anatomy, spacing),
        }

    def report(self) -> dict:
        errors = self.errors()
        result = {"images": len(self.samples), "failures": self.failures}
        for protocol, values in errors.items():
            result[protocol] = {
                "description": PROTOCOLS[protocol],
                "unit": self.anatomy.unit,
                **summarize(values, self.anatomy.sdr_thresholds),
                "per_landmark": per_landmark(values, self.anatomy),
            }
        result["per_image"] = [
            {"id": s.id, "reference_mre": float(errors["reference"][i].mean()),
             "original_mre": float(errors["original"][i].mean())}
            for i, s in enumerate(self.samples)
        ]  # fmt: skip
        return result


def evaluate_split(
    backend: Backend, split: SplitData, anatomy: Anatomy, batch_size: int = 8, workers: int = 2,
    progress: bool = True,
) -> AnatomyEvaluation:  # fmt: skip
    """Run ``backend`` (sub-pixel decode, heatmaps kept) over every readable image of ``split``, in an
    :class:`InferenceSession` like any other caller's."""
    session = InferenceSession(anatomy, backend, batch_size=batch_size, workers=workers, keep_heatmaps=True)
    result = AnatomyEvaluation(anatomy, failures=list(split.skipped))
    outcomes: Iterable[Inference | ImageFailure] = session.run(split.samples, SampleReader())
    if progress:
        outcomes = track(outcomes, total=len(split.samples), description=f"evaluate {anatomy.name}", transient=True)
    for sample, outcome in zip(split.samples, outcomes, strict=True):
        if isinstance(outcome, ImageFailure):
            result.failures.append(outcome.error)
        elif outcome.heatmaps is None:
            raise LandmarkEdgeError(f"backend {backend.name} gives no heatmaps; the reference protocol needs them")
        else:
            result.add(sample, outcome)
    return result


def write_overlays(evaluation: AnatomyEvaluation, out_dir: Path, worst: int = 5) -> list[Path]:
    """PNG of the ``worst`` images (original-protocol MRE): the grid image, truth green, prediction red."""
    from PIL import Image, ImageDraw

    errors = evaluation.errors()["original"]
    if not len(errors):
        return []
    order = np.argsort(-errors.mean(axis=1))[:worst]
    dataset = GridDataset(evaluation.samples, evaluation.anatomy)
    written = []
    for rank, index in enumerate(order, start=1):
        sample = evaluation.samples[index]
        pixels, _ = dataset[int(index)]
        image = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("RGB").resize(
            (pixels.shape[1] * 2, pixels.shape[0] * 2))
        draw = ImageDraw.Draw(image)
        truth = original_to_grid(sample.landmarks, sample.original_size, evaluation.anatomy.grid)
        for number, (t, p) in enumerate(zip(truth * 2 + 0.5, evaluation.pred_grid_subpixel[index] * 2 + 0.5), start=1):
            draw.line([tuple(t), tuple(p)], fill=(255, 255, 0), width=1)
            draw.ellipse([t[0] - 4, t[1] - 4, t[0] + 4, t[1] + 4], outline=(0, 255, 0), width=2)
            draw.ellipse([p[0] - 4, p[1] - 4, p[0] + 4, p[1] + 4], outline=(255, 0, 0), width=2)
            draw.text((t[0] + 6, t[1] - 6), str(number), fill=(0, 255, 0))
        mre = errors[index].mean()
        draw.text((8, 8), f"{evaluation.anatomy.name} {sample.id}  MRE {mre:.2f} {evaluation.anatomy.unit} "
                          "(green truth, red prediction)", fill=(255, 255, 0))
        path = Path(out_dir) / f"{evaluation.anatomy.name}_{rank:02d}_{sample.id}.png"
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        written.append(path)
    return written
