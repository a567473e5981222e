"""The bench report as people read it: a rich table, a markdown file and a PNG plot, all from one row layout."""

from __future__ import annotations

import textwrap
from pathlib import Path

from rich.table import Table

from landmark_edge.bench.results import BenchReport, BenchRow
from landmark_edge.io.atomic import atomic_path, atomic_write_text
from landmark_edge.runtime.backend import STAGES

COLUMNS = (
    "backend", "ran", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "img/s", "img/s x ref", "p50 x ref",
    *(f"{stage} ms" for stage in STAGES), "peak GPU MiB", "drift max px", "drift mean px", "drift max mm",
    "drift mean mm", "heatmap max diff", "flagged",
)  # fmt: skip
# The terminal table keeps what fits a screen; the markdown and JSON carry every column.
TERMINAL_COLUMNS = ("backend", "ran", "batch", "p50 ms", "p99 ms", "img/s", "img/s x ref", "p50 x ref", "compute ms",
                    "peak GPU MiB", "drift max px", "drift mean px", "heatmap max diff", "flagged")  # fmt: skip


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row_cells(row: BenchRow) -> list[str]:
    """One measured row as text, in :data:`COLUMNS` order (the table and the markdown share it)."""
    latency, drift = row.latency_ms, row.drift
    return [
        row.label,
        row.run.precision if row.run else "-",  # what ran (OpenVINO: read back from its runtime graph)
        str(row.batch_size),
        *(_number(getattr(latency, key)) for key in ("p50", "p90", "p99", "mean")),
        _number(row.throughput_ips, 1),
        _number(row.throughput_vs_reference),
        _number(row.p50_speedup_vs_reference),
        *(_number(row.stages_ms.get(stage), 3) for stage in STAGES),
        _number(row.peak_gpu_memory_mb, 0),
        *(_number(getattr(drift, key), 3) for key in ("max_px", "mean_px", "max_mm", "mean_mm")),
        _number(drift.max_heatmap_diff, 4) if drift else "-",
        "-" if row.flagged is None else str(row.flagged),
    ]


def _not_measured(report: BenchReport) -> list[str]:
    return [
        f"{row.label}{'' if row.batch_size is None else f' (batch {row.batch_size})'}: {row.status}, {row.reason}"
        for row in report.rows
        if row.status != "ok"
    ]


def _header_lines(report: BenchReport) -> list[str]:
    env = report.environment
    device = env.gpu or env.cpu
    return [
        f"command: {report.command}",
        f"device: {report.device} ({device}); CPU {env.cpu}, {env.cpu_cores} cores, torch threads {env.torch_threads}",
        f"GPU driver {env.gpu_driver or '-'}, CUDA {env.cuda or '-'}, cuDNN {env.cudnn or '-'}, torch {env.torch}"
        + "".join(f", {library} {version or '-'}" for library, version in env.libraries.items() if library != "torch"),
        f"landmark-edge {env.landmark_edge} ({env.git_commit or 'no git'}), python {env.python}, {env.platform}",
        f"reference: {report.reference}; {report.anatomy}, decode {report.decode}, {len(report.images)} images, "
        f"{report.warmup} warm-up + {report.iters} timed batches per row, weights sha256 "
        f"{report.weights_sha256[:12]}; {report.created}",
    ]


def rich_table(report: BenchReport) -> Table:
    table = Table(title=f"landmark-edge bench: {report.anatomy}", title_justify="left",
                  caption="\n".join(_header_lines(report) + _not_measured(report)), caption_justify="left")
    keep = [COLUMNS.index(column) for column in TERMINAL_COLUMNS]
    for column in TERMINAL_COLUMNS:
        table.add_column(column, justify="left" if column == "backend" else "right")
    for row in report.rows:
        if row.status == "ok":
            cells = row_cells(row)
            table.add_row(*(cells[i] for i in keep))
    return table


def to_markdown(report: BenchReport) -> str:
    env = report.environment
    lines = [f"# landmark-edge bench: {report.anatomy} on {env.gpu or env.cpu}", ""]
    lines += [f"- {line}" for line in _header_lines(report)]
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(row_cells(row)) + " |" for row in report.rows if row.status == "ok"]
    skipped = _not_measured(report)
    if skipped:
        lines += ["", "Not measured:", ""] + [f"- {line}" for line in skipped]
    lines += ["", "Latency: one batch from resized host pixels to landmarks on the host (upload, normalise, network, "
              "decode, copy back); preprocess (read + resize, single-threaded CPU time) runs on worker threads in "
              "the pipeline and is not part of it. Drift: landmark shift against the reference on the same images, "
              "in original-image pixels (and mm where the spacing is known). Flagged: images whose finished result "
              "carries a flag (weak peaks, an implausible layout or geometry), as `infer` flags them."]
    return "\n".join(lines) + "\n"


def plot(report: BenchReport, path: Path) -> None:
    """p50 latency and throughput against batch size, one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency_axis, throughput_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = list(dict.fromkeys(row.label for row in report.rows if row.status == "ok"))
    batch_sizes = sorted({row.batch_size for row in report.rows if row.status == "ok"})
    for label in labels:
        rows = sorted((r for r in report.rows if r.label == label and r.status == "ok"), key=lambda r: r.batch_size)
        sizes = [r.batch_size for r in rows]
        short = textwrap.shorten(label, 70, placeholder=" [...]")
        latency_axis.plot(sizes, [r.latency_ms.p50 for r in rows], marker="o", label=short)
        throughput_axis.plot(sizes, [r.throughput_ips for r in rows], marker="o", label=short)
    for axis, ylabel in ((latency_axis, "p50 latency per batch (ms)"), (throughput_axis, "throughput (images/s)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(batch_sizes, [str(size) for size in batch_sizes])
        axis.set_yscale("log")
        axis.set_xlabel("batch size")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    env = report.environment
    figure.suptitle(f"landmark-edge bench, {report.anatomy}: {env.gpu or env.cpu}", fontsize="medium")
    # below both panels, so no line is hidden behind it however many backends there are
    legend_rows = (len(labels) + 1) // 2
    figure.legend(*latency_axis.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize="small")
    figure.tight_layout(rect=(0, min(0.5, 0.06 * legend_rows + 0.02), 1, 1))
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def write_outputs(report: BenchReport, out_dir: Path, *, with_plot: bool = True) -> dict[str, Path]:
    """``bench.json``, ``bench.md`` and (at the end) ``bench.png`` in ``out_dir``, each written atomically."""
    paths = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md", "plot": out_dir / "bench.png"}
    atomic_write_text(paths["json"], report.model_dump_json(indent=2) + "\n")
    atomic_write_text(paths["markdown"], to_markdown(report))
    if with_plot:
        plot(report, paths["plot"])
    return paths
