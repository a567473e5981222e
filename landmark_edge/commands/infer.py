"""``landmark-edge infer``: landmarks for one or more images, as a table, JSON, CSV or JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from landmark_edge.anatomy import Anatomy
from landmark_edge.commands.options import (
    AllowFallbackOpt,
    AnatomyOpt,
    ArtifactOpt,
    BatchSizeOpt,
    DeviceOpt,
    WeightsOpt,
    anatomy_or_exit,
    err_console,
    failures_exit_code,
    one_line_errors,
)
from landmark_edge.decode import DecodeMethod
from landmark_edge.io.atomic import atomic_path, atomic_write_text
from landmark_edge.results import ImageFailure, ImageResult, Outcome, to_csv, to_json, to_jsonl_line
from landmark_edge.runtime.pipeline import run_inference
from landmark_edge.runtime.registry import BackendRequest, backend_names, create_backend
from landmark_edge.weights import resolve_weights

FORMATS = ("table", "json", "csv", "jsonl")


def infer(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, BMP, TIFF).", show_default=False)],
    anatomy: AnatomyOpt,
    weights: WeightsOpt = None,
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = "cpu",
    backend: Annotated[str, typer.Option(help=f"Inference backend: {', '.join(backend_names())}.")] = "torch",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16 (backend permitting).")] = "fp32",
    artifact: ArtifactOpt = None,
    allow_fallback: AllowFallbackOpt = False,
    decode: Annotated[
        DecodeMethod,
        typer.Option(help="argmax: integer grid peak (reference protocol); subpixel: Gaussian fit around it."),
    ] = DecodeMethod.SUBPIXEL,
    spacing: Annotated[
        float | None, typer.Option(min=0.0, help="Pixel spacing in mm (original image), overrides all others.")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)}.")] = "table",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the output here (atomically).")] = None,
    save_heatmaps: Annotated[
        Path | None, typer.Option(help="Write DIR/<stem>.npy, float32 (C, H, W) on the model grid.")
    ] = None,
) -> None:
    """Detect an anatomy's landmarks; coordinates in original pixels, and in mm where the spacing is known."""
    target = anatomy_or_exit(anatomy)
    if output_format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}", param_hint="--format")
    with one_line_errors():
        request = BackendRequest(
            resolve_weights(weights) if artifact is None else weights, target, decode, device, precision, batch_size, artifact,
            options={"allow_fallback": allow_fallback},
        )
        runner = create_backend(backend, request)
        sink = _heatmap_writer(save_heatmaps) if save_heatmaps else None
        outcomes = []
        for outcome in run_inference(images, target, runner, batch_size=batch_size, spacing_mm=spacing,
                                     heatmap_sink=sink):
            if isinstance(outcome, ImageFailure):
                err_console.print(f"[red]error:[/] {outcome.error}", markup=True, highlight=False)
            outcomes.append(outcome)
    _emit(outcomes, target, output_format, out)
    failed = sum(isinstance(o, ImageFailure) for o in outcomes)
    if failed:
        err_console.print(f"{failed} of {len(outcomes)} inputs failed")
    raise typer.Exit(failures_exit_code(failed))


def _heatmap_writer(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)

    def write(path: Path, heatmaps: np.ndarray) -> None:
        with atomic_path(directory / f"{Path(path).stem}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, heatmaps.astype(np.float32))

    return write


def _emit(outcomes: list[Outcome], anatomy: Anatomy, output_format: str, out: Path | None) -> None:
    if output_format == "table":
        console = Console(record=out is not None, width=120 if out else None)
        for outcome in outcomes:
            if isinstance(outcome, ImageResult):
                console.print(_summary(outcome, anatomy), soft_wrap=True, markup=False)
                console.print(_table(outcome))
        if out is not None:
            atomic_write_text(out, console.export_text())
        return
    text = {
        "json": lambda: to_json(outcomes),
        "csv": lambda: to_csv(outcomes),
        "jsonl": lambda: "".join(to_jsonl_line(o) for o in outcomes),
    }[output_format]()
    if out is not None:
        atomic_write_text(out, text)
    else:
        typer.echo(text, nl=False)


def _summary(result: ImageResult, anatomy: Anatomy) -> str:
    spacing = "unknown" if result.spacing_mm is None else f"{result.spacing_mm[0]:g} x {result.spacing_mm[1]:g} mm"
    return (
        f"{result.path}  [{anatomy.name}, {result.width}x{result.height} px, spacing {spacing} "
        f"({result.spacing_source}), decode {result.decode}]"
    )


def _table(result: ImageResult) -> Table:
    table = Table()
    for column in ("#", "landmark", "x px", "y px", "x mm", "y mm", "confidence"):
        table.add_column(column, justify="left" if column == "landmark" else "right")
    for lm in result.landmarks:
        mm = ("-", "-") if lm.x_mm is None else (f"{lm.x_mm:.2f}", f"{lm.y_mm:.2f}")
        table.add_row(str(lm.index), lm.name, f"{lm.x:.1f}", f"{lm.y:.1f}", *mm, f"{lm.confidence:.3f}")
    return table
