"""Affine maps of images and their landmarks under the project's pixel-centre convention.

Coordinates are (x = column, y = row), 0-based, and an integer coordinate is the *centre* of a pixel (README
"Coordinates"): pixel ``i`` covers ``[i - 0.5, i + 0.5)``. A map is a 3x3 matrix taking a point of the source
image to the output image; the same matrix moves the landmarks (:func:`apply_points`) and resamples the pixels
(:func:`warp`, which inverts it), so a landmark stays on its anatomy by construction.

PIL is the resampler (already a dependency, C speed in DataLoader workers). Its ``Image.transform`` works in
pixel-*corner* coordinates (it samples output pixel ``i`` at ``i + 0.5``), so :func:`warp` conjugates the
matrix by the half-pixel shift; ``tests/test_augment.py`` checks the result with a bright dot at a known
sub-pixel position under every transform.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

Size = tuple[int, int]  # (width, height)


def centre(size: Size) -> np.ndarray:
    """The image centre in pixel-centre coordinates: ((W - 1) / 2, (H - 1) / 2)."""
    return (np.asarray(size, dtype=np.float64) - 1) / 2


def similarity(
    source_point: np.ndarray, output_point: np.ndarray, scale_xy: tuple[float, float] = (1.0, 1.0),
    angle_deg: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """The map that takes ``source_point`` to ``output_point``, rotating and scaling about it.

    ``scale_xy`` > 1 magnifies (zooms in). A positive angle turns the image counter-clockwise as displayed
    (rows grow downward), as PIL's ``Image.rotate`` does.
    """
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    linear = np.diag(np.asarray(scale_xy, dtype=np.float64)) @ np.array([[c, s], [-s, c]])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = np.asarray(output_point, np.float64) - linear @ np.asarray(source_point, np.float64)
    return matrix


def rescaling(from_size: Size, to_size: Size) -> np.ndarray:
    """The pixel-centre map between two resolutions of one image: ``(p + 0.5) * to / from - 0.5``."""
    factor = np.asarray(to_size, dtype=np.float64) / np.asarray(from_size, dtype=np.float64)
    matrix = np.diag([*factor, 1.0])
    matrix[:2, 2] = 0.5 * factor - 0.5
    return matrix


def conjugate(matrix: np.ndarray, from_size: Size, to_size: Size) -> np.ndarray:
    """The same geometric map expressed for a resized copy of the image (``to_size`` instead of ``from_size``)."""
    change = rescaling(from_size, to_size)
    return change @ matrix @ np.linalg.inv(change)


def apply_points(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(..., 2) points through the 3x3 ``matrix`` (float64)."""
    xy = np.asarray(xy, dtype=np.float64)
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def scale_of(matrix: np.ndarray) -> float:
    """The map's isotropic magnification (square root of the area change)."""
    return math.sqrt(abs(np.linalg.det(matrix[:2, :2])))


def warp(
    image: Image.Image, matrix: np.ndarray, size: Size | None = None, resample=Image.Resampling.BILINEAR
) -> Image.Image:
    """Resample ``image`` so that the point ``p`` of the source lands at ``matrix @ p`` of the output.

    Output pixels whose source falls outside the image are 0 (black, as an X-ray's unexposed border).
    """
    inverse = np.linalg.inv(matrix)
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])  # pixel-centre -> PIL's corner coordinates
    corner = half @ inverse @ np.linalg.inv(half)
    return image.transform(size or image.size, Image.Transform.AFFINE, tuple(corner[:2].ravel()), resample=resample,
                           fillcolor=0)  # fmt: skip
