"""The bench report's schema (pydantic): what ``bench.json`` holds, and what the table and plot are drawn from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from landmark_edge.contracts import RunInfo

FORMAT = "landmark-edge-bench"
FORMAT_VERSION = 1


class LatencyStats(BaseModel):
    """Per-batch latency in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float


class Drift(BaseModel):
    """Accuracy drift against the reference on the same real images (landmarks in original-image space)."""

    images: int
    max_px: float
    mean_px: float
    max_mm: float | None = None  # None where the images have no physical spacing (chest)
    mean_mm: float | None = None
    max_heatmap_diff: float | None = None  # None where the backend does not return heatmaps


class BenchRow(BaseModel):
    """One backend at one precision and batch size; ``skipped``/``failed`` rows say why in ``reason``."""

    label: str
    backend: str
    precision: str
    options: dict[str, object] = {}
    artifact: str | None = None  # the exported file this backend ran (--artifact NAME:PATH)
    batch_size: int | None = None  # None for a backend skipped before any batch size ran
    status: Literal["ok", "skipped", "failed"] = "ok"
    reason: str | None = None
    is_reference: bool = False
    iters: int = 0
    latency_ms: LatencyStats | None = None
    throughput_ips: float | None = None
    # Mean per batch. preprocess = CPU decode + resize of the batch's images, single-threaded (the pipeline
    # overlaps it on worker threads, so it is not part of latency); the others are the backend's own stages.
    stages_ms: dict[str, float] = {}
    peak_gpu_memory_mb: float | None = None
    drift: Drift | None = None
    # Images of the drift pass whose finished result is flagged (weak peaks, an implausible layout or geometry),
    # set as for `infer`: a backend that flags more images than the reference has drifted where it matters.
    flagged: int | None = None
    throughput_vs_reference: float | None = None  # this row's images/s / the reference's at the same batch size
    p50_speedup_vs_reference: float | None = None  # the reference's p50 / this row's p50 at the same batch size
    run: RunInfo | None = None  # what the row measured (the backend's run record, as infer's results carry it)


class Environment(BaseModel):
    """The machine and library versions the numbers were measured with."""

    host: str
    platform: str
    python: str
    cpu: str
    cpu_cores: int
    torch_threads: int
    gpu: str | None = None
    gpu_driver: str | None = None
    cuda: str | None = None
    cudnn: str | None = None
    torch: str
    # Each registered backend's library (its capability entry names it) and its version; None: not installed.
    libraries: dict[str, str | None] = {}
    landmark_edge: str
    git_commit: str | None = None


class BenchReport(BaseModel):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    created: str  # UTC, ISO 8601
    command: str  # the command that reproduces this run
    argv: list[str]  # the process's own arguments, as given
    anatomy: str
    device: str
    decode: str
    weights: str
    weights_sha256: str
    images: list[str]
    iters: int
    warmup: int
    reference: str  # what every ratio and drift is measured against
    environment: Environment
    rows: list[BenchRow] = []

    def reference_rows(self) -> dict[int, BenchRow]:
        return {r.batch_size: r for r in self.rows if r.is_reference and r.status == "ok"}
