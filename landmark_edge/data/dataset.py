"""Samples as network-ready arrays: grid pixels (uint8, the backends' input) and their grid labels.

Normalisation and heatmap rendering are left to the device (``zscore_batch``, :func:`render_heatmaps`), so a
batch crossing to a GPU is a few hundred KiB of bytes and integers rather than tens of MiB of floats.

Labels are the reference's integers (``round(p * new / old)``) or, for the robust recipe, the exact sub-pixel
grid position (pixel-centre geometry, float32). A sample's ``view`` (an evaluation shift) and a random
:class:`~landmark_edge.data.augment.Augmentation` draw are 3x3 maps; each is re-expressed for the stored image
(the original in the raw layout, the grid copy in a packed one) and applied there before the usual resize, so
the raw and packed layouts see the same framing; an augmentation's map also moves the labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image

from landmark_edge.affine import apply_points, conjugate, warp
from landmark_edge.anatomy import Anatomy
from landmark_edge.data.augment import Augmentation
from landmark_edge.data.sources import Sample
from landmark_edge.errors import InputError
from landmark_edge.io.images import read_image
from landmark_edge.transforms import grid_pixels, original_to_grid, reference_grid_label

LabelKind = Literal["reference", "subpixel"]


def grid_label(sample: Sample, anatomy: Anatomy) -> np.ndarray:
    """The reference's integer training label on the grid, (C, 2) int64 (x, y)."""
    return reference_grid_label(sample.landmarks, sample.original_size, anatomy.grid)


def subpixel_grid_label(sample: Sample, anatomy: Anatomy) -> np.ndarray:
    """The exact grid position of each landmark, (C, 2) float64 (x, y), pixel-centre geometry."""
    return original_to_grid(sample.landmarks, sample.original_size, anatomy.grid)


def read_framed(sample: Sample) -> Image.Image:
    """The sample's stored image, through its ``view`` when it has one (re-expressed for the stored size, so a
    packed grid copy is framed as its original would be); training and evaluation both read samples here."""
    image = read_image(sample.image).image
    if sample.view is not None:
        image = warp(image, conjugate(sample.view, sample.original_size, image.size))
    return image


@dataclass
class Batch:
    anatomy: str
    pixels: torch.Tensor  # (B, H, W) uint8 grid pixels
    labels: torch.Tensor  # (B, C, 2) grid labels: int64 (reference) or float32 (sub-pixel)
    ids: list[str]
    failures: list[str] = field(default_factory=list)  # one line per image that could not be read


class GridDataset(torch.utils.data.Dataset):
    """One anatomy's samples; ``batch(indices)`` reads a batch, dropping (and naming) unreadable images.

    ``labels`` picks the label kind; ``augmentation`` draws a new framing and exposure per read from the
    generator that ``batch`` seeds with its ``key``. A sample with a ``view`` is read through it.
    """

    def __init__(
        self, samples: list[Sample], anatomy: Anatomy, labels: LabelKind = "reference",
        augmentation: Augmentation | None = None,
    ) -> None:  # fmt: skip
        if augmentation is not None and labels != "subpixel":
            raise ValueError("augmentation needs sub-pixel labels: the reference's rounding does not move with a map")
        self.samples = samples
        self.anatomy = anatomy
        self.labels = labels
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.read(index)

    def read(self, index: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Grid pixels and labels of one sample; ``rng`` drives the augmentation (required with one)."""
        sample, grid = self.samples[index], self.anatomy.grid
        image = read_framed(sample)
        if self.labels == "reference":
            return grid_pixels(image, grid), grid_label(sample, self.anatomy)
        label = subpixel_grid_label(sample, self.anatomy)
        if self.augmentation is not None:
            matrix = self.augmentation.framing.draw(rng, grid, label)
            image = warp(image, conjugate(matrix, grid, image.size))
            label = apply_points(matrix, label)
        pixels = grid_pixels(image, grid)
        if self.augmentation is not None:
            pixels = self.augmentation.exposure.apply(rng, pixels)
        return pixels, label.astype(np.float32)

    def batch(self, indices: list[int], key: Sequence[int] = ()) -> Batch:
        """The readable samples of ``indices``; with an augmentation, sample ``k`` draws from ``(*key, k)``."""
        pixels, labels, ids, failures = [], [], [], []
        for slot, index in enumerate(indices):
            rng = np.random.default_rng([*key, slot]) if self.augmentation is not None else None
            try:
                image, label = self.read(index, rng)
            except InputError as error:
                failures.append(str(error))
                continue
            pixels.append(torch.from_numpy(np.array(image)))  # a writable copy
            labels.append(torch.from_numpy(label))
            ids.append(self.samples[index].id)
        height, width = self.anatomy.grid_hw
        count = self.anatomy.num_landmarks
        dtype = torch.int64 if self.labels == "reference" else torch.float32
        return Batch(
            anatomy=self.anatomy.name,
            pixels=torch.stack(pixels) if pixels else torch.zeros(0, height, width, dtype=torch.uint8),
            labels=torch.stack(labels) if labels else torch.zeros(0, count, 2, dtype=dtype),
            ids=ids,
            failures=failures,
        )
