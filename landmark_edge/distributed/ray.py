"""Landmark detection over an archive on a Ray cluster (Ray Data batch inference with an actor pool).

The same work as :class:`landmark_edge.runtime.pipeline.InferenceSession`, spread over a cluster: the listed
paths become a Ray Dataset, reading and resizing (:func:`~landmark_edge.runtime.pipeline.prepare`) run as CPU
tasks, and the network runs in a pool of actors, each holding one backend built by the caller's factory (one actor
per GPU, or N CPU actors). Every stage is the single-machine code: the same reader, the same grid pixels stacked
the same way, the same backend and the session's own :meth:`~landmark_edge.runtime.pipeline.InferenceSession.
finish`, so results, flags included, are those of the single-machine path. Outcomes stream back to the driver in
input order, where the caller writes them as it does on one machine (per-image JSON, overlays, aggregate
output): ``--skip-existing`` resumes a cluster run from the same files.

A bad file is an :class:`~landmark_edge.results.ImageFailure` row that rides through the actors untouched. An
actor that dies mid-batch is restarted and its batch retried: Ray Data creates its pool actors with
``max_restarts=-1, max_task_retries=-1`` (passing them ourselves is deprecated since Ray 2.60); results the
driver already received are written by then, so nothing finished is lost.

Ray is optional (``pip install "landmark-edge[ray]"``) and imported only here, only when this executor runs.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from landmark_edge.anatomy import Anatomy
from landmark_edge.errors import LandmarkEdgeError, first_line
from landmark_edge.io.xray import ImageHeader
from landmark_edge.results import ImageFailure, ImageResult, Outcome
from landmark_edge.runtime.backend import STAGES, Backend
from landmark_edge.runtime.pipeline import InferenceSession, prepare

# What one read task may hold (a 4300x4300 16-bit film decoded, converted and resized): Ray schedules no more
# readers on a node than its memory allows. Differing from the actors' resources, it also keeps Ray from fusing
# reading into the network actors: reading runs as CPU tasks beside them, not in their process between batches.
READ_MEMORY = 256 * 2**20
RAY_MISSING = 'the ray executor needs Ray: pip install "landmark-edge[ray]"'


class RayUnavailable(LandmarkEdgeError):
    """Ray is not installed, or the cluster cannot be reached; the message says which."""


@dataclass(frozen=True)
class RaySettings:
    """Where to run and how wide: ``address`` is ``local`` (an in-process cluster) or a cluster's address."""

    address: str = "local"
    actors: int | None = None  # None: one per GPU on the cluster for GPU devices, one CPU actor otherwise
    gpu: bool = False  # each actor holds one GPU (``--device cuda``/``tensorrt``)


@dataclass
class RunSummary:
    """Counts and stage times of a run; stage times are summed over all workers (CPU/GPU seconds, not wall)."""

    images: int = 0
    failures: int = 0
    stages_ms: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add(self, row: dict) -> None:
        self.images += 1
        self.failures += not row["ok"]
        for name, value in json.loads(row["stages_ms"]).items():
            self.stages_ms[name] = self.stages_ms.get(name, 0.0) + value

    def line(self) -> str:
        seconds = time.perf_counter() - self.started
        stages = ", ".join(
            f"{name} {self.stages_ms[name] / 1e3:.1f} s" for name in STAGES if self.stages_ms.get(name)
        )
        return (
            f"ray: {self.images} images, {self.failures} failed in {seconds:.1f} s "
            f"({self.images / max(seconds, 1e-9):.2f} images/s); time summed over workers: {stages}"
        )


