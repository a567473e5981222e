"""``landmark-edge compile``: one anatomy's network as a deployable AOTInductor package (``.pt2``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from landmark_edge.aoti import compile_pt2
from landmark_edge.commands.options import AnatomyOpt, DeviceOpt, WeightsOpt, anatomy_or_exit
from landmark_edge.commands.options import FormatOpt, ReportFormat
from landmark_edge.commands.options import err_console, one_line_errors
from landmark_edge.optimize import Kernels
from landmark_edge.weights import resolve_weights


def compile_package(
    anatomy: AnatomyOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="The .pt2 package to write (atomically).")],
    weights: WeightsOpt = None,
    device: DeviceOpt = "cpu",
    precision: Annotated[str, typer.Option(help="Compute precision baked into the package: fp32, fp16, bf16.")] = "fp32",
    max_batch: Annotated[int, typer.Option(min=1, help="Largest batch the package accepts.")] = 32,
    channels_last: Annotated[bool, typer.Option(help="Run the convolutions in channels_last (NHWC).")] = False,
    kernels: Annotated[
        Kernels, typer.Option(help="Fused stages: triton kernels on CUDA when installed (auto), or cuDNN convs.")
    ] = Kernels.AUTO,
    autotune: Annotated[
        bool,
        typer.Option(help="CUDA: benchmark Inductor's kernel choices for every convolution shape (minutes, paid "
                          "once here instead of at every start). Ignored on CPU."),
    ] = True,
    verify: Annotated[bool, typer.Option(help="Load the package and compare it with the eager model.")] = True,
    output_format: FormatOpt = ReportFormat.TABLE,
) -> None:
    """Fold BatchNorm, fuse the separable and dilated stages, export and AOT-compile one anatomy's network.

    The package runs with `landmark-edge infer --backend aoti --artifact FILE` and needs neither the weights file
    nor the model code. It is compiled for --device's type (cpu or cuda); compilation takes minutes (on CUDA
    mostly --autotune), loading it takes seconds.
    """
    target = anatomy_or_exit(anatomy)
    with one_line_errors():
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise typer.BadParameter("CUDA is not available here", param_hint="--device")
        with _progress() as progress:
            report = compile_pt2(
                resolve_weights(weights), target, out, device=device, precision=precision,
                max_batch_size=max_batch, channels_last=channels_last, kernels=kernels,
                autotune=autotune, verify=verify, progress=lambda step: progress.add_task(step, total=None),
            ).to_dict()  # fmt: skip
    if output_format is ReportFormat.JSON:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print(report)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console)


def _print(report: dict) -> None:
    eager, rewritten = report["eager"], report["rewritten"]
    err_console.print(
        f"wrote {report['package']}  [{report['anatomy']}, {report['device']}, {report['precision']}, "
        f"batch 1..{report['max_batch_size']}, kernels {report['kernels']}] in {report['compile_seconds']} s"
    )
    err_console.print(
        f"parameters {eager['parameters']:,} -> {rewritten['parameters']:,}; "
        f"batch_norm ops {eager['aten_ops'].get('batch_norm', 0)} -> {rewritten['aten_ops'].get('batch_norm', 0)}"
    )
    if "max_abs_heatmap_diff_vs_eager_fp32" in report:
        err_console.print(f"max |heatmap - eager fp32| = {report['max_abs_heatmap_diff_vs_eager_fp32']:.3g}")
