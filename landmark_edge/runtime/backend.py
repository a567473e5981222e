"""The one interface every inference backend implements (Polygraphy's runner shape: load, warm up, run).

A backend takes the *resized, un-normalised* first-channel pixels of a batch, (B, H, W) in their stored dtype,
and does the rest on its own device: z-score, network, decoding. So a GPU backend uploads uint8 and copies back
only coordinates and peak values; ``infer`` and ``bench`` never branch on which backend they hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from landmark_edge.anatomy import Anatomy
from landmark_edge.decode import DecodeMethod, decode_heatmaps


@dataclass
class Prediction:
    """A batch's decoded landmarks on the model grid."""

    xy: np.ndarray  # (B, C, 2) float32 grid pixels (x, y)
    confidence: np.ndarray  # (B, C) float32 heatmap peak values
    heatmaps: np.ndarray | None = None  # (B, C, H, W) float32, only when asked for


class Backend(ABC):
    """Runs one anatomy's network on batches of grid-sized pixels."""

    name: str = "backend"

    def __init__(self, anatomy: Anatomy, decode: DecodeMethod | str = DecodeMethod.SUBPIXEL) -> None:
        self.anatomy = anatomy
        self.decode = DecodeMethod(decode)

    @abstractmethod
    def run(self, pixels: np.ndarray, *, return_heatmaps: bool = False) -> Prediction:
        """Predict a (B, H, W) batch of resized pixels."""

    def warmup(self, batch_size: int = 1, iterations: int = 2) -> None:
        """Run a few zero batches so lazy initialisation and autotuning happen before timing or serving."""
        height, width = self.anatomy.grid_hw
        for _ in range(iterations):
            self.run(np.zeros((batch_size, height, width), dtype=np.uint8))

    def close(self) -> None:
        """Release device resources (nothing to do for most backends)."""


def zscore_batch(x: torch.Tensor) -> torch.Tensor:
    """Per-image z-score of a (B, H, W) batch into (B, 1, H, W) float32, on the batch's device."""
    x = x.float()
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, correction=0)
    return ((x - mean) / (std + 1e-20)).unsqueeze(1)


class TorchBackend(Backend):
    """Eager PyTorch: the reference every other backend is compared against (fp32 by default)."""

    name = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        anatomy: Anatomy,
        decode: DecodeMethod | str = DecodeMethod.SUBPIXEL,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(anatomy, decode)
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(self.device, dtype).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a z-scored float32 (B, 1, H, W) batch on ``self.device``; subclasses swap the engine."""
        return self.model(x.to(self.dtype), self.anatomy.name)

    @torch.inference_mode()
    def run(self, pixels: np.ndarray, *, return_heatmaps: bool = False) -> Prediction:
        batch = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        heatmaps = self.forward(zscore_batch(batch)).float()
        xy, confidence = decode_heatmaps(heatmaps, self.decode)
        return Prediction(
            xy=xy.cpu().numpy(),
            confidence=confidence.cpu().numpy(),
            heatmaps=heatmaps.cpu().numpy() if return_heatmaps else None,
        )
