"""``landmark-edge evaluate``: MRE / STD / SDR per anatomy, reference protocol and original resolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from landmark_edge.anatomy import get_anatomy
from landmark_edge.commands.options import (
    BatchSizeOpt,
    PRECISIONS,
    DataOpt,
    DeviceOpt,
    WeightsOpt,
    WorkersOpt,
    anatomies_or_exit,
    choices,
    err_console,
    fail,
    failures_exit_code,
    one_line_errors,
    stdout_is_terminal,
)
from landmark_edge.data import SPLITS, load_split
from landmark_edge.decode import DecodeMethod
from landmark_edge.evaluation import PROTOCOLS, evaluate_split, write_overlays
from landmark_edge.export.loaders import OnnxFromWeights
from landmark_edge.io.atomic import atomic_write_text
from landmark_edge.runtime.registry import backend_names, check_options, create_backend
from landmark_edge.weights import read_info, resolve_weights


def evaluate(
    data: DataOpt,
    weights: WeightsOpt = None,
    split: Annotated[str, typer.Option(metavar=choices(SPLITS), help="Reference split.")] = "test",
    anatomies: Annotated[
        str | None, typer.Option("--anatomies", help="Comma-separated anatomies (default: all the weights have).")
    ] = None,
    backend: Annotated[str, typer.Option(metavar=choices(backend_names()), help="Inference backend.")] = "torch",
    artifact: Annotated[
        Path | None,
        typer.Option(help="Exported model for the backend (.onnx, .engine, .pt2); one anatomy, with --anatomies."),
    ] = None,
    precision: Annotated[str, typer.Option(metavar=PRECISIONS, help="Precision (backend permitting).")] = "fp32",
    device: DeviceOpt = "cpu",
    batch_size: BatchSizeOpt = 8,
    workers: WorkersOpt = 2,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the full results as JSON (atomic).")] = None,
    overlay: Annotated[
        Path | None, typer.Option(help="Write PNG overlays of the worst images per anatomy into this folder.")
    ] = None,
    overlays_alias: Annotated[
        Path | None, typer.Option("--overlays", hidden=True, help="Old spelling of --overlay.")
    ] = None,
    worst: Annotated[int, typer.Option(min=1, help="How many worst images get an overlay.")] = 5,
    per_landmark: Annotated[bool, typer.Option("--per-landmark", help="Also print per-landmark tables.")] = False,
) -> None:
    """Evaluate weights on a split: the paper's protocol and the original-resolution one, side by side.

    reference: argmax on the resized grid against the rounded grid labels (head x0.46875 mm/px on both axes,
    hand 50 mm wrist width between landmarks 1 and 5 on the grid, chest grid pixels), as the reference's
    evaluation.py. original: sub-pixel landmarks in original pixels against the float annotations (head
    0.1 mm/px per axis, hand the 50 mm wrist width in original pixels, chest pixels).
    """
    if split not in SPLITS:
        fail(f"--split must be one of {', '.join(SPLITS)}")
    with one_line_errors():  # a misspelt backend is one line before any weights or data are read
        check_options(backend, {})
    with one_line_errors():
        weights_path = resolve_weights(weights)
        info = read_info(weights_path)
        chosen = anatomies_or_exit(anatomies) if anatomies else [get_anatomy(n) for n in info.anatomy_names]
        missing = [a.name for a in chosen if a.name not in info.anatomy_names]
        if missing:
            fail(f"{weights_path}: weights are for {', '.join(info.anatomy_names)}, not {', '.join(missing)}")
        if artifact is not None and len(chosen) != 1:
            fail(f"--artifact {artifact} holds one anatomy's network: name it with --anatomies")
        report = {"weights": str(weights_path), "split": split, "data": str(data), "backend": backend,
                  "precision": precision, "protocols": PROTOCOLS, "anatomies": {}}
        failed = 0
        for anatomy in chosen:
            runner = create_backend(
                backend, weights=weights_path, anatomy=anatomy, decode=DecodeMethod.SUBPIXEL, device=device,
                precision=precision, max_batch_size=batch_size, artifact=artifact,
                require_fit=False,  # measuring a head is how it is found fit or unfit
                onnx_loader=OnnxFromWeights(weights_path, anatomy, DecodeMethod.SUBPIXEL, require_fit=False),
            )
            try:
                evaluation = evaluate_split(runner, load_split(data, anatomy, split), anatomy, batch_size, workers)
            finally:
                runner.close()
            for line in evaluation.failures:
                err_console.print(f"[yellow]skipped:[/] {line}", markup=True, highlight=False)
            failed += len(evaluation.failures)
            report["anatomies"][anatomy.name] = evaluation.report()
            if not evaluation.samples:
                err_console.print(f"[yellow]note:[/] {anatomy.name}: the {split} split has no images under {data}",
                                  markup=True, highlight=False)  # fmt: skip
            if (overlay or overlays_alias) is not None:
                write_overlays(evaluation, overlay or overlays_alias, worst)
    if out is not None:
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    console = Console(width=None if stdout_is_terminal() else 120)
    console.print(summary_table(report))
    if per_landmark:
        for name, result in report["anatomies"].items():
            console.print(landmark_table(name, result))
    raise typer.Exit(failures_exit_code(failed))


def summary_table(report: dict) -> Table:
    thresholds = sorted({t for r in report["anatomies"].values() for t in r["reference"]["SDR"]}, key=float)
    title = f"{report['split']} split, {Path(report['weights']).name}: MRE, STD and SDR (% within each threshold)"
    table = Table(title=title, title_justify="left")
    for column in ("anatomy", "protocol", "n", "unit", "MRE", "STD", *(f"≤{float(t):g}" for t in thresholds)):
        table.add_column(column, justify="left" if column in ("anatomy", "protocol") else "right")
    for name, result in report["anatomies"].items():
        for protocol in PROTOCOLS:
            entry = result[protocol]
            table.add_row(name, protocol, str(result["images"]), entry["unit"], _num(entry["MRE"]),
                          _num(entry["STD"]), *(_pct(entry["SDR"].get(t)) for t in thresholds))
    return table


def landmark_table(name: str, result: dict) -> Table:
    table = Table(title=f"{name}: per landmark (MRE ± STD, {result['reference']['unit']})", title_justify="left")
    for column in ("#", "landmark", *PROTOCOLS):
        table.add_column(column, justify="left" if column == "landmark" else "right")
    rows = zip(*(result[p]["per_landmark"] for p in PROTOCOLS))
    for entries in rows:
        first = entries[0]
        table.add_row(str(first["index"]), first["name"],
                      *(f"{_num(e['MRE'])} ± {_num(e['STD'])}" for e in entries))
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
