"""GU2Net: the universal anatomical landmark detector of "You Only Learn Once" (Zhu et al., MICCAI 2021).

One network serves several anatomies ("domains"). The *local* branch is a U-Net whose every double conv is a
depthwise-separable pair: the 3x3 depthwise convolutions and the BatchNorms belong to one anatomy, the 1x1
pointwise convolutions are shared by all of them (that is where the universality lives). The *global* branch
sees a 0.25x nearest-subsampled image and the local heatmaps through five dilated 3x3 convolutions, entirely per
anatomy, to resolve ambiguous local peaks. The output is ``sigmoid(local) * sigmoid(global)``.

Tensors use the (B, 1, H, W) layout (rows first); the reference runs (B, 1, W, H), which is why importing its
weights transposes every k>1 kernel (see :mod:`landmark_edge.weights.reference`). Which anatomy runs is Python
control flow (a string key into ``nn.ModuleDict``), so each anatomy exports as its own static graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


def _per_anatomy(anatomies: Sequence[str], make: Callable[[], nn.Module]) -> nn.ModuleDict:
    return nn.ModuleDict({name: make() for name in anatomies})


class SeparableDoubleConv(nn.Module):
    """Two (depthwise 3x3 -> shared pointwise 1x1 -> per-anatomy BN -> LeakyReLU) stages.

    There is no norm or activation between a depthwise conv and its pointwise conv, which is what makes the
    pair (plus the following BN) foldable into one fused operation at inference.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        anatomies: Sequence[str],
        mid_channels: int | None = None,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        mid_channels = mid_channels or out_channels
        self.depthwise1 = _per_anatomy(anatomies, lambda: _depthwise(in_channels))
        self.pointwise1 = nn.Conv2d(in_channels, mid_channels, 1)
        self.norm1 = _per_anatomy(anatomies, lambda: nn.BatchNorm2d(mid_channels))
        self.depthwise2 = _per_anatomy(anatomies, lambda: _depthwise(mid_channels))
        self.pointwise2 = nn.Conv2d(mid_channels, out_channels, 1)
        self.norm2 = _per_anatomy(anatomies, lambda: nn.BatchNorm2d(out_channels))
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor, anatomy: str) -> torch.Tensor:
        x = self.norm1[anatomy](self.pointwise1(self.depthwise1[anatomy](x)))
        x = F.leaky_relu(x, self.negative_slope)
        x = self.norm2[anatomy](self.pointwise2(self.depthwise2[anatomy](x)))
        return F.leaky_relu(x, self.negative_slope)


def _depthwise(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels)


