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

This module does not import torch (a host backend such as ONNX Runtime on the CPU runs without it, and a
one-image ``infer`` would spend more time importing torch than inferring); the eager PyTorch backend and its
host-to-device upload are in :mod:`landmark_edge.runtime.eager`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landmark_edge.anatomy import Anatomy
from landmark_edge.contracts import CONFIDENCE, HEATMAPS, LANDMARKS, ArtifactInfo, RunInfo
from landmark_edge.decode import DecodeMethod, decode_heatmaps
from landmark_edge.errors import BackendUnavailable
from landmark_edge.io.files import artifact_sha256, file_sha256
from landmark_edge.transforms import zscore

if TYPE_CHECKING:
    import torch

    from landmark_edge.runtime.options import BackendOptions


@dataclass
class BackendRequest:
    """What a backend is asked to run: the user's backend arguments and the job's weights, anatomy and batch size.

    ``artifact`` is an exported file (ONNX, engine, .pt2) where one is used. Callers do not build it: they call
    :func:`landmark_edge.backends.open_backend`, which also gives it the ``onnx_loader`` (export's, which the
    runtime may not import).
    """

    weights: Path | None  # None when the artifact carries the network (exported graph, engine, .pt2)
    anatomy: Anatomy
    decode: DecodeMethod = DecodeMethod.SUBPIXEL
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8 (where the backend supports it)
    max_batch_size: int = 32
    artifact: Path | None = None
    options: dict[str, Any] | BackendOptions = field(default_factory=dict)  # the backend's typed set once created
    require_fit: bool = True  # refuse an anatomy the weights mark unfit; evaluate measures it anyway
    # Makes the ONNX graph of ``weights`` when no artifact is given (export's job, passed in Polygraphy-style:
    # ``landmark_edge.export.loaders.OnnxFromWeights``): called with int8 calibration fields, or None for float.
    onnx_loader: Callable[[dict[str, Any] | None], Any] | None = None
    progress: Callable[[str], None] | None = None  # one line per step of a long build (the compiled backend's)
    # Accept a backend's fallback (ONNX Runtime on the CPU when its GPU provider cannot load); backends without
    # a fallback ignore it, so one flag means the same in every command whatever the backend.
    allow_fallback: bool = False


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

    def __init__(self, device: torch.device | str) -> None:
        self.cuda = str(device).startswith("cuda")  # torch.device("cuda", 0) reads "cuda:0"
        self._marks: list[tuple[str, object, object]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.cuda:
            import torch  # a CUDA backend has imported it already

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

    ``device`` is where the backend computes (a ``torch.device`` or its name); a CUDA backend sets it so
    :meth:`run_timed` uses CUDA events.
    """

    name: str = "backend"
    device: torch.device | str = "cpu"
    # What really runs, for the run record (:meth:`run_info`): a backend sets it from what it loaded (an engine's
    # header, a package's dtype) or reads it back from its runtime (OpenVINO's compiled model).
    precision: str = "fp32"
    # The weights an artifact was made from, from its own metadata (None: the backend ran a weights file).
    artifact_weights_sha256: str | None = None
    _timer = staticmethod(_untimed)
    _sources: tuple[Path | None, Path | None] = (None, None)
    _run_info: RunInfo | None = None

    def __init__(self, anatomy: Anatomy, decode: DecodeMethod | str = DecodeMethod.SUBPIXEL) -> None:
        self.anatomy = anatomy
        self.decode = DecodeMethod(decode)

    def decodes_in_graph(self, graph_decode: str | None) -> bool:
        """Whether an artifact's own decoder gives what was asked: it was exported with one (``graph_decode``, from
        its metadata) and with the method requested. Otherwise the backend decodes the artifact's heatmaps on the
        host with the one decoder (:func:`landmark_edge.decode.decode_heatmaps`), so results never depend on
        where decoding ran."""
        return graph_decode is not None and DecodeMethod(graph_decode) is self.decode

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

    def made_from(self, weights: Path | None, artifact: Path | None) -> None:
        """Note the files this backend was made from (``create_backend`` does); hashed once, when first asked."""
        self._sources, self._run_info = (weights, artifact), None

    def run_info(self) -> RunInfo:
        """The run record every result of this backend carries: its name, the precision it runs, the weights
        (the artifact's recorded ones when it runs an artifact) and the artifact's sha256."""
        if self._run_info is None:
            weights, artifact = self._sources
            self._run_info = RunInfo(
                backend=self.name,
                precision=self.precision,
                weights_sha256=self.artifact_weights_sha256 if artifact is not None or weights is None
                else file_sha256(weights),
                artifact_sha256=None if artifact is None else artifact_sha256(artifact),
            )  # fmt: skip
        return self._run_info


class GraphBackend(Backend):
    """A backend that runs an exported graph on the host (ONNX Runtime, OpenVINO): z-score in numpy, the graph,
    then its in-graph decoder when it matches the requested method, else the one decoder on its heatmaps.

    Subclasses only say how to run the graph (:meth:`outputs`); everything around it is shared, so the two
    runtimes cannot drift apart in how they feed the graph or pick its outputs.
    """

    def __init__(
        self, info: ArtifactInfo, anatomy: Anatomy, decode: DecodeMethod | str, precision: str | None = None
    ) -> None:
        """``precision`` is what the runtime computes in when it is not the graph's own (fp16 on the TensorRT EP,
        what OpenVINO's runtime graph reports)."""
        super().__init__(anatomy, decode)
        self.info = info  # the factory has checked it against the request (check_built_for)
        self.graph_decodes = self.decodes_in_graph(info.decode)
        self.precision = precision or info.precision
        self.artifact_weights_sha256 = info.weights_sha256 or None

    @abstractmethod
    def outputs(self, names: list[str], image: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs ``names`` for a z-scored (B, 1, H, W) float32 batch."""

    def run(self, pixels: np.ndarray, *, return_heatmaps: bool = False) -> Prediction:
        image = zscore(pixels)[:, None]  # on the host, in numpy: this path needs no torch
        names = ([HEATMAPS] if return_heatmaps or not self.graph_decodes else []) + (
            [LANDMARKS, CONFIDENCE] if self.graph_decodes else []
        )
        outputs = dict(zip(names, self.outputs(names, image)))
        if self.graph_decodes:
            xy, confidence = outputs[LANDMARKS], outputs[CONFIDENCE]
        else:
            xy, confidence = decode_on_host(outputs[HEATMAPS], self.decode)
        return Prediction(
            xy=np.asarray(xy, dtype=np.float32),
            confidence=np.asarray(confidence, dtype=np.float32),
            heatmaps=outputs[HEATMAPS] if return_heatmaps else None,
        )


def decode_on_host(heatmaps: np.ndarray, method: DecodeMethod) -> tuple[np.ndarray, np.ndarray]:
    """Decode a graph's heatmaps with the one (torch) decoder, for a graph exported without the decoder asked for.

    Only this case imports torch: the graphs this package exports from weights carry the decoder requested.
    """
    import torch

    xy, confidence = decode_heatmaps(torch.from_numpy(np.ascontiguousarray(heatmaps)), method)
    return xy.numpy(), confidence.numpy()


@dataclass(frozen=True)
class BuiltFor:
    """What a prebuilt artifact was made for, from its metadata: ``kind`` (engine, package) names it in errors
    and ``rebuild`` is the command that makes another (``landmark-edge build MODEL.onnx``)."""

    kind: str
    anatomy: str
    precision: str
    max_batch_size: int | None  # None: any batch size (a graph with a dynamic batch axis)
    rebuild: str


def check_built_for(
    path: object, built: BuiltFor, anatomy: Anatomy, precision: str | None = None, max_batch_size: int | None = None
) -> None:
    """Refuse a request that a prebuilt artifact cannot honour, before it is loaded onto a device.

    An artifact's precision and batch range are fixed when it is built, so a request for another precision or for
    larger batches would otherwise run silently as something else (a bench row labelled fp32 timing an fp16
    engine, batch 8 timed as two batches of 4). ``None`` leaves a field unchecked (a library caller that takes
    the artifact as it is).
    """
    if built.anatomy != anatomy.name:
        raise BackendUnavailable(f"{path}: {built.kind} is for {built.anatomy}, not {anatomy.name}")
    if precision is not None and precision != built.precision:
        raise BackendUnavailable(
            f"{path}: a {built.precision} {built.kind}; run it with --precision {built.precision} or make a "
            f"{precision} one ({built.rebuild} --precision {precision})"
        )
    if None not in (max_batch_size, built.max_batch_size) and max_batch_size > built.max_batch_size:
        raise BackendUnavailable(
            f"{path}: the {built.kind} runs batches up to {built.max_batch_size}, not {max_batch_size}: pass "
            f"--batch-size {built.max_batch_size} or make a larger one ({built.rebuild} --max-batch {max_batch_size})"
        )