def ray_inference(
    paths: Iterable[Path],
    anatomy: Anatomy,
    make_backend: Callable[[], Backend],
    settings: RaySettings,
    *,
    batch_size: int = 8,
    spacing_mm: float | None = None,
    min_confidence: float | None = None,
    measurements: bool = False,
    heatmap_sink=None,
    log: Callable[[str], None] = print,
) -> Iterator[Outcome]:
    """Yield one finished outcome per path, in order, computed on the cluster; ``log`` gets the summary line at
    the end.

    ``make_backend`` is called once in each actor (it must pickle: a ``functools.partial`` of
    :func:`landmark_edge.backends.open_backend` does). Ray is started or joined here, before the first outcome is
    asked for, so a missing Ray or an unreachable cluster is reported before any output is opened.
    """
    paths = list(paths)
    if not paths:  # every result reused (--skip-existing): no cluster needed
        return iter(())
    ray, started = connect(settings.address)
    finishing = (spacing_mm, min_confidence, measurements, heatmap_sink is not None)
    dataset = _dataset(ray, paths, anatomy, make_backend, settings, batch_size, finishing)
    return _stream(ray, dataset, len(paths), heatmap_sink, log, shutdown=started)


def connect(address: str = "local", num_cpus: int | None = None):
    """Ray, and whether this call started it (so must stop it): ``local`` starts an in-process cluster of
    ``num_cpus`` (default: all), anything else joins that cluster; a process already joined to one keeps it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(RAY_MISSING) from None
    if ray.is_initialized():  # a caller (a notebook, the tests) already joined a cluster: use it
        return ray, False
    try:
        ray.init(
            address=address,  # "local" always starts a new cluster, never joins one found on the machine
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,  # worker output would interleave with our progress bar and error lines
            logging_level="ERROR",
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RayUnavailable(f"cannot start or join the Ray cluster at {address}: {first_line(error)}") from None
    return ray, True


def _dataset(ray, paths, anatomy, make_backend, settings, batch_size, finishing):
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # outcomes in input order, as on one machine
    context.enable_progress_bars = False  # the caller shows one bar (its own), not Ray's as well
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its "progress bars disabled", "finished" lines
    rows = [{"path": str(path)} for path in paths]
    gpu = {"num_gpus": 1} if settings.gpu else {}
    return (
        ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
        .map(_prepare_row, fn_args=(anatomy,), memory=READ_MEMORY)
        .map_batches(
            _Predictor,
            fn_constructor_args=(make_backend, anatomy, *finishing),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=_actor_count(ray, settings)),
            **gpu,
        )
    )


def _actor_count(ray, settings: RaySettings) -> int:
    if settings.actors is not None:
        return settings.actors
    if not settings.gpu:
        return 1
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus == 0:
        raise RayUnavailable("the Ray cluster has no GPUs: run --device cpu there, or join a cluster with GPUs")
    return gpus


def _prepare_row(row: dict, anatomy: Anatomy) -> dict:
    """Read and resize one image (a CPU task): grid pixels as ``.npy`` bytes (any dtype), or the failure."""
    start = time.perf_counter()
    item = prepare(Path(row["path"]), anatomy)
    prepared = {"preprocess": (time.perf_counter() - start) * 1e3}
    if isinstance(item, ImageFailure):
        return {
            "path": row["path"], "error": item.error, "pixels": b"", "header": "", "stages_ms": json.dumps(prepared)
        }
    header = {"size": item.header.size, "spacing_mm": item.header.spacing_mm,
              "spacing_source": item.header.spacing_source}
    return {
        "path": row["path"], "error": "", "pixels": _npy(item.pixels), "header": json.dumps(header),
        "stages_ms": json.dumps(prepared),
    }  # fmt: skip


class _Predictor:
    """One actor: builds its backend once, then turns batches of prepared rows into finished outcomes (JSON text).

    A backend that cannot be built (no artefact, no GPU, ...) would fail the same way in every restarted actor:
    each row then carries the reason, and the driver stops the run with that one line.
    """

    def __init__(
        self, make_backend, anatomy: Anatomy, spacing_mm: float | None, min_confidence: float | None,
        measurements: bool, heatmaps: bool,
    ) -> None:  # fmt: skip
        self.heatmaps = heatmaps
        self.unusable = ""
        try:
            self.backend = make_backend()
            self.session = InferenceSession(anatomy, self.backend, spacing_mm=spacing_mm, min_confidence=min_confidence,
                                            measurements=measurements)  # fmt: skip
        except LandmarkEdgeError as error:
            self.unusable = str(error)
        except Exception as error:  # noqa: BLE001 - a library's own failure, reported the same way
            self.unusable = f"cannot build the backend ({type(error).__name__}: {first_line(error)})"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(batch["path"])
        good = [i for i in range(count) if not batch["error"][i] and not self.unusable]
        outcomes: dict[int, Outcome] = {
            i: ImageFailure(path=str(batch["path"][i]), error=str(batch["error"][i]))
            for i in range(count)
            if i not in good
        }
        stages = [json.loads(text) for text in batch["stages_ms"]]
        heatmaps = [b""] * count
        if good:  # the good images stacked as the single-machine pipeline stacks them
            pixels = np.stack([np.load(io.BytesIO(batch["pixels"][i])) for i in good])
            prediction, timing = self.backend.run_timed(pixels, return_heatmaps=self.heatmaps)
            for position, i in enumerate(good):
                outcomes[i] = self.session.finish(_header(batch, i), prediction, position)
                stages[i].update({name: ms / len(good) for name, ms in timing.stages_ms.items()})
                if self.heatmaps:
                    heatmaps[i] = _npy(prediction.heatmaps[position])
        return {
            "ok": np.array([outcomes[i].ok for i in range(count)]),
            "outcome": np.array([json.dumps(outcomes[i].to_dict()) for i in range(count)], dtype=object),
            "stages_ms": np.array([json.dumps(stage) for stage in stages], dtype=object),
            "heatmaps": np.array(heatmaps, dtype=object),
            "unusable": np.array([self.unusable] * count, dtype=object),
        }


def _header(batch, i: int) -> ImageHeader:
    values = json.loads(batch["header"][i])
    spacing = None if values["spacing_mm"] is None else tuple(values["spacing_mm"])
    return ImageHeader(Path(batch["path"][i]), tuple(values["size"]), spacing, values["spacing_source"])


def _npy(array: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes: one binary column carries any dtype and shape (Arrow tensors need one)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _stream(ray, dataset, total: int, heatmap_sink, log, shutdown: bool) -> Iterator[Outcome]:
    """Outcomes as rows arrive. The caller asks for exactly ``total`` and never for the end of the stream, so the
    summary is logged and a cluster started here stopped once the last row is in, before it is handed over."""
    summary = RunSummary()
    try:
        for row in _rows(dataset):
            if row["unusable"]:
                raise RayUnavailable(f"ray executor: {row['unusable']}")
            outcome = _outcome(json.loads(row["outcome"]))
            if heatmap_sink is not None and row["heatmaps"]:
                heatmap_sink(Path(outcome.path), np.load(io.BytesIO(row["heatmaps"])))
            summary.add(row)
            if summary.images == total:
                _stop(ray, shutdown)
                log(summary.line())
            yield outcome
    finally:
        _stop(ray, shutdown)


def _stop(ray, shutdown: bool) -> None:
    if shutdown and ray.is_initialized():
        ray.shutdown()


def _rows(dataset) -> Iterator[dict]:
    """The dataset's rows; a failure of the cluster itself (lost nodes, no retries left) as one line, no traceback."""
    try:
        yield from dataset.iter_rows()
    except LandmarkEdgeError:
        raise
    except Exception as error:  # noqa: BLE001 - Ray wraps the worker's error in its own types
        cause = error
        while cause.__cause__ is not None and not isinstance(cause, LandmarkEdgeError):
            cause = cause.__cause__
        raise RayUnavailable(f"ray executor: {type(cause).__name__}: {first_line(cause)}") from None


def _outcome(values: dict) -> Outcome:
    if values["ok"]:
        return ImageResult.from_dict(values)
    return ImageFailure(**values)
