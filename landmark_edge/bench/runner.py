"""The bench loop: the reference first, then every requested backend, each at every batch size, same process.

Per row: one pass over the real images through an :class:`~landmark_edge.runtime.pipeline.InferenceSession`, the
one every caller gets its results from, heatmaps kept (accuracy drift against the reference and how many images
come out flagged; it also warms the backend up), ``warmup`` more batches, then ``iters`` timed batches of the same
pixels straight through :meth:`Backend.run_timed` (a benchmark times the backend, not the reading). A backend
that cannot be built here (:class:`BackendUnavailable`, a missing library) is a *skipped* row with the reason; one
that breaks while running (out of memory, an engine error) is a *failed* row; neither stops the others.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from landmark_edge.anatomy import Anatomy
from landmark_edge.backends import open_backend
from landmark_edge.bench.environment import collect_environment
from landmark_edge.bench.results import BenchReport, BenchRow
from landmark_edge.bench.stats import heatmap_difference, landmark_drift, latency_stats, throughput
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import InputError
from landmark_edge.io.images import resolve_spacing
from landmark_edge.results import ImageFailure
from landmark_edge.runtime.backend import STAGES, Backend
from landmark_edge.runtime.pipeline import InferenceSession, Prepared, prepare
from landmark_edge.runtime.registry import BackendChoice, BackendUnavailable
from landmark_edge.transforms import grid_to_original
from landmark_edge.weights import file_sha256

REFERENCE_BACKEND, REFERENCE_PRECISION = "torch", "fp32"
REFERENCE = "eager torch fp32, TF32 off"


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Exact fp32 for the reference: PyTorch lets cuDNN convolutions use TF32 (10-bit mantissa) by default on
    Ampere and later, which would both flatter the reference's speed and blur the drift every backend is held to."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@dataclass
class BenchSpec:
    """One backend to measure: the backend arguments of one row group (backend, precision, artifact, options)."""

    choice: BackendChoice

    @property
    def label(self) -> str:
        choice = self.choice
        extra = ([] if choice.artifact is None else [f"artifact={choice.artifact}"]) + [
            f"{k}={v}" for k, v in choice.options.items()
        ]
        return f"{choice.backend} {choice.precision}" + (f" [{','.join(extra)}]" if extra else "")

    @property
    def is_reference(self) -> bool:
        choice = self.choice
        return (choice.backend, choice.precision, choice.options, choice.artifact) == (
            REFERENCE_BACKEND, REFERENCE_PRECISION, {}, None,
        )  # fmt: skip


def parse_specs(
    choices: list[BackendChoice],
    precisions: list[tuple[str | None, str]],
    artifacts: dict[tuple[str, str], Path] | None = None,
) -> list[BenchSpec]:
    """Every backend at every precision, minus the reference itself (it always runs first anyway).

    ``precisions`` are (backend or None, precision): a named one is tried for that backend only
    (``--precisions fp32,openvino:bf16``), so a run need not spend minutes on precisions a CPU only emulates.
    ``artifacts`` holds a precision's own file by (backend, precision) (``--artifact openvino:int8=chest.int8.xml``);
    it replaces the choice's artifact at that precision only, so one run measures a float model and a quantized one.
    """
    own = artifacts or {}
    specs = [
        BenchSpec(replace(choice, precision=p, artifact=own.get((choice.backend, p), choice.artifact)))
        for choice in choices
        for name, p in precisions
        if name in (None, choice.backend)
    ]
    return [s for s in specs if not s.is_reference]


@dataclass
class BenchConfig:
    anatomy: Anatomy
    weights: Path
    specs: list[BenchSpec]
    batch_sizes: list[int]
    images: list[Path]
    iters: int = 50
    warmup: int = 5
    device: str = "cpu"
    decode: DecodeMethod = DecodeMethod.SUBPIXEL
    command: str = ""
    argv: list[str] = field(default_factory=list)


@dataclass
class BenchImages:
    """The real images every backend sees, read and resized once (the session's own :func:`prepare`)."""

    items: list[Prepared]
    spacing_mm: np.ndarray | None  # (N, 2), or None when any image has no physical spacing
    preprocess_ms: float  # mean CPU time to read and resize one image

    @property
    def paths(self) -> list[Path]:
        return [item.header.path for item in self.items]

    def filled(self, batch_size: int) -> list[Prepared]:
        """Every image once, then the first ones again up to a whole last batch: every batch has the timed shape."""
        count = len(self.items)
        order = list(range(count)) * (batch_size // count + 2)
        return [self.items[i] for i in order[: -(-count // batch_size) * batch_size]]

    def batches(self, batch_size: int) -> list[np.ndarray]:
        """The pixels of :meth:`filled`, stacked batch by batch."""
        items = self.filled(batch_size)
        return [np.stack([item.pixels for item in items[s : s + batch_size]]) for s in range(0, len(items), batch_size)]

    def to_original(self, grid_xy: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        sizes = [item.header.size for item in self.items]
        return np.stack([grid_to_original(xy, size, grid) for xy, size in zip(grid_xy, sizes, strict=True)])


def load_images(paths: list[Path], anatomy: Anatomy) -> BenchImages:
    prepared: list[Prepared] = []
    elapsed = 0.0
    for path in paths:
        start = time.perf_counter()
        item = prepare(path, anatomy)
        elapsed += time.perf_counter() - start
        if isinstance(item, ImageFailure):
            raise InputError(item.error)
        prepared.append(item)
    if not prepared:
        raise InputError("no images to benchmark on")
    spacings = [resolve_spacing(p.header, anatomy)[0] for p in prepared]
    return BenchImages(
        items=prepared,
        spacing_mm=None if any(s is None for s in spacings) else np.asarray(spacings, dtype=np.float64),
        preprocess_ms=elapsed * 1e3 / len(prepared),
    )


@dataclass
class _Outputs:
    """A backend's predictions for every bench image: landmarks in original pixels, how many of the finished results
    carry flags, and where the backend returns heatmaps, the reference's own (one per image) or a candidate's largest
    difference from them (compared as they arrive, never kept)."""

    xy: np.ndarray
    flagged: int
    heatmaps: list[np.ndarray] | None = None
    max_heatmap_diff: float | None = None


class _GpuMemory:
    """Peak device memory of one row: torch's allocator peak, or the device-wide growth for backends (ONNX
    Runtime, TensorRT) that allocate outside torch, whichever is larger."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.baseline = self._used() if self.cuda else 0

    def _used(self) -> int:
        free, total = torch.cuda.mem_get_info(self.device)
        return total - free

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float | None:
        if not self.cuda:
            return None
        return max(torch.cuda.max_memory_allocated(self.device), self._used() - self.baseline) / 2**20


class _Bench:
    def __init__(self, config: BenchConfig, images: BenchImages, progress: Progress | None) -> None:
        self.config = config
        self.images = images
        self.progress = progress
        self.device = torch.device(config.device)
        self.reference: _Outputs | None = None

    def rows(self, spec: BenchSpec, is_reference: bool = False) -> list[BenchRow]:
        """All batch sizes of one backend (one skipped row if it cannot be built here)."""
        choice = spec.choice
        base = {"label": "reference (torch fp32)" if is_reference else spec.label, "backend": choice.backend,
                "precision": choice.precision, "options": choice.options,
                "artifact": None if choice.artifact is None else str(choice.artifact), "is_reference": is_reference}
        memory = _GpuMemory(self.device)
        try:
            with self._build_task(base["label"]) as progress:
                backend = open_backend(choice, self.config.weights, self.config.anatomy,
                                       max_batch_size=max(self.config.batch_sizes), progress=progress)
        except (BackendUnavailable, ImportError) as error:
            if is_reference:
                raise
            return [BenchRow(**base, status="skipped", reason=_one_line(error))]
        try:
            rows = []
            for batch_size in self.config.batch_sizes:
                try:
                    rows.append(self.measure(backend, batch_size, memory, base))
                except BackendUnavailable as error:
                    rows.append(BenchRow(**base, batch_size=batch_size, status="skipped", reason=_one_line(error)))
                except Exception as error:  # noqa: BLE001 - one engine's failure (OOM, bad engine) is its row's
                    if is_reference:
                        raise
                    rows.append(BenchRow(**base, batch_size=batch_size, status="failed", reason=_one_line(error)))
            return rows
        finally:
            backend.close()
            del backend
            if self.device.type == "cuda":  # hand the device memory back before the next backend is measured
                gc.collect()
                torch.cuda.empty_cache()

    def measure(self, backend: Backend, batch_size: int, memory: _GpuMemory, base: dict) -> BenchRow:
        batches = self.images.batches(batch_size)
        task = None
        if self.progress is not None:
            task = self.progress.add_task(f"{base['label']} b={batch_size}",
                                          total=len(self.images.items) + self.config.warmup + self.config.iters)
        outputs = self.predict(backend, batch_size, task)
        if self.reference is None:
            self.reference = outputs
        for index in range(self.config.warmup):
            backend.run(batches[index % len(batches)])
            self._advance(task)
        memory.reset()  # the peak of serving batches, not of the drift pass's heatmap copies
        latencies, stages = [], {name: [] for name in STAGES}
        for index in range(self.config.iters):
            _, timing = backend.run_timed(batches[index % len(batches)])
            latencies.append(timing.latency_ms)
            for name, value in timing.stages_ms.items():
                stages.setdefault(name, []).append(value)
            self._advance(task)
        stages["preprocess"] = [self.images.preprocess_ms * batch_size]
        return BenchRow(
            **base,
            batch_size=batch_size,
            iters=self.config.iters,
            latency_ms=latency_stats(latencies),
            throughput_ips=throughput(batch_size, latencies),
            stages_ms={name: float(np.mean(values)) for name, values in stages.items() if values},
            peak_gpu_memory_mb=memory.peak_mb(),
            drift=landmark_drift(self.reference.xy, outputs.xy, self.images.spacing_mm, outputs.max_heatmap_diff),
            flagged=outputs.flagged,
            run=backend.run_info(),
        )

    def predict(self, backend: Backend, batch_size: int, task) -> _Outputs:
        """Every image once through a session, in the timed batches' shapes (the fill-up's results unused)."""
        session = InferenceSession(self.config.anatomy, backend, batch_size=batch_size, keep_heatmaps=True)
        reference = None if self.reference is None else self.reference.heatmaps
        grid_xy, kept, largest, flagged, have_maps = [], [], 0.0, 0, True
        inferences = islice(session.infer(self.images.filled(batch_size)), len(self.images.items))
        for index, inference in enumerate(inferences):
            grid_xy.append(inference.grid_xy)
            flagged += bool(inference.result.flags)
            have_maps = have_maps and inference.heatmaps is not None
            if have_maps and self.reference is None:
                kept.append(inference.heatmaps)
            elif have_maps and reference is not None:
                largest = max(largest, heatmap_difference(reference[index], inference.heatmaps))
            self._advance(task)
        xy = self.images.to_original(np.stack(grid_xy), self.config.anatomy.grid)
        if self.reference is None:
            return _Outputs(xy, flagged, heatmaps=kept if have_maps else None)
        return _Outputs(xy, flagged, max_heatmap_diff=largest if have_maps and reference is not None else None)

    @contextmanager
    def _build_task(self, label: str) -> Iterator[Callable[[str], None] | None]:
        """A progress line for a backend's build (the compiled backend reports each bucket it compiles)."""
        if self.progress is None:
            yield None
            return
        task = self.progress.add_task(f"{label}: building", total=None)
        try:
            yield lambda line: self.progress.update(task, description=f"{label}: {line}")
        finally:
            self.progress.remove_task(task)

    def _advance(self, task) -> None:
        if task is not None:
            self.progress.advance(task)


def run_bench(
    config: BenchConfig,
    progress: Progress | None = None,
    on_row: Callable[[BenchReport], None] | None = None,
) -> BenchReport:
    """Measure the reference, then every spec; ``on_row(report)`` sees the report grow (for partial saves)."""
    images = load_images(config.images, config.anatomy)
    report = BenchReport(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        command=config.command,
        argv=config.argv,
        anatomy=config.anatomy.name,
        device=config.device,
        decode=config.decode.value,
        weights=str(config.weights),
        weights_sha256=file_sha256(config.weights),
        images=[str(p) for p in images.paths],
        iters=config.iters,
        warmup=config.warmup,
        reference=REFERENCE,
        environment=collect_environment(torch.device(config.device)),
    )
    bench = _Bench(config, images, progress)
    reference = BenchSpec(BackendChoice(REFERENCE_BACKEND, None, REFERENCE_PRECISION, config.device, config.decode))
    for spec, is_reference in [(reference, True)] + [(s, False) for s in config.specs]:
        with strict_fp32() if is_reference else nullcontext():
            report.rows.extend(bench.rows(spec, is_reference))
        add_ratios(report)
        if on_row is not None:
            on_row(report)
    return report


def add_ratios(report: BenchReport) -> None:
    """Every measured row against the reference at the same batch size (the reference's own rows are 1.0)."""
    references = report.reference_rows()
    for row in report.rows:
        reference = references.get(row.batch_size)
        if row.status != "ok" or reference is None:
            continue
        row.throughput_vs_reference = row.throughput_ips / reference.throughput_ips
        row.p50_speedup_vs_reference = reference.latency_ms.p50 / row.latency_ms.p50


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, ImportError):
        return f"missing library: {message or type(error).__name__}"
    if isinstance(error, BackendUnavailable):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
