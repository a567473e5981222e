"""``landmark-edge train``: GU2Net with the reference schedule or fine-tuned from weights, resumable in chunks.

The options that define a run are generated from :class:`~landmark_edge.training.TrainConfig`'s fields (name,
default, help, choices), so each default lives in one place and the command cannot drift from the library; the
options written here are those of *this process* (where the data is, the device, workers, the time limit),
which a resumed chunk may change.
"""

from __future__ import annotations

import inspect
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import annotated_types
import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from landmark_edge.commands.options import (
    DeviceOpt,
    WorkersOpt,
    anatomies_or_exit,
    err_console,
    fail,
    one_line_errors,
)
from landmark_edge.training import RunOptions, TrainConfig, resume_run, start_run
from landmark_edge.training.trainer import BEST

EXIT_STOPPED = 75  # stopped by --max-minutes with a checkpoint: run `train --resume RUN_DIR` again (EX_TEMPFAIL)
# Config fields that are no option: --data is this process's (and recorded), the others the trainer fills in.
NOT_OPTIONS = {"data", "init_sha256", "model_anatomies"}
SHORT_NAMES = {"batch_size": "-b"}  # as every command's --batch-size
METAVARS = {"init": "WEIGHTS"}
CONFIG_OPTIONS = [name for name in TrainConfig.model_fields if name not in NOT_OPTIONS]


def _no_config_options_on_resume(context: typer.Context) -> None:
    """A resumed run keeps its config.json; refuse options that would otherwise be silently ignored."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in context.params
        if name in CONFIG_OPTIONS and getattr(context.get_parameter_source(name), "name", "") == "COMMANDLINE"
    ]
    if given:
        fail(f"{', '.join(given)}: a resumed run keeps its config.json; with --resume only --data, --device, "
             "--workers, --max-minutes and --progress apply")


def train(
    context: typer.Context,
    data: Annotated[
        Path | None,
        typer.Option("--data", "-d", help="Dataset root (raw layout or `pack` output). With --resume: "
                     "where the data is on this machine (default: the path the run started with)."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="New run directory.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this directory from its last checkpoint, with its config.json.")
    ] = None,
    device: DeviceOpt = "cpu",
    workers: WorkersOpt = 2,
    max_minutes: Annotated[
        float | None,
        typer.Option(min=0.0, help=f"Stop after this many minutes with a checkpoint and exit {EXIT_STOPPED}; "
                     "continue with --resume."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
    **settings: Any,
) -> None:
    """Train GU2Net on mixed single-anatomy batches with the reference schedule (Adam, CyclicLR triangular2),
    or fine-tune a weights file (--init, --freeze, the cosine schedule).

    --recipe reference reproduces the paper; --recipe robust adds augmentation that keeps the landmarks exact and
    sub-pixel targets. Every setting is recorded in config.json and the weights header; --resume keeps them.

    The run directory gets config.json, metrics.jsonl, loss.png, lr.png, the checkpoint (checkpoint.json and
    parts no larger than the part size), best.safetensors (the model chosen by --select, as a weights file) and
    test.json (that model on the test split, once, at the end). Exit 0 when the run is complete, 75 when the time
    limit or SIGTERM stopped it (resumable), 2 on errors.
    """
    if (out is None) == (resume is None):
        fail("give exactly one of --out RUN_DIR (new run) or --resume RUN_DIR")
    if resume is not None:
        _no_config_options_on_resume(context)

    def report(line: str) -> None:
        err_console.print(line, markup=False, highlight=False)

    options = RunOptions(data=data, device=device, workers=workers, max_minutes=max_minutes, progress=progress,
                         report=report)  # fmt: skip
    with one_line_errors():
        if resume is not None:
            trainer = resume_run(resume, options)
            run_dir = resume
        else:
            if data is None:
                fail("--data is needed for a new run")
            trainer = start_run(config_from_options(data, settings), out, options)
            run_dir = out
        total = trainer.config.epochs * trainer.iterations_per_epoch
        report(f"{run_dir}: iteration {trainer.iteration} of {total} ({trainer.iterations_per_epoch} per epoch)")
        finished = trainer.run()
    if not finished:
        report(f"stopped at iteration {trainer.iteration}: continue with `landmark-edge train --resume {run_dir}`")
        raise typer.Exit(EXIT_STOPPED)
    typer.echo(f"done: {run_dir / BEST} (epoch {trainer.best_epoch})")


def config_from_options(data: Path, settings: dict[str, Any]) -> TrainConfig:
    """The run's config from the generated options' values (lists arrive comma-separated); a value the config
    refuses is one line naming its option."""
    values: dict[str, Any] = {"data": str(data)}
    for name, value in settings.items():
        if name == "anatomies":
            value = [a.name for a in anatomies_or_exit(value)]
        elif _is_list(TrainConfig.model_fields[name]):
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif isinstance(value, Enum):
            value = value.value
        values[name] = value
    try:
        return TrainConfig(**values)
    except ValidationError as error:
        problem = error.errors()[0]
        option = "--" + str(problem["loc"][0]).replace("_", "-") if problem["loc"] else "config"
        fail(f"{option}: {problem['msg']}")


def _is_list(field: FieldInfo) -> bool:
    return get_origin(field.annotation) is list


def _option(name: str, field: FieldInfo) -> inspect.Parameter:
    """One ``--name`` option for a config field: its default, its help, a flag pair for a bool, a choice for a
    ``Literal``, comma-separated text for a list."""
    flag = "--" + name.replace("_", "-")
    default = field.get_default(call_default_factory=True)
    annotation: Any = field.annotation
    extra: dict[str, Any] = {}
    optional = get_origin(annotation) in (typing.Union, types.UnionType)
    if optional:
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if annotation is bool:
        declarations: tuple[str, ...] = (f"{flag}/--no-{flag[2:]}",)
    else:
        declarations = (flag, *([SHORT_NAMES[name]] if name in SHORT_NAMES else []))
    if get_origin(annotation) is typing.Literal:
        annotation = Enum(f"{name}_choices", {str(v): str(v) for v in get_args(annotation)}, type=str)
        default = None if default is None else annotation(default)
    elif get_origin(annotation) is list:
        default = ",".join(str(v) for v in default)
        extra = {"metavar": "A,B,..."}
        annotation = str
    if annotation in (int, float):
        extra = {"min": bound.ge for bound in field.metadata if isinstance(bound, annotated_types.Ge)}
    if optional:
        annotation = annotation | None
    if name in METAVARS:
        extra["metavar"] = METAVARS[name]
    option = typer.Option(*declarations, help=field.description, **extra)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, option])  # fmt: skip


def _with_config_options(command):
    """``command`` with one keyword option per :class:`TrainConfig` field in place of its ``**settings``."""
    hints = typing.get_type_hints(command, include_extras=True)  # this module's own annotations are strings
    signature = inspect.signature(command)
    fixed = [p.replace(annotation=hints[p.name]) for p in signature.parameters.values()
             if p.kind is not inspect.Parameter.VAR_KEYWORD]  # fmt: skip
    generated = [_option(name, TrainConfig.model_fields[name]) for name in CONFIG_OPTIONS]
    command.__signature__ = signature.replace(parameters=[*fixed, *generated], return_annotation=None)
    command.__annotations__ = {p.name: p.annotation for p in (*fixed, *generated)}
    return command


train = _with_config_options(train)
