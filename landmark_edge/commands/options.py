"""Option groups shared by every subcommand (Polygraphy's argument groups): defined once, reused everywhere."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup
from rich.console import Console
from rich.text import Text

from landmark_edge.anatomy import ANATOMIES, PAPER_ORDER, Anatomy, get_anatomy, parse_anatomy_list
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import LandmarkEdgeError
from landmark_edge.runtime.registry import (
    BackendChoice,
    all_precisions,
    artifact_backends,
    backend_names,
    backend_specs,
    check_choice,
)

EXIT_FATAL = 2  # nothing was processed: bad options, missing weights, ...
EXIT_FAILED_BASE = 10  # 10 + N: N inputs failed (N capped at 100), the others were processed

# Messages carry paths, library text and user input: ``[dicom]`` or ``scan[1].png`` must print as written, so
# this console never interprets markup; styled labels go through :func:`print_line` as rich ``Text``.
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def out_console(**options) -> Console:
    """The stdout console for reports and tables: cells hold paths, backend names and library text, so it never
    interprets markup either (an artifact named ``model[fp16].onnx`` prints as written)."""
    return Console(markup=False, highlight=False, **options)


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ReportFormat(str, Enum):
    """``--format`` of the commands that print a report (``infer`` adds csv and jsonl)."""

    TABLE = "table"
    JSON = "json"


FormatOpt = Annotated[ReportFormat, typer.Option("--format", "-f", help="table for people, json for tools.")]


WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", "-w", help="Weights file (.safetensors). Default: the weights shipped in the package."),
]
def choices(values) -> str:
    """A placeholder listing the accepted values, ``[a|b|c]``, as Click shows a choice."""
    return "[" + "|".join(values) + "]"


ANATOMY_NAMES = ", ".join(f"{a.name} ({'/'.join(a.aliases)})" if a.aliases else a.name for a in ANATOMIES.values())
# Each registered anatomy's raw dataset folder, for --data's help (an entry without a dataset spec has none).
DATASET_FOLDERS = ", ".join(f"{a.dataset.folder}/" for a in ANATOMIES.values() if a.dataset is not None)
AnatomyOpt = Annotated[
    str, typer.Option("--anatomy", "-a", metavar=choices(ANATOMIES), help=f"Anatomy: {ANATOMY_NAMES}.")
]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="[cpu|cuda[:N]]", help="Device: cpu, cuda, cuda:1, ...")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")]
DecodeOpt = Annotated[
    DecodeMethod,
    typer.Option(help="argmax: integer grid peak (reference protocol); subpixel: Gaussian fit around it."),
]
DataOpt = Annotated[
    Path,
    typer.Option("--data", "-d", help=f"Dataset root: raw layout ({DATASET_FOLDERS}) or a `pack` folder."),
]
AnatomiesOpt = Annotated[
    str, typer.Option("--anatomies", help=f"Comma-separated anatomies, in model order ({', '.join(ANATOMIES)}).")
]
# pack's default, the same one constant as train's (TrainConfig.anatomies): the paper's model, in its order.
PAPER_ANATOMIES = ",".join(PAPER_ORDER)
WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Image-loading workers.")]


def _prose(text: str | None) -> str | None:
    """A docstring's paragraphs each on one line, so help re-flows them instead of breaking where lines end."""
    if not text:
        return text
    return "\n\n".join(" ".join(part.split()) for part in inspect.cleandoc(text).split("\n\n"))


def _name_values(params: list, ctx: typer.Context) -> list:
    """Placeholders in words (PATH, TEXT, INTEGER, [a|b]), never Python type names, and none for flags."""
    for param in params:
        if isinstance(param, TyperArgument):  # its name column is the placeholder: no type column
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
            param.display_type_rich = lambda ctx: None
        elif param.metavar is None:
            param.metavar = placeholder(param, ctx)
    return params


# Old spellings still accepted: each use prints one deprecation line and is read as the new spelling (its
# tokens), so a renamed option keeps scripts working without a second, hidden parameter in the command's signature.
OLD_SPELLINGS = {
    "--engine": ("--executor",),  # infer
    "--image": ("--images",),  # export
    "--overlays": ("--overlay",),  # evaluate
    "--max-batch-size": ("--max-batch",),  # compile
    "--json": ("--format", "json"),  # bench, build, compile, export
}


def current_spellings(args: list[str], known: set[str]) -> list[str]:
    """``args`` with every old spelling whose new one is in ``known`` replaced (``--old=value`` too), each said
    once in a deprecation line; nothing after ``--`` is touched."""
    rewritten: list[str] = []
    for position, arg in enumerate(args):
        if arg == "--":
            return rewritten + args[position:]
        name, equals, value = arg.partition("=")
        new = OLD_SPELLINGS.get(name)
        if new is None or new[0] not in known:
            rewritten.append(arg)
            continue
        warning_line(f"{name} is deprecated: use {' '.join(new)}")
        rewritten += [new[0] + equals + value] if equals else list(new)
    return rewritten


