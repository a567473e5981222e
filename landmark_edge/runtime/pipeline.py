"""The inference session: every caller (``infer``, ``evaluate``, ``bench``, the Ray engine, a library) gets its
finished results here, so a result, its flags and its sinks' files are the same whoever asked.

Inputs are decoded and resized on worker threads (PIL releases the GIL) while the backend runs the previous
batch; only a bounded window is read ahead, so a folder of any size streams in constant memory. A
:class:`Reader` says how one kind of input is read: files by default, a dataset sample (with its evaluation
``view``) for ``evaluate``; a caller that has the pixels already (``bench`` times the backend on them) hands the
session :class:`Prepared` items instead. The backend receives the resized pixels in their stored dtype (uint8 for
8-bit files): a CUDA backend uploads those from pinned memory and normalises and decodes on the device (see
:class:`~landmark_edge.runtime.eager.HostToDevice`). Results come back in input order, a failed input reported in
its place without stopping the run. Each result comes with the backend's own, unrounded output for it
(:class:`Inference`): what a caller that scores predictions needs, since a result's coordinates are rounded for
reporting.
"""

from __future__ import annotations

import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from landmark_edge.analysis.cephalometry import measure, supports
from landmark_edge.anatomy import Anatomy
from landmark_edge.errors import InputError
from landmark_edge.io.images import read_image, resolve_spacing
from landmark_edge.io.xray import ImageHeader, XrayImage
from landmark_edge.plausibility import flag_result, min_confidences
from landmark_edge.results import ImageFailure, ImageResult, Landmark, Outcome
from landmark_edge.runtime.backend import Backend, Prediction
from landmark_edge.transforms import grid_pixels, grid_to_original

HeatmapSink = Callable[[Path, np.ndarray], None]
OverlaySink = Callable[[XrayImage, ImageResult], None]


@dataclass
class Prepared:
    """One decoded image and its grid pixels, ready to batch; ``header`` is what its result is reported against
    (the file's own size and spacing, or a dataset sample's original frame when a resized copy was read)."""

    image: XrayImage
    pixels: np.ndarray
    header: ImageHeader


class Reader(Protocol):
    """How a session reads one kind of input (runs on a worker thread)."""

    def name(self, source: Any) -> str:
        """What a failure of ``source`` is reported under (its path)."""

    def read(self, source: Any, anatomy: Anatomy) -> Prepared:
        """Decode and resize ``source``; :class:`InputError` with a one-line reason for a bad input."""


class FileReader:
    """Image and DICOM files, by path: what ``infer`` and library callers pass."""

    def name(self, source: str | Path) -> str:
        return str(Path(source))

    def read(self, source: str | Path, anatomy: Anatomy) -> Prepared:
        image = read_image(source)
        return Prepared(image, grid_pixels(image.image, anatomy.grid), image.header)


FILES = FileReader()


def prepare(source: Any, anatomy: Anatomy, reader: Reader = FILES) -> Prepared | ImageFailure:
    """Read and resize one input; a bad one becomes its :class:`ImageFailure`, so a run never stops for it."""
    try:
        return reader.read(source, anatomy)
    except InputError as error:
        return ImageFailure(path=reader.name(source), error=str(error))


