"""``landmark-edge export``: one validated ONNX graph per anatomy (a thin shell over landmark_edge.export.onnx)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from landmark_edge.anatomy import ANATOMIES
from landmark_edge.commands.options import (
    AnatomyOpt,
    FormatOpt,
    ReportFormat,
    WeightsOpt,
    anatomy_or_exit,
    err_console,
    one_line_errors,
    out_console,
)
from landmark_edge.decode import DecodeMethod
from landmark_edge.export.onnx import ExportReport, export_anatomy
from landmark_edge.export.profiles import DeploymentProfile, load_profile, with_overrides
from landmark_edge.weights import read_info, resolve_weights


# --decode choices: the decoders, plus none (heatmaps only). Built from DecodeMethod so a new decoder appears here.
GraphDecode = Enum("GraphDecode", {"NONE": "none", **{m.name: m.value for m in DecodeMethod}}, type=str)


ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Deployment profile: a name in export/ (e.g. jetson-orin-nano-fp16) or a "
                 "YAML file. Command-line options override its fields."),
]  # fmt: skip


def export(
    anatomy: AnatomyOpt,
    weights: WeightsOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output .onnx (one anatomy) or folder (--anatomy all). Default: ANATOMY.onnx."),
    ] = None,
    profile: ProfileOpt = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (17-23). Default: the profile's, else 18.")] = None,
    decode: Annotated[
        GraphDecode | None,
        typer.Option(help="Decode landmarks in the graph (outputs landmarks + confidence beside heatmaps)."),
    ] = None,
    simplify: Annotated[bool | None, typer.Option(help="Simplify with onnxslim (default: yes).")] = None,
    onnx_precision: Annotated[
        str | None,
        typer.Option(help="fp32, or int8: quantize the graph for ONNX Runtime's CPU provider (needs --calibration)."),
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Folder or glob of real X-rays to calibrate int8 on (overrides the profile).")
    ] = None,
    images: Annotated[
        list[Path] | None,
        typer.Option("--images", "-i", help="Real X-rays to validate on (repeat). Default: the bundled example."),
    ] = None,
    output_format: FormatOpt = ReportFormat.TABLE,
) -> None:
    """Export GU2Net to ONNX per anatomy: BatchNorm folded, dynamic batch, simplified, checked, and validated
    against PyTorch in ONNX Runtime on real images (fails if any heatmap differs by more than 1e-4)."""
    every = anatomy.strip().lower() == "all"
    names = list(ANATOMIES) if every else [anatomy_or_exit(anatomy).name]
    reports: list[ExportReport] = []
    with one_line_errors():
        if every:
            names = _fit_anatomies(resolve_weights(weights))
        settings = load_profile(profile) if profile else DeploymentProfile()
        settings = with_overrides(
            settings, profile or "defaults", opset=opset, simplify=simplify, onnx_precision=onnx_precision,
            calibration_images=calibration,
        )  # fmt: skip
        quantize = settings.calibration if settings.onnx_precision == "int8" else None
        method = settings.decode if decode is None else None if decode is GraphDecode.NONE else DecodeMethod(decode)
        weights_path = resolve_weights(weights)
        for name in names:
            target = _target(out, name, multiple=len(names) > 1)
            with err_console.status(f"{name}: starting") as status:
                reports.append(
                    export_anatomy(
                        weights_path, name, target, opset=settings.opset, decode=method, simplify=settings.simplify,
                        images=list(images or ()), calibration=quantize, step=lambda text, n=name: status.update(f"{n}: {text}"),
                    )
                )  # fmt: skip
    _print(reports, output_format is ReportFormat.JSON)


def _fit_anatomies(weights: Path) -> list[str]:
    """``-a all``: every anatomy of the weights except those its header marks unfit (each skip said in a note)."""
    info = read_info(weights)
    for entry in info.anatomies:
        if entry.fit_for_use is False:
            err_console.print(f"note: {entry.name} skipped: {weights} marks it unfit ({entry.assessment})",
                              markup=False, highlight=False)  # fmt: skip
    return [entry.name for entry in info.anatomies if entry.fit_for_use is not False]


def _target(out: Path | None, anatomy: str, multiple: bool) -> Path:
    if out is None:
        return Path(f"{anatomy}.onnx")
    return out / f"{anatomy}.onnx" if multiple or out.is_dir() else out


def _print(reports: list[ExportReport], as_json: bool) -> None:
    if as_json:
        rows = [
            {"anatomy": r.anatomy, "path": str(r.path), "opset": r.opset, "decode": r.decode and r.decode.value,
             "nodes": r.nodes, "max_abs_diff": r.validation.max_abs_diff,
             "int8_drift_px": r.validation.int8_drift_px}
            for r in reports
        ]  # fmt: skip
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="ONNX export (ONNX Runtime CPU vs PyTorch, real images)")
    for column in ("anatomy", "file", "opset", "decode", "nodes", "max |diff| heatmaps", "batches", "int8 drift px"):
        table.add_column(column)
    for r in reports:
        drift = "-" if r.validation.int8_drift_px is None else f"{r.validation.int8_drift_px:.3f}"
        table.add_row(r.anatomy, str(r.path), str(r.opset), r.decode.value if r.decode else "-", str(r.nodes),
                      f"{r.validation.worst_heatmap_diff:.2e}", ", ".join(map(str, r.validation.batch_sizes)),
                      drift)  # fmt: skip
    out_console().print(table)