class UniversalUNet(nn.Module):
    """The local branch: a 4-level U-Net of separable double convs with per-anatomy 1x1 input/output heads.

    ``widths`` are the channel counts of the five resolution levels (paper: 64, 128, 256, 512, 512); the decoder
    mirrors them with bilinear (align_corners) up-sampling and concatenated skips, the skip coming first.
    """

    def __init__(
        self,
        num_landmarks: Mapping[str, int],
        in_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512, 512),
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"UniversalUNet needs 5 level widths, got {list(widths)}")
        names = list(num_landmarks)
        w0, w1, w2, w3, w4 = widths
        block = partial(_block, anatomies=names, negative_slope=negative_slope)
        self.input_proj = nn.ModuleDict({n: nn.Conv2d(in_channels, w0, 1) for n in names})
        self.in_block = block(w0, w0)
        self.down1 = block(w0, w1)
        self.down2 = block(w1, w2)
        self.down3 = block(w2, w3)
        self.down4 = block(w3, w4)
        self.up1 = block(w3 + w4, w2, (w3 + w4) // 2)
        self.up2 = block(w2 + w2, w1, (w2 + w2) // 2)
        self.up3 = block(w1 + w1, w0, (w1 + w1) // 2)
        self.up4 = block(w0 + w0, w0, (w0 + w0) // 2)
        self.output_proj = nn.ModuleDict({n: nn.Conv2d(w0, c, 1) for n, c in num_landmarks.items()})

    def forward(self, x: torch.Tensor, anatomy: str) -> torch.Tensor:
        """Return the local heatmaps as probabilities, (B, C, H, W)."""
        x1 = self.in_block(self.input_proj[anatomy](x), anatomy)
        x2 = self.down1(F.max_pool2d(x1, 2), anatomy)
        x3 = self.down2(F.max_pool2d(x2, 2), anatomy)
        x4 = self.down3(F.max_pool2d(x3, 2), anatomy)
        x5 = self.down4(F.max_pool2d(x4, 2), anatomy)
        y = self.up1(_upsample_cat(x5, x4), anatomy)
        y = self.up2(_upsample_cat(y, x3), anatomy)
        y = self.up3(_upsample_cat(y, x2), anatomy)
        y = self.up4(_upsample_cat(y, x1), anatomy)
        return torch.sigmoid(self.output_proj[anatomy](y))


def _block(cin: int, cout: int, mid: int | None = None, *, anatomies, negative_slope) -> SeparableDoubleConv:
    return SeparableDoubleConv(cin, cout, anatomies, mid, negative_slope)


def _upsample_cat(low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 (align_corners) up-sampling, zero-padded to the skip's size, concatenated after the skip."""
    up = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=True)
    dy, dx = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
    if dy or dx:  # only for sizes not divisible by 16; the anatomy grids never pad
        up = F.pad(up, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
    return torch.cat([skip, up], dim=1)


class DilatedConvBNReLU(nn.Module):
    """3x3 dilated conv -> BatchNorm -> ReLU: one stage of the global branch."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class GlobalDilatedNet(nn.Module):
    """The global branch, fully per anatomy: a low-resolution dilated-conv stack over image + local heatmaps.

    Both inputs are nearest-subsampled by ``scale`` (exactly pixel [4i, 4j] for 0.25 and sizes divisible by 4),
    projected to ``width // 2`` channels each, passed through dilated convs, and nearest-upsampled back.
    """

    def __init__(
        self,
        num_landmarks: Mapping[str, int],
        in_channels: int = 1,
        width: int = 128,
        dilations: Sequence[int] = (1, 2, 5, 2, 1),
        scale: float = 0.25,
    ) -> None:
        super().__init__()
        half = (width + 1) // 2
        self.scale = scale
        self.image_in = nn.ModuleDict({n: nn.Conv2d(in_channels, half, 3, padding=1) for n in num_landmarks})
        self.heatmap_in = nn.ModuleDict({n: nn.Conv2d(c, half, 3, padding=1) for n, c in num_landmarks.items()})
        self.dilated = nn.ModuleDict(
            {n: nn.Sequential(*(DilatedConvBNReLU(width, d) for d in dilations)) for n in num_landmarks}
        )
        self.head = nn.ModuleDict({n: nn.Conv2d(width, c, 1) for n, c in num_landmarks.items()})

    def forward(self, image: torch.Tensor, local: torch.Tensor, anatomy: str) -> torch.Tensor:
        size = image.shape[-2:]
        small_image = F.interpolate(image, scale_factor=self.scale, mode="nearest")
        small_local = F.interpolate(local, scale_factor=self.scale, mode="nearest")
        features = torch.cat([self.image_in[anatomy](small_image), self.heatmap_in[anatomy](small_local)], dim=1)
        y = self.head[anatomy](self.dilated[anatomy](features))
        return torch.sigmoid(F.interpolate(y, size=size, mode="nearest"))


class GU2Net(nn.Module):
    """GU2Net: ``sigmoid(local) * sigmoid(global)`` heatmaps for one anatomy per forward.

    Args:
        num_landmarks: anatomy name -> landmark count, in the model's anatomy order (paper: head 19, hand 37,
            chest 6).
        in_channels: image channels (1: grey X-rays).
        local_widths: channel widths of the five U-Net levels (paper: 64, 128, 256, 512, 512).
        global_width: channels of the dilated global stack (paper: 128).
        dilations: dilation of each global 3x3 conv (paper: 1, 2, 5, 2, 1).
        global_scale: subsampling factor of the global branch input (paper: 0.25).
        negative_slope: LeakyReLU slope of the local branch (PyTorch default 0.01, as in the reference).
    """

    def __init__(
        self,
        num_landmarks: Mapping[str, int],
        in_channels: int = 1,
        local_widths: Sequence[int] = (64, 128, 256, 512, 512),
        global_width: int = 128,
        dilations: Sequence[int] = (1, 2, 5, 2, 1),
        global_scale: float = 0.25,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_landmarks = dict(num_landmarks)
        self.config = {
            "num_landmarks": dict(num_landmarks),
            "in_channels": in_channels,
            "local_widths": list(local_widths),
            "global_width": global_width,
            "dilations": list(dilations),
            "global_scale": global_scale,
            "negative_slope": negative_slope,
        }
        self.local_net = UniversalUNet(num_landmarks, in_channels, local_widths, negative_slope)
        self.global_net = GlobalDilatedNet(num_landmarks, in_channels, global_width, dilations, global_scale)

    @property
    def anatomies(self) -> list[str]:
        return list(self.num_landmarks)

    def forward(self, x: torch.Tensor, anatomy: str) -> torch.Tensor:
        """Heatmaps in (0, 1), shape (B, C_anatomy, H, W), for a (B, 1, H, W) z-scored image batch."""
        if anatomy not in self.num_landmarks:
            raise KeyError(f"this GU2Net has no '{anatomy}' head (it has: {', '.join(self.num_landmarks)})")
        local = self.local_net(x, anatomy)
        return local * self.global_net(x, local, anatomy)


class SingleAnatomy(nn.Module):
    """A GU2Net bound to one anatomy: ``forward(x)`` with no control-flow argument, for export and compile."""

    def __init__(self, model: GU2Net, anatomy: str) -> None:
        super().__init__()
        if anatomy not in model.num_landmarks:
            raise KeyError(f"this GU2Net has no '{anatomy}' head (it has: {', '.join(model.num_landmarks)})")
        self.model = model
        self.anatomy = anatomy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.anatomy)


SHARED = "shared"  # the owner of the layers every anatomy runs through (the local branch's 1x1 pointwise convs)


def tensor_owners(model: GU2Net) -> dict[str, str]:
    """Each state-dict key (parameters and BatchNorm buffers) -> the anatomy that owns it, or ``SHARED``.

    An anatomy owns whatever sits under its key of a per-anatomy ``ModuleDict``; everything else is shared.
    Fine-tuning freezes and initialises by these groups, and it is derived from the modules rather than from
    key spellings (``global_net.head.head.weight`` is the *head* anatomy's output conv of the global branch).
    """
    names = set(model.anatomies)
    owners = dict.fromkeys(model.state_dict(), SHARED)
    for prefix, module in model.named_modules():
        if isinstance(module, nn.ModuleDict) and set(module.keys()) == names:
            for anatomy, child in module.items():
                for key in child.state_dict():
                    owners[f"{prefix}.{anatomy}.{key}"] = anatomy
    return owners


def gu2net(anatomies: Sequence[str] | None = None, **kwargs) -> GU2Net:
    """Build the paper's GU2Net for registry anatomies (default: head, hand, chest in the paper's order)."""
    from landmark_edge.anatomy import PAPER_ORDER, get_anatomy

    resolved = [get_anatomy(a) for a in (anatomies or PAPER_ORDER)]
    return GU2Net({a.name: a.num_landmarks for a in resolved}, **kwargs)