class Command(TyperCommand):
    """A subcommand whose help reads as prose, with placeholders a newcomer understands, that still accepts the
    old spellings of its options (:data:`OLD_SPELLINGS`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.help = _prose(self.help)

    def get_params(self, ctx: typer.Context) -> list:
        return _name_values(super().get_params(ctx), ctx)

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        known = {name for param in self.params for name in getattr(param, "opts", ())}
        return super().parse_args(ctx, current_spellings(args, known))


class Group(TyperGroup):
    """The top-level command, with the same help conventions as :class:`Command`."""

    def get_params(self, ctx: typer.Context) -> list:
        return _name_values(super().get_params(ctx), ctx)


_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "file": "FILE", "directory": "DIR"}


def placeholder(param, ctx: typer.Context) -> str:
    """Click's words for an option's value (TEXT, INTEGER, PATH), its choices as [a|b], nothing for a flag."""
    if getattr(param, "is_flag", False) or not hasattr(param, "display_type"):
        return ""
    label = param.display_type(ctx).strip("<>")  # typer's: "str", "int range", "path", "list[str]", "a|b"
    repeated = label.startswith("list[")
    label = label.removeprefix("list[").removesuffix("]").removesuffix(" range")
    word = f"[{label}]" if "|" in label else _WORDS.get(label.lower(), label.upper())
    return word + ("..." if repeated else "")


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
def printable(text: str) -> str:
    """``text`` as one printable line: a file name's undecodable bytes as ``\\xff``, control characters (a
    newline, a terminal escape in a hostile name) as escapes, so a message stays one line and cannot restyle the
    terminal."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL_CHARACTERS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def print_line(label: str, message: str, style: str = "") -> None:
    """One stderr line, ``label message``: only the label is styled; the message is printed exactly as written."""
    err_console.print(Text.assemble((label, style), " ", printable(message)))


def error_line(message: str) -> None:
    print_line("error:", message, "bold red")


def warning_line(message: str) -> None:
    print_line("warning:", message, "yellow")


def fail(message: str, code: int = EXIT_FATAL) -> NoReturn:
    error_line(message)
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


@contextmanager
def build_status() -> Iterator[Callable[[str], None]]:
    """One self-updating line on stderr while a backend builds (``BackendRequest.progress``): the compiled
    backend's compilation reports each batch bucket here instead of filling the terminal with compiler output."""
    with err_console.status("building the backend") as status:
        yield status.update


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


ANY_BACKEND = ""  # the key of options given without a backend name: they go to every backend of the run


def backend_options(items: list[str]) -> dict[str, dict[str, object]]:
    """``[NAME:]KEY=VALUE`` items into {backend name or ANY_BACKEND: {key: value}}, values as YAML scalars.

    One syntax for every command: ``threads=2`` goes to every backend the command runs, ``onnxruntime:threads=2``
    only to that one.
    """
    options: dict[str, dict[str, object]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        name, _, key = target.rpartition(":")
        if not sep or not key.isidentifier():
            fail(f"--option: expected KEY=VALUE or NAME:KEY=VALUE (NAME: a backend), got '{item}'")
        options.setdefault(name, {})[key] = _yaml_scalar(value) if value else ""
    return options


def _yaml_scalar(text: str) -> object:
    """``2`` -> 2, ``true`` -> True, ``a/b`` -> "a/b": YAML's reading of one value (yaml is imported only when an
    option is given: most runs give none, and the import costs a tenth of a second at start-up)."""
    import yaml

    return yaml.safe_load(text)


def options_for(options: dict[str, dict[str, object]], backend: str) -> dict[str, object]:
    """The options one backend receives: the unnamed ones, then its own."""
    return {**options.get(ANY_BACKEND, {}), **options.get(backend, {})}




# --- the backend-arguments group: the same options, help and meaning in infer, evaluate and bench ---------------
# Every help text here is read from the registry's capability entries, so a new backend appears in all of them.


def backend_help(default: str) -> str:
    """``--backend``'s help: each backend's precisions, devices and artifacts, then the command's default."""
    return f"Inference backend: {'; '.join(spec.summary() for spec in backend_specs())}. Default: {default}."


def backend_option(default: str) -> object:
    """The ``--backend`` option, with the command's own default named in its help (each command keeps its own)."""
    return typer.Option("--backend", metavar=choices(backend_names()), help=backend_help(default), show_default=False)


def _artifact_kinds() -> str:
    return ", ".join(
        f"{'/'.join(spec.artifact.suffixes)} ({spec.name}, from `{spec.artifact.made_by}`)"
        for spec in artifact_backends()
    )


ArtifactOpt = Annotated[
    Path | None, typer.Option("--artifact", help=f"Exported model the backend runs: {_artifact_kinds()}.")
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        metavar=choices(all_precisions()),
        help="Precision, as the backend supports it (see --backend).",
    ),
]
BackendDeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        metavar=choices(dict.fromkeys(k if k == "cpu" else f"{k}[:N]" for s in backend_specs() for k in s.devices)),
        help="Device: cpu, cuda, cuda:1, ... (as the backend supports it, see --backend).",
    ),
]
AllowFallbackOpt = Annotated[
    bool,
    typer.Option(
        help="Accept a backend's CPU fallback when the GPU provider asked for cannot load (ONNX Runtime); "
        "backends without a fallback ignore it."
    ),
]
BackendOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        metavar="[NAME:]KEY=VALUE",
        help="Backend option (repeatable); NAME: limits it to one backend. E.g. threads=2, calibration=DIR "
        "(onnxruntime int8), compiled:mode=reduce-overhead.",
    ),
]


def backend_choice(
    backend: str,
    artifact: Path | None,
    precision: str,
    device: str,
    decode: DecodeMethod,
    option: list[str] | None,
    allow_fallback: bool,
) -> BackendChoice:
    """The group parsed into one :class:`BackendChoice` and checked against the backend's capability entry, before
    any input or weights are read: a misspelt backend, option, precision or device is one line and exit 2."""
    given = backend_options(option or [])
    foreign = sorted(set(given) - {ANY_BACKEND, backend})
    if foreign:
        fail(f"--option {foreign[0]}:...: this run uses the {backend} backend")
    choice = BackendChoice(backend, artifact, precision, device, decode, options_for(given, backend), allow_fallback)
    with one_line_errors():
        check_choice(choice)
    return choice
