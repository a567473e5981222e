"""``landmark-edge evaluate``: MRE / STD / SDR per anatomy, reference protocol and original resolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from landmark_edge.anatomy import ANATOMIES, get_anatomy
from landmark_edge.commands.options import (
    AllowFallbackOpt,
    ArtifactOpt,
    BackendDeviceOpt,
    BackendOptionOpt,
    BatchSizeOpt,
    DataOpt,
    DecodeOpt,
    PrecisionOpt,
    WeightsOpt,
    WorkersOpt,
    anatomies_or_exit,
    backend_choice,
    backend_option,
    choices,
    fail,
    failures_exit_code,
    one_line_errors,
    print_line,
    stdout_is_terminal,
    out_console,
)
from landmark_edge.data import SPLITS
from landmark_edge.decode import DecodeMethod
from landmark_edge.evaluation import PROTOCOLS, SHIFTS
from landmark_edge.evaluation.run import evaluate_weights
from landmark_edge.io.atomic import atomic_write_text
from landmark_edge.weights import read_info, resolve_weights


def evaluate(
    data: DataOpt,
    weights: WeightsOpt = None,
    split: Annotated[str, typer.Option(metavar=choices(SPLITS), help="Reference split.")] = "test",
    anatomies: Annotated[
        str | None, typer.Option("--anatomies", help="Comma-separated anatomies (default: all the weights have).")
    ] = None,
    backend: Annotated[str, backend_option("torch, the reference")] = "torch",
    artifact: ArtifactOpt = None,  # one anatomy's network: name it with --anatomies
    precision: PrecisionOpt = "fp32",
    device: BackendDeviceOpt = "cpu",
    decode: DecodeOpt = DecodeMethod.SUBPIXEL,
    option: BackendOptionOpt = None,
    allow_fallback: AllowFallbackOpt = False,
    batch_size: BatchSizeOpt = 8,
    workers: WorkersOpt = 2,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the full results as JSON (atomic).")] = None,
    overlay: Annotated[
        Path | None, typer.Option(help="Write PNG overlays of the worst images per anatomy into this folder.")
    ] = None,
    worst: Annotated[int, typer.Option(min=1, help="How many worst images get an overlay.")] = 5,
    per_landmark: Annotated[bool, typer.Option("--per-landmark", help="Also print per-landmark tables.")] = False,
    shift: Annotated[
        str,
        typer.Option(help="Evaluate under controlled framing changes instead: 'zoom' (scale 0.8-1.25, crops that "
                     "cut the top, rotations up to 10 deg; original protocol, in the shifted image's geometry)."),
    ] = "none",
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N images of the split.")] = None,
) -> None:
    if split not in SPLITS:
        fail(f"--split must be one of {', '.join(SPLITS)}")
    # a misspelt backend or option is one line before any weights or data are read
    choice = backend_choice(backend, artifact, precision, device, decode, option, allow_fallback)
    if shift != "none" and shift not in SHIFTS:
        fail(f"--shift must be none or one of {', '.join(SHIFTS)}")
    if shift != "none" and overlay is not None:
        fail("--overlay draws the unshifted images: leave it out with --shift")
    with one_line_errors():
        weights_path = resolve_weights(weights)
        info = read_info(weights_path)
        chosen = anatomies_or_exit(anatomies) if anatomies else [get_anatomy(n) for n in info.anatomy_names]
        missing = [a.name for a in chosen if a.name not in info.anatomy_names]
        if missing:
            fail(f"{weights_path}: weights are for {', '.join(info.anatomy_names)}, not {', '.join(missing)}")
        if artifact is not None and len(chosen) != 1:
            fail(f"--artifact {artifact} holds one anatomy's network: name it with --anatomies")
        report, failed = evaluate_weights(
            data, weights_path, chosen, choice, split, batch_size=batch_size, workers=workers, limit=limit,
            shift=shift, overlays=overlay, worst=worst,
            log=lambda label, message: print_line(label, message, "yellow"),
        )  # fmt: skip
    if out is not None:
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    console = out_console(width=None if stdout_is_terminal() else 120)
    if shift != "none":
        console.print(shift_table(report))
    else:
        console.print(summary_table(report))
        if per_landmark:
            for name, result in report["anatomies"].items():
                console.print(landmark_table(name, result))
    raise typer.Exit(failures_exit_code(failed))


def _help() -> str:
    """The command's help; each anatomy's millimetre rule comes from its registry entry."""

    def rules(on_grid: bool) -> str:
        return ", ".join(f"{a.name} {a.mm_rule(on_grid)}" for a in ANATOMIES.values())

    return f"""Evaluate weights on a split: the paper's protocol and the original-resolution one, side by side.

    reference: argmax on the resized grid against the rounded grid labels ({rules(on_grid=True)}), as the
    reference's evaluation.py. original: sub-pixel landmarks in original pixels against the float annotations
    ({rules(on_grid=False)}).

    --shift zoom evaluates the split under fixed framing changes instead (one row per condition): each image
    and its annotations go through one affine map; errors in the shifted image's geometry (its spacing is the
    original's over the magnification; an anatomy without a physical spacing in pixels of the unshifted image).
    """


evaluate.__doc__ = _help()  # Typer takes the help from the docstring, and a docstring cannot be an f-string


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


def shift_table(report: dict) -> Table:
    """One row per anatomy and framing condition (original protocol, shifted image's geometry)."""
    results = [r for conditions in report["anatomies"].values() for r in conditions.values()]
    thresholds = sorted({t for r in results for t in r["SDR"]}, key=float)
    title = (f"{report['split']} split under --shift {report['shift']['family']}, {Path(report['weights']).name}: "
             "MRE, STD and SDR (% within each threshold); landmarks moved out of the frame are left out")
    table = Table(title=title, title_justify="left")
    for column in ("anatomy", "condition", "n", "out", "unit", "MRE", "STD", *(f"≤{float(t):g}" for t in thresholds)):
        table.add_column(column, justify="left" if column in ("anatomy", "condition") else "right")
    for name, conditions in report["anatomies"].items():
        for condition, entry in conditions.items():
            table.add_row(name, condition, str(entry["images"]), str(entry["landmarks_out_of_frame"]), entry["unit"],
                          _num(entry["MRE"]), _num(entry["STD"]), *(_pct(entry["SDR"].get(t)) for t in thresholds))
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
