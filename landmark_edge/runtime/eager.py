"""Eager PyTorch: the reference backend every other one is compared against, and the host-to-device upload
that torch-based backends share (the compiled and AOTInductor backends subclass :class:`TorchBackend`).

Kept apart from :mod:`landmark_edge.runtime.backend` so that the backend interface imports no torch.
"""

from __future__ import annotations

import numpy as np
import torch

from pathlib import Path

from landmark_edge.anatomy import Anatomy
from landmark_edge.contracts import TORCH_DTYPES, dtype_precision
from landmark_edge.decode import DecodeMethod, decode_heatmaps
from landmark_edge.errors import BackendUnavailable
from landmark_edge.runtime.backend import Backend, BackendRequest, Prediction
from landmark_edge.transforms import zscore_batch


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
        self.precision = dtype_precision(str(dtype).removeprefix("torch."))
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


def create(request: BackendRequest) -> TorchBackend:
    """The ``torch`` registry entry's factory."""
    from landmark_edge.weights import load_weights

    dtype = request_dtype("torch", request)
    model, _ = load_weights(weights_of("torch", request), request.anatomy.name, require_fit=request.require_fit)
    return TorchBackend(model, request.anatomy, request.decode, request.device, dtype)


def weights_of(backend: str, request: BackendRequest) -> Path:
    """The weights file of a backend that builds from weights (a library caller may have left it None)."""
    if request.weights is None:
        raise BackendUnavailable(f"{backend} backend: runs --weights; none given")
    return request.weights


def torch_dtype(precision: str) -> torch.dtype:
    """``fp32``/``fp16``/``bf16`` as a torch dtype."""
    if precision not in TORCH_DTYPES:
        raise BackendUnavailable(f"precision {precision} not supported by PyTorch backends (fp32, fp16, bf16)")
    return getattr(torch, TORCH_DTYPES[precision])


def request_dtype(backend: str, request: BackendRequest) -> torch.dtype:
    """The request's precision as a torch dtype, after checking that its device exists here."""
    if request.device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"{backend} backend: device {request.device} asked for but CUDA is not available")
    return torch_dtype(request.precision)
