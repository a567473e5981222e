"""``infer``'s job: one finished outcome per file, in input order, on this machine or on a Ray cluster.

Results already in the output folder (or an earlier JSONL output) made by the same weights and artifact are reused
(``--skip-existing``: :func:`~landmark_edge.results.reusable`); the others
run through the inference session (:func:`~landmark_edge.runtime.pipeline.run_inference`) or the Ray executor
(:func:`~landmark_edge.distributed.ray.ray_inference`) with a backend from
:func:`~landmark_edge.backends.open_backend`, and each fresh result's per-image files (JSON, overlay, heatmaps)
are written as soon as it is done. The command only parses its options and renders what this yields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from landmark_edge.analysis import measure, measurement_drawer
from landmark_edge.anatomy import Anatomy
from landmark_edge.backends import BackendChoice, open_backend
from landmark_edge.distributed.ray import RaySettings, ray_inference  # imports Ray only when it runs
from landmark_edge.errors import InputError, RunInterrupted
from landmark_edge.io.atomic import atomic_path
from landmark_edge.io.images import XrayImage, read_image
from landmark_edge.plausibility import min_confidences
from landmark_edge.results import (
    ImageFailure,
    ImageResult,
    JsonlResults,
    Outcome,
    ResultStore,
    made_from,
    reusable,
    write_overlay,
)
from landmark_edge.runtime.pipeline import StopSignals, run_inference

__all__ = ["InferJob", "infer_files"]

Building = Callable[[], AbstractContextManager[Callable[[str], None] | None]]


@dataclass
class InferJob:
    """What to run and where its per-image files go (``store``'s folder; overlays and heatmaps in their own)."""

    anatomy: Anatomy
    choice: BackendChoice
    weights: Path | None  # None where the artifact carries the network
    store: ResultStore
    batch_size: int = 8
    spacing_mm: float | None = None
    min_confidence: float | None = None
    measurements: bool = False
    skip_existing: bool = False
    overlay: Path | None = None
    save_heatmaps: Path | None = None
    cluster: RaySettings | None = None  # None: this process
    stop: StopSignals | None = None  # asked before each batch (this process only): the run ends after the batch
    resume_from: JsonlResults | None = None  # where --skip-existing finds earlier results; None: ``store``


def infer_files(
    job: InferJob, files: list[Path], *, building: Building = nullcontext, log: Callable[[str], None] = print
) -> Iterator[Outcome]:
    """One outcome per file of ``files``, in order. The backend is built (or the cluster joined) now, before the
    first outcome is asked for, so a backend that cannot run is reported before any output is opened.
    ``building()`` gives the callback that sees a long build's steps; ``log`` gets the Ray executor's summary."""
    done = _reusable(job, files, log) if job.skip_existing else {}
    todo = [path for path in files if path not in done]
    opener = partial(open_backend, job.choice, job.weights, job.anatomy, max_batch_size=job.batch_size)
    sink = _heatmap_writer(job.store, job.save_heatmaps) if job.save_heatmaps else None
    settings = {"batch_size": job.batch_size, "spacing_mm": job.spacing_mm, "min_confidence": job.min_confidence,
                "measurements": job.measurements, "heatmap_sink": sink}  # fmt: skip
    if job.cluster is not None:
        fresh = ray_inference(todo, job.anatomy, opener, job.cluster, log=log, **settings)
    else:
        with building() as progress:  # the progress callback stays here: Ray pickles the opener
            runner = opener(progress=progress)
        drawer = None if job.overlay is None else _overlay_writer(job.store, job.overlay, job.measurements)
        fresh = run_inference(todo, job.anatomy, runner, overlay_sink=drawer, stop=job.stop, **settings)
    return _in_order(job, files, done, fresh)


def _reusable(job: InferJob, files: list[Path], log: Callable[[str], None]) -> dict[Path, ImageResult]:
    """Earlier results made the way this run makes them; one line says how many and why the others are redone."""
    provenance = made_from(job.weights, job.choice.artifact)
    found = job.resume_from or job.store
    reuse = reusable(found, job.store, files, job.anatomy.name, job.choice.decode.value, provenance, job.overlay)
    if reuse.summary():
        log(f"note: {reuse.summary()}")
    return reuse.results


def _in_order(job: InferJob, files: list[Path], done: dict[Path, ImageResult], fresh: Iterator[Outcome]):
    # Ray decodes in its read tasks and ships only results back: its overlays read the image again
    redraw = job.overlay if job.cluster is not None else None
    for path in files:
        outcome = done.get(path) or next(fresh, None)
        if outcome is None:  # the session stopped after its batch: a signal asked it to
            raise RunInterrupted(job.stop.received if job.stop else "stopped")
        if path not in done and isinstance(outcome, ImageResult):
            outcome = _finish(outcome, job.store, redraw, job.measurements)
        elif job.measurements and isinstance(outcome, ImageResult) and outcome.measurements is None:
            outcome.measurements = measure(outcome, min_confidences(job.anatomy, job.min_confidence))  # reused
        yield outcome


def _finish(result: ImageResult, store: ResultStore, overlay: Path | None, measurements: bool = False) -> Outcome:
    """Write a fresh result's per-image files; the JSON comes last, as the mark that all are done. ``overlay`` is
    given only where the image must be read again to draw it (Ray): one that changed or vanished by then becomes
    that input's failure."""
    if overlay is not None:
        decorate = measurement_drawer(result) if measurements else None
        try:
            write_overlay(read_image(result.path), result, store.path(result.path, ".png", overlay), decorate)
        except InputError as error:
            return ImageFailure(result.path, str(error))
    if store.out_dir is not None:
        store.save(result)
    return result


def _overlay_writer(store: ResultStore, overlay: Path, measurements: bool) -> Callable[[XrayImage, ImageResult], None]:
    """The session's overlay sink: draws from the image it decoded for the network, so no file is read twice
    (with the measurements' lines when asked: the session measured the result before handing it over)."""

    def draw(xray: XrayImage, result: ImageResult) -> None:
        decorate = measurement_drawer(result) if measurements else None
        write_overlay(xray, result, store.path(result.path, ".png", overlay), decorate)

    return draw


def _heatmap_writer(store: ResultStore, directory: Path) -> Callable[[Path, np.ndarray], None]:
    def write(path: Path, heatmaps: np.ndarray) -> None:
        with atomic_path(store.path(path, "", directory).with_suffix(".npy")) as tmp, open(tmp, "wb") as handle:
            np.save(handle, heatmaps.astype(np.float32))

    return write
