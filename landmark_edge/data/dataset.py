"""Samples as network-ready arrays: grid pixels (uint8, the backends' input) and the reference's grid labels.

Normalisation and heatmap rendering are left to the device (``zscore_batch``, :func:`render_heatmaps`), so a
batch crossing to a GPU is a few hundred KiB of bytes and integers rather than tens of MiB of floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from landmark_edge.anatomy import Anatomy
from landmark_edge.data.sources import Sample
from landmark_edge.errors import InputError
from landmark_edge.transforms import read_grid_pixels, reference_grid_label


def grid_label(sample: Sample, anatomy: Anatomy) -> np.ndarray:
    """The reference's integer training label on the grid, (C, 2) int64 (x, y)."""
    return reference_grid_label(sample.landmarks, sample.original_size, anatomy.grid)


@dataclass
class Batch:
    anatomy: str
    pixels: torch.Tensor  # (B, H, W) uint8 grid pixels
    labels: torch.Tensor  # (B, C, 2) int64 grid labels
    ids: list[str]
    failures: list[str] = field(default_factory=list)  # one line per image that could not be read


class GridDataset(torch.utils.data.Dataset):
    """One anatomy's samples; ``batch(indices)`` reads a batch, dropping (and naming) unreadable images."""

    def __init__(self, samples: list[Sample], anatomy: Anatomy) -> None:
        self.samples = samples
        self.anatomy = anatomy

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.samples[index]
        return read_grid_pixels(sample.image, self.anatomy.grid), grid_label(sample, self.anatomy)

    def batch(self, indices: list[int]) -> Batch:
        pixels, labels, ids, failures = [], [], [], []
        for index in indices:
            try:
                image, label = self[index]
            except InputError as error:
                failures.append(str(error))
                continue
            pixels.append(torch.from_numpy(np.array(image)))  # a writable copy
            labels.append(torch.from_numpy(label))
            ids.append(self.samples[index].id)
        height, width = self.anatomy.grid_hw
        count = self.anatomy.num_landmarks
        return Batch(
            anatomy=self.anatomy.name,
            pixels=torch.stack(pixels) if pixels else torch.zeros(0, height, width, dtype=torch.uint8),
            labels=torch.stack(labels) if labels else torch.zeros(0, count, 2, dtype=torch.int64),
            ids=ids,
            failures=failures,
        )
