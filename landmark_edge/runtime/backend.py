"""The one interface every inference backend implements (Polygraphy's runner shape: load, run, close).

A backend takes the *resized, un-normalised* first-channel pixels of a batch, (B, H, W) in their stored dtype,
and does the rest on its own device: z-score, network, decoding. So a GPU backend uploads uint8 and copies back
only coordinates and peak values; ``infer`` and ``bench`` never branch on which backend they hold.

Timing is kept by the base class (as Polygraphy's runners keep theirs): :meth:`Backend.run_timed` wraps any
backend's ``run``; a backend that marks its stages with ``with self.stage("h2d"): ...`` gets the split into
host->device, compute, decode and device->host, timed with CUDA events on a CUDA device and ``perf_counter``
elsewhere. Outside ``run_timed`` a stage costs nothing. GPU backends enqueue their work on torch's current CUDA
stream (TensorRT: ``execute_async_v3(torch.cuda.current_stream().cuda_stream)``; ONNX Runtime: the
``user_compute_stream`` provider option) so the events bracket it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from landmark_edge.anatomy import Anatomy
from landmark_edge.decode import DecodeMethod, decode_heatmaps
from landmark_edge.transforms import zscore_batch


@dataclass
class Prediction:
    """A batch's decoded landmarks on the model grid."""

    xy: np.ndarray  # (B, C, 2) float32 grid pixels (x, y)
    confidence: np.ndarray  # (B, C) float32 heatmap peak values
    heatmaps: np.ndarray | None = None  # (B, C, H, W) float32, only when asked for


STAGES = ("preprocess", "h2d", "compute", "decode", "d2h")  # preprocess (decode + resize) is the pipeline's


@dataclass
class Timing:
    """One timed ``run``: wall-clock latency and the backend's stage split, in milliseconds."""

    latency_ms: float
    stages_ms: dict[str, float] = field(default_factory=dict)


class StageTimer:
    """Times named stages of one run: CUDA events on a CUDA device (read after the run), perf_counter elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._marks: list[tuple[str, object, object]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
        else:
            start = time.perf_counter()
            yield
            end = time.perf_counter()
        self._marks.append((name, start, end))

    def durations_ms(self) -> dict[str, float]:
        """Milliseconds per stage (a stage entered twice is summed)."""
        totals: dict[str, float] = {}
        for name, start, end in self._marks:
            if self.cuda:
                end.synchronize()
                elapsed = start.elapsed_time(end)
            else:
                elapsed = (end - start) * 1e3
            totals[name] = totals.get(name, 0.0) + elapsed
        return totals


@contextmanager
def _untimed(name: str) -> Iterator[None]:
    yield


class Backend(ABC):
    """Runs one anatomy's network on batches of grid-sized pixels.

    ``device`` is where the backend computes; a CUDA backend sets it so :meth:`run_timed` uses CUDA events.
    """

    name: str = "backend"
    device: torch.device = torch.device("cpu")
    _timer = staticmethod(_untimed)

    def __init__(self, anatomy: Anatomy, decode: DecodeMethod | str = DecodeMethod.SUBPIXEL) -> None:
        self.anatomy = anatomy
        self.decode = DecodeMethod(decode)

    def stage(self, name: str):
        """``with self.stage("compute"): ...`` marks a stage for :meth:`run_timed` (free when not timing)."""
        return self._timer(name)

    def run_timed(self, pixels: np.ndarray, *, return_heatmaps: bool = False) -> tuple[Prediction, Timing]:
        """``run`` with its latency and stage split; a backend that marks no stages reports it all as compute."""
        timer = StageTimer(self.device)
        self._timer = timer
        start = time.perf_counter()
        try:
            prediction = self.run(pixels, return_heatmaps=return_heatmaps)
        finally:
            del self._timer  # back to the class's no-op
        latency_ms = (time.perf_counter() - start) * 1e3
        return prediction, Timing(latency_ms, timer.durations_ms() or {"compute": latency_ms})

    @abstractmethod
    def run(self, pixels: np.ndarray, *, return_heatmaps: bool = False) -> Prediction:
        """Predict a (B, H, W) batch of resized pixels."""

    def close(self) -> None:
        """Release device resources (nothing to do for most backends)."""


class HostToDevice:
    """Uploads (B, H, W) host batches in their stored dtype (uint8 for 8-bit files: 4x fewer bytes than float).

    On CUDA the batch is copied into one of a ring of reusable pinned buffers and sent with a non-blocking copy,
    so the transfer overlaps host work and no pinned memory is allocated per batch; a slot is reused only once its
    previous copy has finished. On CPU the array is wrapped without a copy.
    """

    def __init__(self, device: torch.device, slots: int = 2) -> None:
        self.device = device
        self._buffers: list[torch.Tensor | None] = [None] * slots
        self._done: list[torch.cuda.Event | None] = [None] * slots
        self._next = 0

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device.type != "cuda":
            return host
        slot, self._next = self._next, (self._next + 1) % len(self._buffers)
        if self._done[slot] is not None:
            self._done[slot].synchronize()
        buffer = self._buffers[slot]
        if buffer is None or buffer.dtype != host.dtype or buffer.numel() < host.numel():
            buffer = self._buffers[slot] = torch.empty(host.numel(), dtype=host.dtype, pin_memory=True)
        staged = buffer[: host.numel()].view(host.shape)
        staged.copy_(host)
        device_batch = staged.to(self.device, non_blocking=True)
        self._done[slot] = torch.cuda.Event()
        self._done[slot].record()
        return device_batch


def to_prediction(xy: torch.Tensor, confidence: torch.Tensor, heatmaps: torch.Tensor | None = None) -> Prediction:
    """Copy decoded landmarks (and heatmaps only when asked for) back to the host in one transfer."""
    packed = torch.cat([xy.float(), confidence.float().unsqueeze(-1)], dim=-1).cpu().numpy()
    return Prediction(
        xy=np.ascontiguousarray(packed[..., :2]),
        confidence=np.ascontiguousarray(packed[..., 2]),
        heatmaps=None if heatmaps is None else heatmaps.float().cpu().numpy(),
    )


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
        self.upload = HostToDevice(self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a z-scored float32 (B, 1, H, W) batch on ``self.device``; subclasses swap the engine."""
        return self.model(x.to(self.dtype), self.anatomy.name)

    @torch.inference_mode()
    def run(self, pixels: np.ndarray, *, return_heatmaps: bool = False) -> Prediction:
        with self.stage("h2d"):
            batch = self.upload(pixels)
        with self.stage("compute"):
            # float32 before decoding: half-precision coordinates would round sub-pixel offsets (0.25 px at 500)
            heatmaps = self.forward(zscore_batch(batch)).float()
        with self.stage("decode"):
            xy, confidence = decode_heatmaps(heatmaps, self.decode)
        with self.stage("d2h"):
            return to_prediction(xy, confidence, heatmaps if return_heatmaps else None)
