"""``landmark-edge build``: a TensorRT engine from an exported ONNX graph (a thin shell over export.tensorrt)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from landmark_edge.commands.export import ProfileOpt
from landmark_edge.commands.options import (
    FormatOpt,
    ReportFormat,
    err_console,
    one_line_errors,
)
from landmark_edge.export.profiles import DeploymentProfile, load_profile, with_overrides
from landmark_edge.export.tensorrt import BuildReport, build_engine


class RichBuildProgress:
    """TensorRT's build phases (IProgressMonitor) as nested rich progress bars."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def phase_start(self, phase: str, parent: str | None, steps: int) -> None:
        indent = "  " if parent else ""
        self.tasks[phase] = self.progress.add_task(f"{indent}{phase}", total=max(steps, 1))

    def step_complete(self, phase: str, step: int) -> None:
        if phase in self.tasks:
            self.progress.update(self.tasks[phase], completed=step + 1)

    def phase_finish(self, phase: str) -> None:
        task = self.tasks.pop(phase, None)
        if task is not None:
            self.progress.remove_task(task)


def build(
    onnx_file: Annotated[Path, typer.Argument(help="ONNX graph from `landmark-edge export`.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Engine file. Default: MODEL.PRECISION.engine.")] = None,
    profile: ProfileOpt = None,
    precision: Annotated[str | None, typer.Option(help="fp32, fp16, bf16, int8 or fp8 (int8/fp8: Q/DQ from "
                                                  "--calibration images).")] = None,  # fmt: skip
    min_batch: Annotated[int | None, typer.Option(help="Optimization profile: smallest batch.")] = None,
    opt_batch: Annotated[int | None, typer.Option(help="Optimization profile: batch tuned for.")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Optimization profile: largest batch.")] = None,
    workspace_mib: Annotated[int | None, typer.Option(help="Builder workspace limit in MiB.")] = None,
    optimization_level: Annotated[int | None, typer.Option(help="Builder optimization level 0-5.")] = None,
    timing_cache: Annotated[Path | None, typer.Option(help="Timing cache file, read and updated (speeds rebuilds).")] = None,
    calibration: Annotated[Path | None, typer.Option(help="Calibration images (folder or glob) for int8/fp8.")] = None,
    dla_core: Annotated[int | None, typer.Option(help="Run on this DLA core (Jetson), GPU fallback per profile.")] = None,
    output_format: FormatOpt = ReportFormat.TABLE,
) -> None:
    """Build a TensorRT 10.x/11.x engine for this machine's GPU from an exported ONNX graph and a deployment
    profile; the engine file starts with a JSON header that the runtime checks before loading."""
    with one_line_errors():
        settings = load_profile(profile) if profile else DeploymentProfile()
        settings = with_overrides(
            settings, profile or "defaults", precision=precision, batch_min=min_batch, batch_opt=opt_batch,
            batch_max=max_batch, workspace_mib=workspace_mib, optimization_level=optimization_level,
            timing_cache=timing_cache, calibration_images=calibration, dla_core=dla_core,
        )  # fmt: skip
        target = out or onnx_file.with_suffix(f".{settings.precision}.engine")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err_console, transient=True) as progress:
            status = progress.add_task("starting", total=None)
            report = build_engine(
                onnx_file, target, settings, progress=RichBuildProgress(progress),
                step=lambda text: progress.update(status, description=text),
            )  # fmt: skip
    _print(report, output_format is ReportFormat.JSON)


def _print(report: BuildReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"path": str(report.path), "engine_bytes": report.engine_bytes,
                               "header": report.header.model_dump(mode="json")}, indent=2))  # fmt: skip
        return
    h = report.header
    typer.echo(
        f"{report.path}: {h.anatomy} {h.precision} engine, batch {h.batch[0]}-{h.batch[2]} (opt {h.batch[1]}), "
        f"TensorRT {h.tensorrt_version} on {h.gpu_name} ({h.compute_capability}), {report.engine_bytes / 2**20:.1f} MiB"
    )
