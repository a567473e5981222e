"""Option groups shared by every subcommand (Polygraphy's argument groups): defined once, reused everywhere."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from landmark_edge.anatomy import Anatomy, get_anatomy, parse_anatomy_list
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import LandmarkEdgeError

EXIT_FATAL = 2  # nothing was processed: bad options, missing weights, ...
EXIT_FAILED_BASE = 10  # 10 + N: N inputs failed (N capped at 100), the others were processed

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", "-w", help="Weights file (.safetensors). Default: the weights shipped in the package."),
]
AnatomyOpt = Annotated[
    str,
    typer.Option("--anatomy", "-a", help="Anatomy: head (cephalometric), hand or chest."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="Device: cpu, cuda, cuda:1, ...")]
ArtifactOpt = Annotated[
    Path | None,
    typer.Option(
        "--artifact",
        help="Exported model the backend runs: .onnx (onnxruntime), .engine (tensorrt), .pt2 (aoti, from "
        "`landmark-edge compile`).",
    ),
]
AllowFallbackOpt = Annotated[
    bool,
    typer.Option(help="Accept ONNX Runtime running on the CPU when the GPU provider asked for cannot load."),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")]
DecodeOpt = Annotated[
    DecodeMethod,
    typer.Option(help="argmax: integer grid peak (reference protocol); subpixel: Gaussian fit around it."),
]
DataOpt = Annotated[
    Path,
    typer.Option("--data", "-d", help="Dataset root: raw layout (ISBI2015_ceph/, hand/, chest/) or a `pack` folder."),
]
AnatomiesOpt = Annotated[str, typer.Option("--anatomies", help="Comma-separated anatomies, in model order.")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Image-loading workers.")]


def anatomy_or_exit(name: str) -> Anatomy:
    """Resolve ``--anatomy`` or stop with one line and exit 2."""
    try:
        return get_anatomy(name)
    except ValueError as error:
        fail(str(error))


def anatomies_or_exit(text: str, flag: str = "--anatomies") -> list[Anatomy]:
    """Resolve a comma-separated anatomy list or stop with one line naming the option and exit 2."""
    try:
        return parse_anatomy_list(text)
    except ValueError as error:
        fail(f"{flag}: {error}")


def fail(message: str, code: int = EXIT_FATAL) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(code)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn project errors into one red line on stderr and exit 2, never a traceback."""
    try:
        yield
    except LandmarkEdgeError as error:
        fail(str(error))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


def failures_exit_code(failed: int) -> int:
    return 0 if failed == 0 else EXIT_FAILED_BASE + min(failed, 100)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def key_values(items: list[str], flag: str = "--option ") -> dict[str, object]:
    """``KEY=VALUE`` items into a dict; values are read as YAML scalars (4, 0.5, true, text)."""
    import yaml

    options: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            fail(f"{flag}KEY=VALUE expected, got '{item}'")
        options[key] = yaml.safe_load(value) if value else ""
    return options


BackendOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        help="Backend option KEY=VALUE (repeatable), e.g. threads=2, calibration=DIR (onnxruntime int8), "
        "mode=reduce-overhead (compiled).",
    ),
]
