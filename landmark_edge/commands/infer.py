"""``landmark-edge infer``: landmarks for images, folders and globs, as a table, JSON, CSV or JSONL.

Bad inputs never stop a run: each is reported in one line and the others go on (exit 10+N for N failures).
With ``--out-dir`` every image's result is its own JSON file, written atomically as soon as the image is done:
``--skip-existing`` resumes an interrupted folder run from those files, and the aggregate output (``--out``) of
the resumed run equals that of an uninterrupted one.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from landmark_edge.analysis import measurement_table, supports
from landmark_edge.anatomy import Anatomy
from landmark_edge.commands.options import (
    AllowFallbackOpt,
    AnatomyOpt,
    ArtifactOpt,
    BackendDeviceOpt,
    BackendOptionOpt,
    BatchSizeOpt,
    DecodeOpt,
    PrecisionOpt,
    WeightsOpt,
    anatomy_or_exit,
    backend_choice,
    backend_option,
    build_status,
    err_console,
    error_line,
    fail,
    failures_exit_code,
    one_line_errors,
    warning_line,
    out_console,
)
from landmark_edge.decode import DecodeMethod
from landmark_edge.distributed.ray import RaySettings
from landmark_edge.errors import OutputError, RunInterrupted
from landmark_edge.inference import InferJob, infer_files
from landmark_edge.io.atomic import atomic_open, atomic_write_text
from landmark_edge.io.inputs import expand_inputs
from landmark_edge.results import (
    ImageFailure,
    ImageResult,
    JsonlResults,
    Outcome,
    ResultStore,
    to_csv,
    to_json,
    to_jsonl_line,
    write_parquet,
)
from landmark_edge.runtime.pipeline import StopSignals
from landmark_edge.runtime.registry import default_backend
from landmark_edge.weights import resolve_weights

FORMATS = ("table", "json", "csv", "jsonl", "parquet")
EXECUTORS = ("process", "ray")


def infer(
    images: Annotated[
        list[Path],
        typer.Argument(
            help="Image files (PNG, JPEG, BMP, TIFF, DICOM), folders (searched recursively) or quoted glob "
            "patterns ('scans/**/*.dcm').",
            show_default=False,
        ),
    ],
    anatomy: AnatomyOpt,
    weights: WeightsOpt = None,
    batch_size: BatchSizeOpt = 8,
    device: BackendDeviceOpt = "cpu",
    backend: Annotated[
        str | None,
        backend_option(
            "onnxruntime for fp32 on the CPU (its graph cached per weights), else torch. Drift from torch fp32 "
            "with openvino: fp32 none (within 1e-4); bf16 moved chest landmarks up to 0.21 px (mean 0.03) on a CPU "
            "with AVX512_BF16 (elsewhere it runs fp32, and the run record says so); int8 (an IR from `export "
            "--profile cpu-openvino-int8`) is held to a drift bound when exported (chest 1 px, head 0.5 mm by default; "
            "export warns when it cannot meet it, as on the shipped chest weights: 21 px on one test landmark)"
        ),
    ] = None,
    precision: PrecisionOpt = "fp32",
    artifact: ArtifactOpt = None,
    allow_fallback: AllowFallbackOpt = False,
    option: BackendOptionOpt = None,
    decode: DecodeOpt = DecodeMethod.SUBPIXEL,
    spacing: Annotated[
        float | None,
        typer.Option(min=0.0, help="Pixel spacing in mm (original image); overrides DICOM tags and the anatomy's."),
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)} (parquet: into --out, needs pyarrow).")
    ] = "table",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the output here (atomically; jsonl streams into it).")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(help="Also write one JSON per image, DIR/<path relative to the inputs' common folder>.json."),
    ] = None,
    skip_existing: Annotated[
        bool, typer.Option(help="Resume: reuse the --out-dir results (and --overlay PNGs) already written.")
    ] = False,
    overlay: Annotated[
        Path | None, typer.Option(help="Write DIR/<relative path>.png: the image with numbered landmarks.")
    ] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, show_default=False,
            help="Flag results with a heatmap peak below this. Default: the anatomy's per-landmark minimums in "
            "landmark_edge/layouts.json, 0.1 where none is calibrated.",
        ),
    ] = None,
    save_heatmaps: Annotated[
        Path | None, typer.Option(help="Write DIR/<relative path>.npy, float32 (C, H, W) on the model grid.")
    ] = None,
    measurements: Annotated[
        bool,
        typer.Option(
            help="Head only: add the eight ISBI 2015 cephalometric measurements and their classes (ANB, SNB, "
            "SNA, ODI, APDI, FHI, FMA, MW) to every result, table and overlay."
        ),
    ] = False,
    executor: Annotated[
        str,
        typer.Option(help="process: batches in this process; ray: a Ray cluster (pip install 'landmark-edge\\[ray]')."),
    ] = "process",
    ray_address: Annotated[
        str,
        typer.Option(help="--executor ray: 'local' starts an in-process cluster; else a head node, e.g. HOST:6379."),
    ] = "local",
    ray_actors: Annotated[
        int | None,
        typer.Option(min=1, help="--executor ray: network actors (default: one per GPU with --device cuda, else 1)."),
    ] = None,
) -> None:
    """Detect an anatomy's landmarks; coordinates in original pixels, and in mm where the spacing is known.

    Results whose heatmap peaks are weak or whose landmarks are arranged unlike the anatomy's training images are
    flagged (a warning line, and "flags" in the output): a wrong --anatomy or a non-X-ray does not pass silently.
    """
    target = anatomy_or_exit(anatomy)
    backend = backend or default_backend(device, precision, artifact)
    # checked before any input or weights are touched
    choice = backend_choice(backend, artifact, precision, device, decode, option, allow_fallback)
    if output_format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}", param_hint="--format")
    if executor not in EXECUTORS:
        raise typer.BadParameter(f"--executor must be one of {', '.join(EXECUTORS)}", param_hint="--executor")
    if output_format == "parquet" and out is None:
        fail("--format parquet writes a file: give --out FILE")
    streams = output_format == "jsonl" and out is not None  # a JSONL file keeps what an interrupted run wrote
    if skip_existing and out_dir is None and not streams:
        fail("--skip-existing resumes from per-image results: give --out-dir DIR too (or -f jsonl -o FILE)")
    if measurements and not supports(target.landmark_names):
        fail(f"--measurements: the cephalometric measurements need the head landmarks, not {target.name}'s")
    inputs = expand_inputs(images)
    if inputs.skipped:
        err_console.print(f"note: skipped {inputs.skipped} files in folders that are not images or DICOM")
    counts = {"failed": 0, "flagged": 0, "total": 0, "results": 0}
    stop = StopSignals()
    with one_line_errors():
        job = InferJob(
            target, choice, resolve_weights(weights) if artifact is None else weights,  # an artefact has its network
            ResultStore(out_dir, inputs.files), batch_size=batch_size, spacing_mm=spacing,
            min_confidence=min_confidence, measurements=measurements, skip_existing=skip_existing, overlay=overlay,
            save_heatmaps=save_heatmaps, stop=stop, resume_from=JsonlResults(out) if streams and not out_dir else None,
            cluster=RaySettings(ray_address, ray_actors, gpu=not device.startswith("cpu")) if executor == "ray" else None,
        )  # fmt: skip
        outcomes = infer_files(job, inputs.files, building=build_status, log=partial(err_console.print, markup=False))
        shows_flags = not (output_format == "table" and out is None)  # the table on screen prints them itself
        signals = stop.installed() if executor == "process" else nullcontext()
        inputs_total = len(inputs.files) + len(inputs.failures)
        try:
            with signals, _output(output_format, out, target) as emit, _progress(len(inputs.files)) as advance:
                for failure in inputs.failures:
                    _report(failure, counts, emit)
                for outcome in outcomes:
                    _report(outcome, counts, emit, warn=shows_flags)
                    advance()
        except RunInterrupted as stopped:
            kept = counts["results"] if out_dir is not None or streams else 0
            err_console.print(_resume_line(str(stopped), kept, inputs_total, out_dir or out), markup=False)
            raise typer.Exit(130) from None
        except OutputError as error:  # disk full, read-only: what was written is whole; the rest failed
            error_line(str(error))
            raise typer.Exit(failures_exit_code(inputs_total - (counts["results"] if out_dir else 0))) from None
    if counts["flagged"]:
        err_console.print(f"{counts['flagged']} of {counts['total']} results flagged (weak heatmap peaks, an "
                          "implausible layout or an image shape the anatomy never has)")
    if counts["failed"]:
        err_console.print(f"{counts['failed']} of {counts['total']} inputs failed")
    raise typer.Exit(failures_exit_code(counts["failed"]))


def _resume_line(signal_name: str, kept: int, total: int, where: Path | None) -> str:
    """What an interrupted run says: how many results are on disk, and the command that resumes it."""
    if not kept and where is None:
        return f"interrupted ({signal_name}): no results on disk (give --out-dir DIR, or -f jsonl -o FILE, to resume)"
    argv = sys.argv[1:]
    again = shlex.join(["landmark-edge", *argv, *([] if "--skip-existing" in argv else ["--skip-existing"])])
    command = again if argv[:1] == ["infer"] else "the same command with --skip-existing"
    return f"interrupted ({signal_name}): {kept} of {total} results on disk in {where}; resume with: {command}"


def _report(outcome: Outcome, counts: dict[str, int], emit: Callable[[Outcome], None], warn: bool = True) -> None:
    """Count an outcome and emit it; a flag is printed once: as a warning line unless the output shows it."""
    counts["total"] += 1
    counts["results"] += isinstance(outcome, ImageResult)
    if isinstance(outcome, ImageFailure):
        counts["failed"] += 1
        error_line(outcome.error)
    elif outcome.flags:
        counts["flagged"] += 1
        for flag in outcome.flags if warn else ():
            warning_line(f"{outcome.path}: {flag}")
    emit(outcome)


@contextmanager
def _output(output_format: str, out: Path | None, anatomy: Anatomy) -> Iterator[Callable[[Outcome], None]]:
    """Where outcomes go: JSONL streams line by line (into a temp file renamed at the end when --out is given);
    the other formats are written once, when the run completes, so an interrupted run leaves no partial file."""
    if output_format == "jsonl" and out is None:
        yield lambda outcome: typer.echo(to_jsonl_line(outcome), nl=False)
    elif output_format == "jsonl":  # an interrupted run keeps every line it wrote (resumed with --skip-existing)
        with atomic_open(out, "w", keep_partial=(RunInterrupted, KeyboardInterrupt), encoding="utf-8") as handle:

            def write_line(outcome: Outcome) -> None:
                handle.write(to_jsonl_line(outcome))
                handle.flush()  # a line at a time: a killed run's temp file holds whole lines

            yield write_line
    else:
        outcomes: list[Outcome] = []
        yield outcomes.append
        _emit(outcomes, anatomy, output_format, out)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr for runs over several images (hidden when stderr is not a terminal)."""
    with Progress(console=err_console, transient=True, disable=total < 2 or not err_console.is_terminal) as bar:
        task = bar.add_task("inferring", total=total)
        yield lambda: bar.advance(task)


