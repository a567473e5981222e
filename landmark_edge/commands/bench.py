"""``landmark-edge bench``: every backend against the eager fp32 reference on real images, in one process."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from landmark_edge.bench.report import rich_table, write_outputs
from landmark_edge.bench.results import BenchReport
from landmark_edge.bench.runner import BenchConfig, parse_specs, run_bench
from landmark_edge.commands.options import (
    AllowFallbackOpt,
    AnatomyOpt,
    BackendOptionOpt,
    DecodeOpt,
    DeviceOpt,
    FormatOpt,
    ReportFormat,
    WeightsOpt,
    anatomy_or_exit,
    backend_options,
    err_console,
    fail,
    failures_exit_code,
    one_line_errors,
    options_for,
    stdout_is_terminal,
    out_console,
)
from landmark_edge.decode import DecodeMethod
from landmark_edge.io.inputs import expand_inputs
from landmark_edge.runtime.registry import (
    BackendChoice,
    all_precisions,
    backend_for_artifact,
    backend_names,
    check_options,
)
from landmark_edge.weights import resolve_weights

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def bench(
    anatomy: AnatomyOpt,
    backends: Annotated[
        str, typer.Option(help=f"Comma-separated registry names, or 'all' ({', '.join(backend_names())}).")
    ] = "all",
    precisions: Annotated[
        str,
        typer.Option(help="Comma-separated precisions (fp32, fp16, bf16, int8) tried for every backend; "
                     "NAME:PRECISION tries one for that backend only, e.g. fp32,openvino:bf16,openvino:int8."),
    ] = "fp32",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    images: Annotated[
        Path | None,
        typer.Option(help="Folder of real images for timing and drift. Default: the package's example image."),
    ] = None,
    max_images: Annotated[int, typer.Option(min=1, help="Use at most this many images of --images.")] = 16,
    iters: Annotated[int, typer.Option(min=1, help="Timed batches per backend and batch size.")] = 50,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed batches after the drift pass.")] = 5,
    weights: WeightsOpt = None,
    device: DeviceOpt = "cpu",  # the reference's device too: a torch device
    decode: DecodeOpt = DecodeMethod.SUBPIXEL,
    option: BackendOptionOpt = None,
    artifact: Annotated[
        list[str] | None,
        typer.Option(
            "--artifact", metavar="[NAME:[PRECISION=]]PATH",
            help="Exported model for one backend (repeatable): NAME:PATH, or PATH alone for the first backend whose "
            "files carry its suffix (see `infer --help`), e.g. aoti:chest.pt2, chest.onnx; NAME:PRECISION=PATH "
            "for that precision's rows only, e.g. openvino:int8=chest.int8.xml.",
        ),
    ] = None,
    allow_fallback: AllowFallbackOpt = False,
    out_dir: Annotated[
        Path | None, typer.Option(help="Where bench.json/.md/.png go. Default: benchmarks/results/<device>-<anatomy>.")
    ] = None,
    output_format: FormatOpt = ReportFormat.TABLE,
) -> None:
    """Time every backend (latency percentiles, images/s, stage split, peak GPU memory) against the eager fp32
    torch reference, which always runs first in the same process, and measure each one's landmark drift from it on
    real images. A backend that cannot run here is reported as skipped, with the reason. --device auto: cuda
    when available, else cpu (the default is cpu, as for every command)."""
    target = anatomy_or_exit(anatomy)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device}: CUDA is not available here (torch {torch.__version__})")
    sizes = _int_list(batch_sizes, "--batch-sizes")
    names = backend_names() if backends.strip() == "all" else _text_list(backends)
    given = backend_options(option or [])
    artifacts = _artifacts(artifact or [], names)
    choices = [
        BackendChoice(name, artifacts.get((name, None)), "fp32", device, decode, options_for(given, name),
                      allow_fallback)
        for name in names
    ]  # fmt: skip
    own = {(name, precision): path for (name, precision), path in artifacts.items() if precision is not None}
    with one_line_errors():  # a misspelt option or backend is one line before anything is measured
        for choice in choices:
            check_options(choice.backend, choice.options)
    out_dir = out_dir or Path("benchmarks/results") / f"{_device_slug(device)}-{target.name}"
    with one_line_errors():
        weights_path = resolve_weights(weights)
        config = BenchConfig(
            anatomy=target,
            weights=weights_path,
            specs=parse_specs(choices, _precisions(precisions, names), own),
            batch_sizes=sizes,
            images=_image_files(images, max_images),
            iters=iters,
            warmup=warmup,
            device=device,
            decode=decode,
            argv=list(sys.argv),
        )
        config.command = _command(
            ("--anatomy", target.name), ("--backends", ",".join(names)), ("--precisions", precisions),
            ("--batch-sizes", ",".join(map(str, sizes))), ("--images", images), ("--max-images", max_images),
            ("--iters", iters), ("--warmup", warmup), ("--weights", weights_path), ("--device", device),
            ("--decode", decode.value), *(("--option", item) for item in option or []),
            *(("--artifact", f"{name}:{'' if p is None else p + '='}{path}") for (name, p), path in artifacts.items()),
            ("--allow-fallback", allow_fallback or None), ("--out-dir", out_dir),
        )
        report = _run_keeping_partial(config, out_dir)
        paths = write_outputs(report, out_dir)
    if output_format is ReportFormat.JSON:
        typer.echo(report.model_dump_json(indent=2))
    else:
        out_console(width=None if stdout_is_terminal() else 200).print(rich_table(report))
    err_console.print(f"wrote {', '.join(str(p) for p in paths.values())}")
    failed = sum(row.status == "failed" for row in report.rows)
    raise typer.Exit(failures_exit_code(failed))


def _run_keeping_partial(config: BenchConfig, out_dir: Path) -> BenchReport:
    """Run with a progress display, saving the report after every backend; an interrupted run (Ctrl-C, a
    ``timeout``) still leaves every finished backend's rows, table and plot in ``out_dir``."""
    finished: list[BenchReport] = []

    def save(report: BenchReport) -> None:
        write_outputs(report, out_dir, with_plot=False)
        finished[:] = [report]

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console, transient=True) as progress:
            return run_bench(config, progress, on_row=save)
    except KeyboardInterrupt:
        if finished:
            write_outputs(finished[0], out_dir)
            err_console.print(f"interrupted: the finished backends' results are in {out_dir}")
        raise


