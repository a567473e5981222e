"""``landmark-edge import-checkpoint``: a reference GU2Net checkpoint into this project's weights file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landmark_edge.anatomy import PAPER_ORDER
from landmark_edge.commands.options import anatomies_or_exit, one_line_errors, warning_line
from landmark_edge.weights import save_weights
from landmark_edge.weights.reference import convert_state_dict, load_reference_checkpoint


def import_checkpoint(
    checkpoint: Annotated[Path, typer.Argument(help="Reference GU2Net checkpoint (.pt with model_state_dict).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Weights file to write (.safetensors).")],
    order: Annotated[
        str,
        typer.Option(help="The checkpoint's task order, comma-separated (default: the paper's, the reference "
                     "config.yaml's; the released best.pt: chest,cephalometric,hand)."),
    ] = ",".join(PAPER_ORDER),
    trust_pickle: Annotated[
        bool,
        typer.Option(
            help="Unpickle everything in the file, which runs any code it holds. Only for a checkpoint you trust: "
            "by default only tensors and the reference's own optimizer object are read."
        ),
    ] = False,
) -> None:
    """Convert a reference checkpoint ((W,H) layout, indexed tasks) into a landmark-edge weights file.

    The checkpoint is read without running code (tensors and the reference's pickled optimizer only); a file
    naming anything else is refused, in one line that names it.
    """
    anatomies = anatomies_or_exit(order, "--order")
    if trust_pickle:
        warning_line(f"--trust-pickle: fully unpickling {checkpoint}, which runs any code the file holds")
    with one_line_errors():
        model = convert_state_dict(load_reference_checkpoint(checkpoint, trust_pickle=trust_pickle), anatomies)
        info = save_weights(model, out, source=f"imported from reference checkpoint {checkpoint.name}")
    typer.echo(f"wrote {out} ({', '.join(f'{a.name} {a.num_landmarks}' for a in info.anatomies)})")