def _emit(outcomes: list[Outcome], anatomy: Anatomy, output_format: str, out: Path | None) -> None:
    if output_format == "table":
        console = out_console(record=out is not None, width=120 if out else None)
        for outcome in outcomes:
            if isinstance(outcome, ImageResult):
                console.print(_summary(outcome, anatomy), soft_wrap=True, markup=False)
                console.print(_table(outcome))
                if outcome.measurements is not None:
                    console.print(measurement_table(outcome))
        if out is not None:
            atomic_write_text(out, console.export_text())
        return
    if output_format == "parquet":
        write_parquet(outcomes, out)
        return
    text = {"json": to_json, "csv": to_csv}[output_format](outcomes)
    if out is not None:
        atomic_write_text(out, text)
    else:
        typer.echo(text, nl=False)


def _summary(result: ImageResult, anatomy: Anatomy) -> str:
    spacing = "unknown" if result.spacing_mm is None else f"{result.spacing_mm[0]:g} x {result.spacing_mm[1]:g} mm"
    flagged = "  FLAGGED: " + "; ".join(result.flags) if result.flags else ""
    return (
        f"{result.path}  [{anatomy.name}, {result.width}x{result.height} px, spacing {spacing} "
        f"({result.spacing_source}), decode {result.decode}]{flagged}"
    )


def _table(result: ImageResult) -> Table:
    table = Table()
    for column in ("#", "landmark", "x px", "y px", "x mm", "y mm", "confidence"):
        table.add_column(column, justify="left" if column == "landmark" else "right")
    for lm in result.landmarks:
        mm = ("-", "-") if lm.x_mm is None else (f"{lm.x_mm:.2f}", f"{lm.y_mm:.2f}")
        table.add_row(str(lm.index), lm.name, f"{lm.x:.1f}", f"{lm.y:.1f}", *mm, f"{lm.confidence:.3f}")
    return table