def _artifacts(items: list[str], names: list[str]) -> dict[tuple[str, str | None], Path]:
    """``--artifact [NAME:[PRECISION=]]PATH`` items by (backend, precision or None for all of its precisions):
    NAME: as in --option, else the backend whose suffix it has."""
    artifacts: dict[tuple[str, str | None], Path] = {}
    for item in items:
        name, sep, path = item.partition(":")
        named = bool(sep) and name in backend_names()
        if not named:  # no backend name in front: a plain path
            name, path = backend_for_artifact(Path(item)), item
        if name is None:
            fail(f"--artifact {item}: name its backend (NAME:PATH, NAME one of {', '.join(backend_names())})")
        if name not in names:
            fail(f"--artifact {item}: the {name} backend is not among --backends ({', '.join(names)})")
        precision, equals, rest = path.partition("=")
        if named and equals and precision in all_precisions():
            artifacts[name, precision] = Path(rest)
        else:
            artifacts[name, None] = Path(path)
    return artifacts


def _precisions(text: str, names: list[str]) -> list[tuple[str | None, str]]:
    """``--precisions [NAME:]PRECISION,...`` as (backend or None for every backend, precision)."""
    pairs = []
    for item in _text_list(text):
        name, _, precision = item.rpartition(":")
        if precision not in all_precisions():
            fail(f"--precisions {item}: unknown precision '{precision}' (choose from {', '.join(all_precisions())})")
        if name and name not in names:
            fail(f"--precisions {item}: the {name} backend is not among --backends ({', '.join(names)})")
        pairs.append((name or None, precision))
    if not pairs:
        fail("--precisions: give at least one precision")
    return pairs


def _text_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(part) for part in _text_list(text)]
    except ValueError:
        fail(f"{flag}: expected comma-separated integers, got '{text}'")
    if not values or min(values) < 1:
        fail(f"{flag}: expected positive integers, got '{text}'")
    return values


def _image_files(folder: Path | None, limit: int) -> list[Path]:
    if folder is None:
        return sorted(EXAMPLES.glob("*.png"))[:limit]
    if not folder.is_dir():
        fail(f"{folder}: --images must be a folder of images")
    files = expand_inputs([folder]).files
    if not files:
        fail(f"{folder}: no readable image files in this folder")
    return files[:limit]


def _device_slug(device: str) -> str:
    """``nvidia-h200`` or ``cpu-2core``: results of different machines land in different folders."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(torch.device(device)).lower()).strip("-")
    return f"cpu-{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}core"


def _command(*flags: tuple[str, object]) -> str:
    """The command line that reproduces this run, every default spelled out."""
    args = ["landmark-edge", "bench"]
    for flag, value in flags:
        if value is not None:
            args += [flag] if value is True else [flag, str(value)]  # True: a flag without a value
    return shlex.join(args)
