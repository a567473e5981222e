"""Landmark decoding from heatmaps, in torch so it runs on the GPU and exports into an ONNX graph.

``argmax`` is the reference protocol (integer grid pixel of each channel's maximum, first maximum on ties).
``subpixel`` refines that peak with a Gaussian fit: a parabola through the log of the peak and its two
neighbours on each axis. GU2Net's targets are Gaussians, so for a Gaussian-shaped peak the fit is exact; the
offset is clamped to half a pixel, and a peak on the border keeps its integer position on that axis.

torch is imported when a decoder runs, not with this module: the CLI's options and the ONNX Runtime backend
need :class:`DecodeMethod` only (the default CPU path decodes inside the graph), and importing torch would
cost a one-image ``infer`` more than the network does.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class DecodeMethod(str, Enum):
    ARGMAX = "argmax"
    SUBPIXEL = "subpixel"


_EPS = 1e-6


def decode_heatmaps(
    heatmaps: torch.Tensor, method: DecodeMethod | str = DecodeMethod.SUBPIXEL
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode (B, C, H, W) heatmaps into grid coordinates (B, C, 2) as (x, y) and peak values (B, C)."""
    import torch

    batch, channels, height, width = heatmaps.shape
    flat = heatmaps.reshape(batch, channels, height * width)
    confidence, index = flat.max(dim=-1)
    y = torch.div(index, width, rounding_mode="floor")
    x = index - y * width
    xy = torch.stack([x, y], dim=-1).to(heatmaps.dtype if heatmaps.is_floating_point() else torch.float32)
    if DecodeMethod(method) is DecodeMethod.SUBPIXEL:
        dx = _log_parabola_offset(flat, index, x, 1, width)
        dy = _log_parabola_offset(flat, index, y, width, height)
        xy = xy + torch.stack([dx, dy], dim=-1).to(xy.dtype)
    return xy.float(), confidence.float()


def _log_parabola_offset(
    flat: torch.Tensor, index: torch.Tensor, coord: torch.Tensor, stride: int, size: int
) -> torch.Tensor:
    """Vertex offset of the parabola through log(h) at the peak and its neighbours ``stride`` apart."""
    import torch

    inside = (coord > 0) & (coord < size - 1)
    left_index = torch.where(inside, index - stride, index)
    right_index = torch.where(inside, index + stride, index)
    values = flat.float().clamp_min(_EPS).log()
    centre = values.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    left = values.gather(-1, left_index.unsqueeze(-1)).squeeze(-1)
    right = values.gather(-1, right_index.unsqueeze(-1)).squeeze(-1)
    curvature = left - 2 * centre + right
    offset = 0.5 * (left - right) / torch.where(curvature < -_EPS, curvature, torch.full_like(curvature, -1.0))
    offset = torch.where(curvature < -_EPS, offset, torch.zeros_like(offset))
    return torch.where(inside, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))
