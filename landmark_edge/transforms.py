"""Preprocessing and coordinate transforms, as small composable functions (MONAI-style).

The model input is built exactly as the reference reader does (reference §6.1): the PIL image is resized to
the anatomy's grid with PIL's default filter (bicubic with antialias), the first channel is kept, and the
result is z-scored per image. Training, calibration, export validation and every backend take their pixels and
their z-score from here, so the network always sees the same input. Coordinates always say their space:
*original* pixels of the file, *grid* pixels of the model input, or millimetres.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from landmark_edge.io.images import read_image

Size = tuple[int, int]  # (width, height), PIL's order


def resize_to_grid(image: Image.Image, grid: Size) -> Image.Image:
    """Resize with PIL's default filter, as ``img.resize(size)`` does in the reference."""
    return image.resize(grid)


def first_channel(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W) by taking channel 0; (H, W) is returned as it is."""
    return pixels[..., 0] if pixels.ndim == 3 else pixels


def zscore(pixels: np.ndarray) -> np.ndarray:
    """Per-image z-score in float64 (as the reference's ``np.float``), returned as float32.

    ``pixels`` is one (H, W) image or a (B, H, W) batch, each image normalised on its own: the host backends
    (ONNX Runtime on the CPU) z-score their batches here, so their path needs no torch.
    """
    values = pixels.astype(np.float64)
    mean = values.mean(axis=(-2, -1), keepdims=True)
    std = values.std(axis=(-2, -1), keepdims=True)
    return ((values - mean) / (std + 1e-20)).astype(np.float32)


def to_model_input(image: Image.Image, grid: Size) -> np.ndarray:
    """The (1, H, W) float32 network input for one image."""
    return zscore(grid_pixels(image, grid))[None]


def grid_pixels(image: Image.Image, grid: Size) -> np.ndarray:
    """The resized first channel before normalisation, (H, W), in its stored dtype (uint8 for 8-bit files).

    This is what backends receive: a GPU backend uploads these few bytes and z-scores on the device.
    """
    return np.ascontiguousarray(first_channel(np.asarray(resize_to_grid(image, grid))))


def read_grid_pixels(path, grid: Size) -> np.ndarray:
    """Read a file and return its :func:`grid_pixels` (an unreadable file is an ``InputError`` naming it)."""
    return grid_pixels(read_image(path).image, grid)


def zscore_batch(x):
    """Per-image z-score of a (B, H, W) torch batch into (B, 1, H, W) float32, on the batch's device.

    The batch form of :func:`zscore` in fp32 for torch devices: GPU and torch backends run it on their own
    device before the network, the trainer on each batch, export and calibration on the images they feed a graph.
    """
    x = x.float()
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, correction=0)
    return ((x - mean) / (std + 1e-20)).unsqueeze(1)


def grid_to_original(xy: np.ndarray, original: Size, grid: Size) -> np.ndarray:
    """Map (..., 2) grid-pixel coordinates to original-image pixels with pixel-centre geometry.

    Grid pixel ``g`` covers original ``[g, g + 1) * scale``, so its centre is ``(g + 0.5) * scale - 0.5``:
    the geometry PIL's resize samples with. (The reference never maps back; its labels use ``round(p / scale)``,
    see :func:`reference_grid_label`.)
    """
    scale = np.asarray(original, dtype=np.float64) / np.asarray(grid, dtype=np.float64)
    return (np.asarray(xy, dtype=np.float64) + 0.5) * scale - 0.5


def original_to_grid(xy: np.ndarray, original: Size, grid: Size) -> np.ndarray:
    """Inverse of :func:`grid_to_original`."""
    scale = np.asarray(grid, dtype=np.float64) / np.asarray(original, dtype=np.float64)
    return (np.asarray(xy, dtype=np.float64) + 0.5) * scale - 0.5


def reference_grid_label(xy: np.ndarray, original: Size, grid: Size) -> np.ndarray:
    """The reference's integer training label on the grid: ``round(p * new / old)`` per axis (half to even).

    Used for training targets and the reference evaluation protocol so both match the paper's numbers.
    """
    scale = np.asarray(grid, dtype=np.float64) / np.asarray(original, dtype=np.float64)
    return np.round(np.asarray(xy, dtype=np.float64) * scale).astype(np.int64)
