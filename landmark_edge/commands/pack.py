"""``landmark-edge pack``: a compact, grid-resized copy of the datasets for training elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landmark_edge.commands.options import (
    PAPER_ANATOMIES,
    AnatomiesOpt,
    DataOpt,
    anatomies_or_exit,
    one_line_errors,
    print_line,
)
from landmark_edge.data.packed import DEFAULT_QUALITY
from landmark_edge.data.packed import pack as pack_data


def pack(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (manifest.json + <anatomy>/<id>.jpg).")],
    anatomies: AnatomiesOpt = PAPER_ANATOMIES,
    quality: Annotated[int, typer.Option(min=50, max=100, help="JPEG quality of the grid images.")] = DEFAULT_QUALITY,
) -> None:
    """Resize every image of the reference splits to its anatomy's grid and write it with its labels.

    Training and evaluation read the result with --data OUT exactly as they read the raw layout.
    """
    chosen = anatomies_or_exit(anatomies)
    with one_line_errors():
        manifest = pack_data(data, out, chosen, quality)
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    for name, entry in manifest.anatomies.items():
        for line in entry.skipped:
            print_line("skipped:", line, "yellow")
        counts = ", ".join(f"{split} {len(ids)}" for split, ids in entry.splits.items())
        typer.echo(f"{name}: {counts}" + (f" ({len(entry.skipped)} skipped)" if entry.skipped else ""))
    typer.echo(f"wrote {out} ({size / 2**20:.1f} MiB)")
