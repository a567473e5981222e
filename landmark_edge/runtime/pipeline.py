"""The batched inference pipeline shared by ``infer`` and ``bench``.

Images are decoded and resized on worker threads (PIL releases the GIL) while the backend runs the previous
batch; only a bounded window of images is read ahead, so a folder of any size streams in constant memory.
The backend receives the resized pixels in their stored dtype (uint8 for 8-bit files): a CUDA backend uploads
those from pinned memory and normalises and decodes on the device (see :class:`~landmark_edge.runtime.eager.
HostToDevice`). Results come back in input order, a failed image reported in its place without stopping the run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landmark_edge.anatomy import Anatomy
from landmark_edge.errors import InputError
from landmark_edge.io.images import XrayImage, read_image, resolve_spacing
from landmark_edge.plausibility import flag_result
from landmark_edge.results import ImageFailure, ImageResult, Landmark, Outcome
from landmark_edge.runtime.backend import Backend, Prediction
from landmark_edge.transforms import grid_pixels, grid_to_original


@dataclass
class Prepared:
    """One decoded image and its grid pixels, ready to batch."""

    image: XrayImage
    pixels: np.ndarray


def prepare(path: Path, anatomy: Anatomy) -> Prepared | ImageFailure:
    """Read and resize one image (runs on a worker thread); a bad file becomes its :class:`ImageFailure`."""
    try:
        image = read_image(path)
        return Prepared(image, grid_pixels(image.image, anatomy.grid))
    except InputError as error:
        return ImageFailure(path=str(path), error=str(error))


def prepare_in_order(
    paths: Iterable[Path], anatomy: Anatomy, workers: int, lookahead: int
) -> Iterator[Prepared | ImageFailure]:
    """:func:`prepare` each path on ``workers`` threads, at most ``lookahead`` images ahead of the consumer."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="prepare") as pool:
        pending: deque[Future] = deque()
        try:
            for path in paths:
                pending.append(pool.submit(prepare, Path(path), anatomy))
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


def run_inference(
    paths: Iterable[Path],
    anatomy: Anatomy,
    backend: Backend,
    *,
    batch_size: int = 8,
    spacing_mm: float | None = None,
    workers: int = 2,
    heatmap_sink=None,
    overlay_sink=None,
    min_confidence: float | None = None,
) -> Iterator[Outcome]:
    """Yield one *finished* outcome per path, in order: flags included (peaks below ``min_confidence``, by default
    the calibrated per-landmark minimums; an implausible layout or geometry), so every caller gets the same result. ``heatmap_sink(path, heatmaps)`` receives
    (C, H, W) float32 maps; ``overlay_sink(xray, result)`` the decoded image with its finished result, so an
    overlay never decodes the file a second time.

    While the backend runs batch ``n`` the workers already read and resize the images of batch ``n + 1``
    (two batches of look-ahead keep them busy without holding a whole folder in memory).
    """
    prepared = prepare_in_order(paths, anatomy, workers, lookahead=2 * batch_size + workers)
    for group in _batches(prepared, batch_size):
        ready = [item for item in group if isinstance(item, Prepared)]
        prediction = None
        if ready:
            pixels = np.stack([item.pixels for item in ready])
            prediction = backend.run(pixels, return_heatmaps=heatmap_sink is not None)
        position = 0
        for item in group:
            if isinstance(item, ImageFailure):
                yield item
                continue
            if heatmap_sink is not None:
                heatmap_sink(item.image.path, prediction.heatmaps[position])
            result = to_result(item.image, anatomy, prediction, position, backend.decode.value, spacing_mm)
            result.flags = flag_result(result, anatomy, min_confidence)
            if overlay_sink is not None:
                overlay_sink(item.image, result)
            yield result
            position += 1


def to_result(
    image: XrayImage, anatomy: Anatomy, prediction: Prediction, position: int, decode: str, spacing_mm: float | None
) -> ImageResult:
    """Map one image's grid predictions to original pixels and millimetres."""
    spacing, source = resolve_spacing(image, anatomy, spacing_mm)
    grid_xy = prediction.xy[position]
    original_xy = grid_to_original(grid_xy, image.size, anatomy.grid)
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
        path=str(image.path),
        anatomy=anatomy.name,
        width=image.size[0],
        height=image.size[1],
        spacing_mm=spacing,
        spacing_source=source,
        decode=decode,
        landmarks=landmarks,
    )