def prepare_in_order(
    sources: Iterable[Any], anatomy: Anatomy, workers: int, lookahead: int, reader: Reader = FILES
) -> Iterator[Prepared | ImageFailure]:
    """:func:`prepare` each source on ``workers`` threads, at most ``lookahead`` inputs ahead of the consumer."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="prepare") as pool:
        pending: deque[Future] = deque()
        try:
            for source in sources:
                pending.append(pool.submit(prepare, source, anatomy, reader))
                if len(pending) >= lookahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _batches(items: Iterable[Prepared | ImageFailure], batch_size: int) -> Iterator[list[Prepared | ImageFailure]]:
    """Group items so each group holds at most ``batch_size`` prepared images (failures ride along in order)."""
    group: list[Prepared | ImageFailure] = []
    count = 0
    for item in items:
        group.append(item)
        count += isinstance(item, Prepared)
        if count == batch_size:
            yield group
            group, count = [], 0
    if group:
        yield group


@dataclass
class Inference:
    """One image's finished result with the backend's own output it was made from: ``grid_xy`` and
    ``confidence`` unrounded (the result's fields are rounded for reporting), ``heatmaps`` (C, H, W) float32 when
    the session keeps them."""

    result: ImageResult
    grid_xy: np.ndarray
    confidence: np.ndarray
    heatmaps: np.ndarray | None = None


class InferenceSession:
    """One anatomy's backend run over inputs in batches, yielding *finished* results in input order: flags
    included (peaks below ``min_confidence``, by default the calibrated per-landmark minimums; an implausible
    layout or geometry), and the sinks' files written. ``heatmap_sink(path, heatmaps)`` receives (C, H, W)
    float32 maps; ``overlay_sink(xray, result)`` the decoded image with its finished result, so an overlay never
    decodes the file a second time. ``stop()`` is asked before each batch: once it says True the run ends after
    the batch in progress, every result of which is yielded (:class:`StopSignals`). ``keep_heatmaps`` puts the maps on each :class:`Inference` as well (for a
    caller that scores them). ``measurements`` adds the cephalometric measurements (head landmarks only) before
    the overlay sink sees the result, so an overlay can draw their lines.
    """

    def __init__(
        self,
        anatomy: Anatomy,
        backend: Backend,
        *,
        batch_size: int = 8,
        workers: int = 2,
        spacing_mm: float | None = None,
        min_confidence: float | None = None,
        keep_heatmaps: bool = False,
        measurements: bool = False,
        heatmap_sink: HeatmapSink | None = None,
        overlay_sink: OverlaySink | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        if measurements and not supports(anatomy.landmark_names):
            raise ValueError(f"the cephalometric measurements need the head landmarks, not {anatomy.name}'s")
        self.anatomy, self.backend = anatomy, backend
        self.measurements = measurements
        self.batch_size, self.workers = batch_size, workers
        self.spacing_mm, self.min_confidence = spacing_mm, min_confidence
        self.keep_heatmaps = keep_heatmaps
        self.heatmap_sink, self.overlay_sink = heatmap_sink, overlay_sink
        self.stop = stop or (lambda: False)

    def run(self, sources: Iterable[Any], reader: Reader = FILES) -> Iterator[Inference | ImageFailure]:
        """Read ``sources`` with ``reader`` and infer them. While the backend runs batch ``n`` the workers already
        read the inputs of batch ``n + 1`` (two batches of look-ahead keep them busy without holding a whole
        folder in memory)."""
        lookahead = 2 * self.batch_size + self.workers
        return self.infer(prepare_in_order(sources, self.anatomy, self.workers, lookahead, reader))

    def infer(self, items: Iterable[Prepared | ImageFailure]) -> Iterator[Inference | ImageFailure]:
        """Infer inputs already read (``bench`` resizes its images once and reuses them); failures pass through."""
        for group in _batches(items, self.batch_size):
            if self.stop():
                return
            finished = self._batch([item for item in group if isinstance(item, Prepared)])
            for item in group:
                yield item if isinstance(item, ImageFailure) else next(finished)

    def _batch(self, ready: list[Prepared]) -> Iterator[Inference]:
        """Run the backend on one batch now; each image is finished (sinks, result, flags) as it is asked for."""
        if not ready:
            return iter(())
        wants_heatmaps = self.keep_heatmaps or self.heatmap_sink is not None
        prediction = self.backend.run(np.stack([item.pixels for item in ready]), return_heatmaps=wants_heatmaps)
        return (self._inference(item, prediction, position) for position, item in enumerate(ready))

    def _inference(self, item: Prepared, prediction: Prediction, position: int) -> Inference:
        heatmaps = None if prediction.heatmaps is None else prediction.heatmaps[position]
        if self.heatmap_sink is not None:
            self.heatmap_sink(item.image.path, heatmaps)
        result = self.finish(item.header, prediction, position)
        if self.overlay_sink is not None:
            self.overlay_sink(item.image, result)
        return Inference(result, prediction.xy[position], prediction.confidence[position],
                         heatmaps if self.keep_heatmaps else None)  # fmt: skip

    def finish(self, header: ImageHeader, prediction: Prediction, position: int) -> ImageResult:
        """The result of image ``position`` of a batch's ``prediction``, flagged, stamped with the backend's run
        record and measured when asked (the Ray actors batch their own)."""
        result = to_result(header, self.anatomy, prediction, position, self.backend.decode.value, self.spacing_mm)
        result.flags = flag_result(result, self.anatomy, self.min_confidence)
        result.run = self.backend.run_info()
        if self.measurements:
            result.measurements = measure(result, min_confidences(self.anatomy, self.min_confidence))
        return result


class StopSignals:
    """SIGINT and SIGTERM as a request to stop after the batch in progress (``InferenceSession(stop=...)``), so a
    job scheduler's SIGTERM or a Ctrl-C leaves every finished result written and a stream whole; a second signal
    stops at once (KeyboardInterrupt). Outside the main thread (where Python cannot take signals) it does nothing.
    """

    def __init__(self) -> None:
        self.received: str | None = None

    def __call__(self) -> bool:
        return self.received is not None

    def _handle(self, number: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.signal(number, self._handle) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def run_inference(paths: Iterable[Path], anatomy: Anatomy, backend: Backend, **settings: Any) -> Iterator[Outcome]:
    """One finished outcome per file, in order: :meth:`InferenceSession.run` over paths, without the backend's
    raw output (what ``infer`` writes). ``settings`` are the session's keyword arguments."""
    for item in InferenceSession(anatomy, backend, **settings).run(paths):
        yield item.result if isinstance(item, Inference) else item


def to_result(
    header: ImageHeader, anatomy: Anatomy, prediction: Prediction, position: int, decode: str, spacing_mm: float | None
) -> ImageResult:
    """Map one image's grid predictions to original pixels and millimetres."""
    spacing, source = resolve_spacing(header, anatomy, spacing_mm)
    grid_xy = prediction.xy[position]
    original_xy = grid_to_original(grid_xy, header.size, anatomy.grid)
    if spacing is None:  # no stated spacing: the anatomy's own rule may give one (hand: the wrist width)
        spacing, source = anatomy.spacing_from_landmarks(original_xy, prediction.confidence[position]) or (None, source)
    landmarks = []
    for index, ((gx, gy), (x, y), conf) in enumerate(
        zip(grid_xy, original_xy, prediction.confidence[position], strict=True)
    ):
        landmarks.append(
            Landmark(
                index=index + 1,
                name=anatomy.landmark_name(index),
                x=round(float(x), 3),
                y=round(float(y), 3),
                x_mm=None if spacing is None else round(float(x) * spacing[0], 3),
                y_mm=None if spacing is None else round(float(y) * spacing[1], 3),
                confidence=round(float(conf), 5),
                grid_x=round(float(gx), 3),
                grid_y=round(float(gy), 3),
            )
        )
    return ImageResult(
        path=str(header.path),
        anatomy=anatomy.name,
        width=header.size[0],
        height=header.size[1],
        spacing_mm=spacing,
        spacing_source=source,
        decode=decode,
        landmarks=landmarks,
    )
