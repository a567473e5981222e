"""``landmark-edge import-checkpoint`` and ``landmark-edge info``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from landmark_edge.anatomy import ANATOMIES
from landmark_edge.commands.options import WeightsOpt, anatomies_or_exit, one_line_errors
from landmark_edge.weights import read_info, resolve_weights, save_weights
from landmark_edge.weights.reference import convert_state_dict, load_reference_checkpoint


def import_checkpoint(
    checkpoint: Annotated[Path, typer.Argument(help="Reference GU2Net checkpoint (.pt with model_state_dict).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Weights file to write (.safetensors).")],
    order: Annotated[
        str,
        typer.Option(help="The checkpoint's task order, comma-separated (released best.pt: chest,cephalometric,hand)."),
    ] = "cephalometric,hand,chest",
) -> None:
    """Convert a reference checkpoint ((W,H) layout, indexed tasks) into a landmark-edge weights file."""
    anatomies = anatomies_or_exit(order, "--order")
    with one_line_errors():
        model = convert_state_dict(load_reference_checkpoint(checkpoint), anatomies)
        info = save_weights(model, out, source=f"imported from reference checkpoint {checkpoint.name}")
    typer.echo(f"wrote {out} ({', '.join(f'{a.name} {a.num_landmarks}' for a in info.anatomies)})")


def info(weights: WeightsOpt = None) -> None:
    """Show the anatomy registry and the header of a weights file (the shipped one by default)."""
    console = Console()
    table = Table(title="Anatomies", title_justify="left")
    for column in ("name", "aliases", "landmarks", "grid (W x H)", "mm rule"):
        table.add_column(column)
    for anatomy in ANATOMIES.values():
        table.add_row(anatomy.name, ", ".join(anatomy.aliases), str(anatomy.num_landmarks),
                      f"{anatomy.grid[0]} x {anatomy.grid[1]}", anatomy.spacing_rule.value)
    console.print(table)
    with one_line_errors():
        header = read_info(resolve_weights(weights))
    console.print_json(header.model_dump_json())
