"""The ``landmark-edge`` command line: thin Typer shells over the package's functions."""

from __future__ import annotations

import typer

from landmark_edge import __version__
from landmark_edge.commands.bench import bench
from landmark_edge.commands.build import build
from landmark_edge.commands.checkpoint import import_checkpoint, info
from landmark_edge.commands.compile import compile_package
from landmark_edge.commands.evaluate import evaluate
from landmark_edge.commands.export import export
from landmark_edge.commands.infer import infer
from landmark_edge.commands.options import Command, Group
from landmark_edge.commands.pack import pack
from landmark_edge.commands.train import train

app = typer.Typer(
    name="landmark-edge",
    help="GU2Net universal anatomical landmark detection (head, hand, chest X-rays): train, evaluate, export, "
    "build engines, infer and benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=Group,
)
app.command(cls=Command)(pack)
app.command(cls=Command)(train)
app.command(cls=Command)(evaluate)
app.command("import-checkpoint", cls=Command)(import_checkpoint)
app.command(cls=Command)(export)
app.command(cls=Command)(build)
app.command("compile", cls=Command)(compile_package)
app.command(cls=Command)(infer)
app.command(cls=Command)(bench)
app.command(cls=Command)(info)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"landmark-edge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """GU2Net landmark detection from training to deployment."""
