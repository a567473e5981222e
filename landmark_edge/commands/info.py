"""``landmark-edge info``: the anatomy registry and the summary of a weights file."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from landmark_edge.anatomy import ANATOMIES
from landmark_edge.commands.options import FormatOpt, ReportFormat, WeightsOpt, err_console, one_line_errors, out_console
from landmark_edge.errors import NoDefaultWeightsError
from landmark_edge.weights import WeightsInfo, file_sha256, read_info, resolve_weights


def info(
    weights: WeightsOpt = None,
    output_format: FormatOpt = ReportFormat.TABLE,
) -> None:
    """Show the anatomy registry and the summary of a weights file (the shipped one by default), sha256 included.

    Without weights (none given, none shipped) the registry alone is shown.
    """
    path, header = _weights_header(weights)
    if output_format is ReportFormat.JSON:
        weights_part = None if header is None else {"path": str(path), **header.model_dump(mode="json")}
        registry = [{"name": a.name, "aliases": list(a.aliases), "num_landmarks": a.num_landmarks, "grid": list(a.grid),
                     "spacing_rule": a.spacing_rule.value} for a in ANATOMIES.values()]  # fmt: skip
        typer.echo(json.dumps({"anatomies": registry, "weights": weights_part}, indent=2))
        return
    console = out_console()
    console.print(_table("Anatomies", [_registry_row(a) for a in ANATOMIES.values()]))
    if header is None:
        err_console.print("no weights file: pass --weights FILE to show one")
        return
    console.print(f"weights  {path}", markup=False, highlight=False)
    for label, value in (
        ("sha256", header.sha256), ("source", header.source or "-"),
        ("format", f"{header.format} v{header.format_version}"),
        ("written by", f"landmark-edge {header.landmark_edge_version}"), ("preprocessing", header.preprocessing),
        ("architecture", ", ".join(f"{k}={v}" for k, v in header.architecture.items() if k != "num_landmarks")),
    ):  # fmt: skip
        console.print(f"  {label:<14}{value}", markup=False, highlight=False)
    rows = [{"anatomy": e.name, "landmarks": e.num_landmarks, "grid (W x H)": f"{e.grid[0]} x {e.grid[1]}",
             "fit for use": {True: "yes", False: "no", None: "not assessed"}[e.fit_for_use],
             "assessment": e.assessment or "-"} for e in header.anatomies]  # fmt: skip
    console.print(_table("Heads in this file", rows))


def _weights_header(weights: Path | None) -> tuple[Path | None, WeightsInfo | None]:
    """The weights file to describe and its header with the file's sha256 (None, None when there is none)."""
    with one_line_errors():
        try:
            path = resolve_weights(weights)
        except NoDefaultWeightsError:
            return None, None
        header = read_info(path)
        header.sha256 = file_sha256(path)
    return path, header


def _registry_row(anatomy) -> dict[str, object]:
    return {
        "name": anatomy.name, "aliases": ", ".join(anatomy.aliases), "landmarks": anatomy.num_landmarks,
        "grid (W x H)": f"{anatomy.grid[0]} x {anatomy.grid[1]}", "mm rule": anatomy.spacing_rule.value,
    }  # fmt: skip


def _table(title: str, rows: list[dict[str, object]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    return table
