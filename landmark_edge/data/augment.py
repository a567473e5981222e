"""The robust recipe's augmentation: new framings and exposures of a training image, landmarks kept exact.

ISBI's images share one framing (the whole skull, one device); a model trained on that framing alone fails on a
device with a tighter field of view (the skull larger in the frame, its top cut off). Each draw is one affine map
on the grid (random scale with a small aspect change, rotation, translation, and crops anchored at the bottom
that cut the top) applied to the image and to the landmarks alike through :mod:`landmark_edge.affine`, then a
random gamma, blur and noise. No flip: a lateral cephalogram has a side, and a mirrored hand or chest is another
anatomy's layout. Brightness and contrast are left out on purpose: the per-image z-score removes them.

Draws are a pure function of the random generator handed in, so the trainer seeds one per sample from
(seed, epoch, iteration, slot) and a resumed run replays exactly the same images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from landmark_edge.affine import Size, apply_points, centre, similarity


@dataclass(frozen=True)
class Framing:
    """Ranges of the geometric draw, in grid pixels and fractions of the grid."""

    scale: tuple[float, float] = (0.8, 1.25)  # log-uniform; > 1 zooms in
    aspect: float = 0.07  # x scale / y scale within exp(+-aspect): other devices' pixel aspect after the resize
    rotation_deg: float = 8.0  # uniform in +-
    translation: float = 0.08  # uniform in +- this fraction of the grid, per axis
    top_cut: float = 0.3  # probability of a crop that keeps the bottom edge and cuts the top (tighter field of view)
    top_cut_scale: tuple[float, float] = (1.1, 1.45)  # its zoom, log-uniform
    margin_px: float = 2.0  # every landmark stays this far inside the output
    tries: int = 10  # draws before falling back to the unchanged framing

    def draw(self, rng: np.random.Generator, grid: Size, landmarks: np.ndarray) -> np.ndarray:
        """A 3x3 map from the grid image to the augmented grid image keeping every landmark inside."""
        for _ in range(self.tries):
            matrix = self._one(rng, grid)
            moved = apply_points(matrix, landmarks)
            low, high = self.margin_px, np.asarray(grid, dtype=np.float64) - 1 - self.margin_px
            if np.all((moved >= low) & (moved <= high)):
                return matrix
        return np.eye(3)

    def _one(self, rng: np.random.Generator, grid: Size) -> np.ndarray:
        width, height = grid
        cut = rng.random() < self.top_cut
        zoom = _log_uniform(rng, self.top_cut_scale if cut else self.scale)
        aspect = math.exp(rng.uniform(-self.aspect, self.aspect))
        scale_xy = (zoom * math.sqrt(aspect), zoom / math.sqrt(aspect))
        angle = rng.uniform(-self.rotation_deg, self.rotation_deg)
        shift = rng.uniform(-self.translation, self.translation, size=2) * np.asarray(grid, dtype=np.float64)
        if cut:  # the window's bottom edge on the image's: the top (height - height / zoom) rows are cut off
            shift[1] = (height - height / scale_xy[1]) / 2
        middle = centre(grid)
        return similarity(middle + shift, middle, scale_xy, angle)


@dataclass(frozen=True)
class Exposure:
    """Ranges of the intensity draw on uint8 grid pixels."""

    gamma: tuple[float, float] = (0.7, 1.45)  # log-uniform, on pixels scaled to [0, 1]
    blur: float = 0.3  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.4, 1.2)  # grid pixels
    noise: float = 0.3  # probability of additive Gaussian noise
    noise_std: tuple[float, float] = (1.0, 6.0)  # grey levels of 255

    def apply(self, rng: np.random.Generator, pixels: np.ndarray) -> np.ndarray:
        if pixels.dtype != np.uint8:
            raise ValueError(f"exposure augmentation works on 8-bit grid pixels, not {pixels.dtype}")
        gamma = _log_uniform(rng, self.gamma)
        lut = np.round(255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)
        image = Image.fromarray(lut[pixels])
        if rng.random() < self.blur:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*self.blur_sigma)))
        out = np.asarray(image)
        if rng.random() < self.noise:
            noisy = out + rng.normal(0.0, rng.uniform(*self.noise_std), size=out.shape).astype(np.float32)
            out = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
        return out


@dataclass(frozen=True)
class Augmentation:
    """One framing and one exposure per draw (the robust recipe's defaults)."""

    framing: Framing = Framing()
    exposure: Exposure = Exposure()


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1])))
