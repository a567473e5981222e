"""``landmark-edge train``: GU2Net with the reference schedule, resumable in time-limited chunks."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from landmark_edge.commands.options import (
    ALL_ANATOMIES,
    AnatomiesOpt,
    BatchSizeOpt,
    DeviceOpt,
    WorkersOpt,
    anatomies_or_exit,
    err_console,
    fail,
    one_line_errors,
)
from landmark_edge.training import RunOptions, TrainConfig, resume_run, start_run
from landmark_edge.training.trainer import BEST, RECIPES

EXIT_STOPPED = 75  # stopped by --max-minutes with a checkpoint: run `train --resume RUN_DIR` again (EX_TEMPFAIL)


class Recipe(str, Enum):
    reference = "reference"
    robust = "robust"


class Amp(str, Enum):
    none = "none"
    bf16 = "bf16"
    fp16 = "fp16"


class Schedule(str, Enum):
    cyclic = "cyclic"
    cosine = "cosine"


def _widths(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter("give five comma-separated integers", param_hint="--local-widths") from None


_RESUME_OPTIONS = {"data", "resume", "device", "workers", "max_minutes", "progress"}


def _no_config_options_on_resume(context: typer.Context) -> None:
    """A resumed run keeps its config.json; refuse options that would otherwise be silently ignored."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in context.params
        if name not in _RESUME_OPTIONS and getattr(context.get_parameter_source(name), "name", "") == "COMMANDLINE"
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
    anatomies: AnatomiesOpt = ALL_ANATOMIES,
    recipe: Annotated[
        Recipe, typer.Option(help="; ".join(f"{name}: {text}" for name, text in RECIPES.items()) + ".")
    ] = Recipe.reference,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (reference: 100).")] = 100,
    batch_size: BatchSizeOpt = 4,
    lr: Annotated[float, typer.Option(help="Base learning rate (CyclicLR lower bound, Adam lr).")] = 1e-4,
    max_lr: Annotated[float, typer.Option(help="CyclicLR upper bound.")] = 1e-2,
    step_size: Annotated[int, typer.Option(min=1, help="CyclicLR half-cycle in iterations.")] = 2000,
    weight_decay: Annotated[float, typer.Option(help="Adam (coupled L2) weight decay.")] = 1e-4,
    val_every: Annotated[int, typer.Option(min=1, help="Validate every N epochs (and at the last).")] = 2,
    amp: Annotated[Amp, typer.Option(help="Autocast the forward in bf16/fp16 (the loss stays fp32).")] = Amp.none,
    channels_last: Annotated[bool, typer.Option(help="channels_last memory format (faster convs on GPUs).")] = False,
    device: DeviceOpt = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of weights init and data order.")] = 42,
    workers: WorkersOpt = 2,
    max_minutes: Annotated[
        float | None,
        typer.Option(min=0.0, help=f"Stop after this many minutes with a checkpoint and exit {EXIT_STOPPED}; "
                     "continue with --resume."),
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option(min=0, help="Also checkpoint every N iterations (0: at each epoch's end only).")
    ] = 0,
    part_mib: Annotated[float, typer.Option(min=0.01, help="Checkpoint part size limit in MiB.")] = 16.0,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N images of each split.")] = None,
    local_widths: Annotated[
        str, typer.Option(help="U-Net level widths (paper: 64,128,256,512,512).")
    ] = "64,128,256,512,512",
    global_width: Annotated[int, typer.Option(min=2, help="Global branch width (paper: 128).")] = 128,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Start from this weights file: its shared layers and every head it has "
                     "(matched by anatomy name; heads it lacks start fresh, heads not in --anatomies are kept "
                     "and left as they are)."),
    ] = None,
    freeze: Annotated[
        str, typer.Option(help="Comma-separated groups left as they are: shared (the layers all anatomies share), "
                          "an anatomy's name (its own layers), bn-stats (BatchNorm statistics).")
    ] = "",
    schedule: Annotated[
        Schedule | None,
        typer.Option(help="cyclic: the reference's CyclicLR from --lr to --max-lr; cosine: linear warm-up to --lr, "
                     "then cosine decay to --min-lr (default: cosine with --init, cyclic otherwise)."),
    ] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Cosine schedule: warm-up iterations.")] = 50,
    min_lr: Annotated[float, typer.Option(help="Cosine schedule: the rate at the last iteration.")] = 1e-6,
) -> None:
    """Train GU2Net on mixed single-anatomy batches with the reference schedule (Adam, CyclicLR triangular2).

    --recipe reference reproduces the paper; --recipe robust adds augmentation that keeps the landmarks exact and
    sub-pixel targets (recorded in config.json and the weights header; --resume keeps it).

    The run directory gets config.json, metrics.jsonl, loss.png, lr.png, the checkpoint (checkpoint.json and
    parts no larger than the part size) and best.safetensors (the best-validation model as a weights file).
    Exit 0 when the run is complete, 75 when the time limit or SIGTERM stopped it (resumable), 2 on errors.
    """
    if (out is None) == (resume is None):
        fail("give exactly one of --out RUN_DIR (new run) or --resume RUN_DIR")
    if resume is not None:
        _no_config_options_on_resume(context)

    def report(line: str) -> None:
        err_console.print(line, markup=False, highlight=False)

    with one_line_errors():
        if resume is not None:
            options = RunOptions(data=data, device=device, workers=workers, max_minutes=max_minutes,
                                 progress=progress, report=report)
            trainer = resume_run(resume, options)
            run_dir = resume
        else:
            if data is None:
                fail("--data is needed for a new run")
            names = [a.name for a in anatomies_or_exit(anatomies)]
            config = TrainConfig(
                data=str(data), recipe=recipe.value, anatomies=names, epochs=epochs, batch_size=batch_size, lr=lr,
                max_lr=max_lr, step_size=step_size, weight_decay=weight_decay, val_every=val_every, amp=amp.value,
                channels_last=channels_last, seed=seed, local_widths=_widths(local_widths),
                global_width=global_width, limit=limit, checkpoint_every=checkpoint_every, part_mib=part_mib,
                init=None if init is None else str(init), freeze=[g for g in freeze.split(",") if g],
                schedule=None if schedule is None else schedule.value, warmup=warmup, min_lr=min_lr,
            )
            options = RunOptions(data=data, device=device, workers=workers, max_minutes=max_minutes,
                                 progress=progress, report=report)
            trainer = start_run(config, out, options)
            run_dir = out
        total = trainer.config.epochs * trainer.iterations_per_epoch
        report(f"{run_dir}: iteration {trainer.iteration} of {total} ({trainer.iterations_per_epoch} per epoch)")
        finished = trainer.run()
    if not finished:
        report(f"stopped at iteration {trainer.iteration}: continue with `landmark-edge train --resume {run_dir}`")
        raise typer.Exit(EXIT_STOPPED)
    typer.echo(f"done: {run_dir / BEST} (epoch {trainer.best_epoch})")
