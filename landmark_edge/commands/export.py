"""``landmark-edge export``: one validated ONNX graph per anatomy (a thin shell over landmark_edge.export.onnx)."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    warning_line,
)
from landmark_edge.decode import DecodeMethod
from landmark_edge.export.onnx import ExportReport, export_anatomy
from landmark_edge.export.profiles import DeploymentProfile, load_profile, with_overrides
from landmark_edge.weights import read_info, resolve_weights

if TYPE_CHECKING:
    from landmark_edge.export.openvino import IrReport


# --decode choices: the decoders, plus none (heatmaps only). Built from DecodeMethod so a new decoder appears here.
ArtifactFormat = Enum("ArtifactFormat", {"ONNX": "onnx", "OPENVINO": "openvino"}, type=str)
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
    to: Annotated[
        ArtifactFormat | None,
        typer.Option("--to", help="Artifact: onnx, or openvino (an IR, MODEL.xml + MODEL.bin). Default: the "
                     "profile's format, else onnx."),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="--to openvino: fp32 (exact, checked within 1e-4 of PyTorch), bf16 (a hint in the IR) or "
                     "int8 (NNCF bounded by landmark drift; needs --calibration and --validation). Default: the "
                     "profile's."),
    ] = None,
    validation: Annotated[
        Path | None,
        typer.Option(help="--to openvino int8: folder or glob of validation X-rays (never test images) the drift "
                     "bound is checked on (overrides the profile)."),
    ] = None,
    max_drift: Annotated[
        float | None,
        typer.Option(min=0.0, help="--to openvino int8: the largest landmark move allowed from fp32 on --validation, "
                     "in the anatomy's unit (chest px, head and hand mm). Default: the profile's, else chest 1 px, "
                     "head and hand 0.5 mm."),
    ] = None,
    images: Annotated[
        list[Path] | None,
        typer.Option("--images", "-i", help="Real X-rays to validate on (repeat). Default: the bundled example."),
    ] = None,
    output_format: FormatOpt = ReportFormat.TABLE,
) -> None:
    """Export GU2Net to ONNX per anatomy: BatchNorm folded, dynamic batch, simplified, checked, and validated
    against PyTorch in ONNX Runtime on real images (fails if any heatmap differs by more than 1e-4). --to openvino
    writes an OpenVINO IR instead (fp32 checked the same way on the saved IR; bf16 and int8 report their landmark
    drift from fp32; pip install 'landmark-edge[openvino-export]')."""
    every = anatomy.strip().lower() == "all"
    names = list(ANATOMIES) if every else [anatomy_or_exit(anatomy).name]
    reports: list[ExportReport] = []
    with one_line_errors():
        if every:
            names = _fit_anatomies(resolve_weights(weights))
        settings = load_profile(profile) if profile else DeploymentProfile()
        settings = with_overrides(
            settings, profile or "defaults", opset=opset, simplify=simplify, onnx_precision=onnx_precision,
            calibration_images=calibration, format=to and to.value, precision=precision,
            validation_images=validation, max_drift=max_drift,
        )  # fmt: skip
        quantize = settings.calibration if settings.onnx_precision == "int8" else None
        method = settings.decode if decode is None else None if decode is GraphDecode.NONE else DecodeMethod(decode)
        weights_path = resolve_weights(weights)
        if settings.format == "openvino":
            ir_reports = [_export_ir(weights_path, name, _target(out, name, len(names) > 1, ".xml"), settings, method,
                                     list(images or ())) for name in names]  # fmt: skip
            _print_ir(ir_reports, output_format is ReportFormat.JSON)
            return
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


def _target(out: Path | None, anatomy: str, multiple: bool, suffix: str = ".onnx") -> Path:
    if out is None:
        return Path(f"{anatomy}{suffix}")
    return out / f"{anatomy}{suffix}" if multiple or out.is_dir() else out


def _export_ir(weights: Path, name: str, target: Path, settings: DeploymentProfile, decode: DecodeMethod | None,
               images: list[Path]) -> IrReport:  # fmt: skip
    """One anatomy's OpenVINO IR (imported here: OpenVINO and NNCF are optional extras)."""
    from landmark_edge.export.openvino import export_ir

    with err_console.status(f"{name}: starting") as status:
        report = export_ir(
            weights, name, target, precision=settings.precision, opset=settings.opset, decode=decode,
            simplify=settings.simplify, images=images, calibration=settings.calibration,
            control=settings.accuracy_control, step=lambda text: status.update(f"{name}: {text}"),
        )  # fmt: skip
    if report.int8 is not None and not report.int8.met:  # saved (it may still serve), but never silently over
        warning_line(f"{report.path}: landmarks on the validation images move up to {report.int8.final_drift:.3g} "
                     f"{report.unit}, over the bound of {report.int8.max_drift:g} {report.unit}, after "
                     f"{settings.accuracy_control.max_iterations} accuracy-control iterations; use this int8 IR "
                     "only if that is acceptable, or keep fp32")  # fmt: skip
    return report


def _print_ir(reports: list[IrReport], as_json: bool) -> None:
    rows = [
        {"anatomy": r.anatomy, "path": str(r.path), "precision": r.precision, "decode": r.decode and r.decode.value,
         "max_abs_diff": r.validation.max_abs_diff, "drift": r.drift, "unit": r.unit,
         "int8": None if r.int8 is None else dataclasses.asdict(r.int8)}
        for r in reports
    ]  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="OpenVINO IR export (the saved IR in OpenVINO vs PyTorch, real images)")
    for column in ("anatomy", "file", "precision", "max |diff| heatmaps", "drift from fp32", "float layers"):
        table.add_column(column)
    for r in reports:
        drift = "-" if r.drift is None else f"{r.drift:.3f} {r.unit}"
        kept = "-" if r.int8 is None else f"{len(r.int8.float_layers)} ({r.int8.quantized} int8)"
        table.add_row(r.anatomy, str(r.path), r.precision, f"{r.validation.worst_heatmap_diff:.2e}", drift, kept)
    out_console().print(table)


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
