"""The ``landmark-edge`` command line: thin Typer shells over the package's functions."""

from __future__ import annotations

import sys
from importlib import import_module

import typer

from landmark_edge import __version__
from landmark_edge.anatomy import ANATOMIES
from landmark_edge.commands.options import Command, Group

# command name -> (module in landmark_edge.commands, function). A command's module is imported only when that
# command runs, so a one-image `infer` does not pay for the imports of `train`, `bench` or `export`.
COMMANDS = {
    "pack": ("pack", "pack"),
    "train": ("train", "train"),
    "evaluate": ("evaluate", "evaluate"),
    "import-checkpoint": ("import_checkpoint", "import_checkpoint"),
    "export": ("export", "export"),
    "build": ("build", "build"),
    "compile": ("compile", "compile_package"),
    "infer": ("infer", "infer"),
    "bench": ("bench", "bench"),
    "info": ("info", "info"),
    "cache": ("cache", "cache"),
}


def make_app(names: list[str] | None = None) -> typer.Typer:
    """The Typer app with the named commands (default: all of them)."""
    application = typer.Typer(
        cls=Group,
        name="landmark-edge",
        help=f"GU2Net universal anatomical landmark detection ({', '.join(ANATOMIES)} X-rays): train, evaluate, "
        "export, build engines, infer and benchmark.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for name in names or COMMANDS:
        module, function = COMMANDS[name]
        application.command(name, cls=Command)(getattr(import_module(f"landmark_edge.commands.{module}"), function))
    application.callback()(main)
    return application


def run() -> None:
    """The console script: registers only the command on the command line (every one for the top-level help)."""
    name = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    make_app([name] if name in COMMANDS else None)(prog_name="landmark-edge")


def __getattr__(name: str):
    """``landmark_edge.cli.app``: the app with every command (for tests and callers that embed the CLI)."""
    if name == "app":
        globals()["app"] = make_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"landmark-edge {__version__}")
        raise typer.Exit()


def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """GU2Net landmark detection from training to deployment."""
