"""Gaussian heatmap targets exactly as the reference builds them (reference §6.2, ``kit.gaussianHeatmap``).

The reference pastes one (2r, 2r) mask per landmark, r = round(3 sigma), centred at index (r, r): the support is
offsets -r..r-1 on each axis (the +r side is cut off), the values are the normalised Gaussian min-max rescaled to
[0, 1] over the mask (peak exactly 1, corner exactly 0), and zero elsewhere. Targets are rendered in torch from
integer grid labels so a GPU run builds them on the device instead of shipping (B, C, H, W) floats per batch.

The robust recipe's labels are exact sub-pixel positions (floats); their targets are the untruncated Gaussian
``exp(-d^2 / (2 sigma^2))`` centred on the label itself, so the peak sits where the landmark is, not half a grid
pixel off, and the decoder's log-parabola fit (exact for a Gaussian) reads it back without bias.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SIGMA = 3.0  # reference config: every dataset's sigma, in grid pixels


def gaussian_mask(sigma: float = SIGMA, nsigma: float = 3.0) -> np.ndarray:
    """The reference's (2r, 2r) mask in float64; ``mask[r, r] == 1`` is the landmark."""
    radius = round(nsigma * sigma)
    offsets = np.arange(2 * radius, dtype=np.float64) - radius
    squared = offsets[:, None] ** 2 + offsets[None, :] ** 2
    mask = np.exp(-squared / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    return (mask - mask.min()) / (mask.max() - mask.min())


def render_heatmaps(labels: torch.Tensor, grid_hw: tuple[int, int], sigma: float = SIGMA) -> torch.Tensor:
    """(B, C, 2) grid labels (x, y) -> (B, C, H, W) float32 targets on the labels' device.

    Integer labels (the reference's) get the reference mask; a label near or outside the border gives the
    truncated mask, as the reference's clipped paste does. Floating-point labels get
    :func:`render_subpixel_heatmaps`.
    """
    if labels.is_floating_point():
        return render_subpixel_heatmaps(labels, grid_hw, sigma)
    mask = torch.from_numpy(gaussian_mask(sigma)).to(device=labels.device, dtype=torch.float32)
    radius = mask.shape[0] // 2
    height, width = grid_hw
    labels = labels.long()
    rows = torch.arange(height, device=labels.device) - labels[..., 1:2] + radius  # (B, C, H) mask row index
    cols = torch.arange(width, device=labels.device) - labels[..., 0:1] + radius  # (B, C, W)
    row_ok = (rows >= 0) & (rows < 2 * radius)
    col_ok = (cols >= 0) & (cols < 2 * radius)
    values = mask[rows.clamp(0, 2 * radius - 1)[..., :, None], cols.clamp(0, 2 * radius - 1)[..., None, :]]
    return values * (row_ok[..., :, None] & col_ok[..., None, :])


def render_subpixel_heatmaps(labels: torch.Tensor, grid_hw: tuple[int, int], sigma: float = SIGMA) -> torch.Tensor:
    """(B, C, 2) sub-pixel grid labels (x, y) -> (B, C, H, W) float32 Gaussians peaking at the exact label.

    Separable (an outer product of one row and one column profile), so it costs no more than the reference's
    paste; a label outside the grid leaves only the tail of its Gaussian inside, as it would be seen.
    """
    height, width = grid_hw
    labels = labels.float()
    rows = torch.arange(height, device=labels.device, dtype=torch.float32) - labels[..., 1:2]  # (B, C, H)
    cols = torch.arange(width, device=labels.device, dtype=torch.float32) - labels[..., 0:1]  # (B, C, W)
    scale = -1.0 / (2 * sigma**2)
    return torch.exp(rows**2 * scale)[..., :, None] * torch.exp(cols**2 * scale)[..., None, :]
