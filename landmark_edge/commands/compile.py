"""``landmark-edge compile``: one anatomy's network as a deployable AOTInductor package (``.pt2``)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from landmark_edge.commands.options import AnatomyOpt, DeviceOpt, WeightsOpt, anatomy_or_exit
from landmark_edge.commands.options import FormatOpt, ReportFormat
from landmark_edge.commands.options import err_console, one_line_errors
from landmark_edge.export.pt2 import export_pt2
from landmark_edge.optimize import Kernels, rewrite_for_inference, select_anatomy, summarize
from landmark_edge.runtime.compiled import load_pt2
from landmark_edge.runtime.registry import torch_dtype
from landmark_edge.weights import load_weights, resolve_weights


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
        dtype = torch_dtype(precision)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise typer.BadParameter("CUDA is not available here", param_hint="--device")
        model, info = load_weights(resolve_weights(weights), target.name)
        kernels = kernels if device.startswith("cuda") else Kernels.CUDNN  # Triton kernels are CUDA-only
        net = rewrite_for_inference(model, target.name, dtype=dtype, channels_last=channels_last, kernels=kernels)
        example = torch.zeros(1, 1, 64, 64)  # operator counts do not depend on the image size
        report = {
            "package": str(out),
            "anatomy": target.name,
            "device": device,
            "precision": precision,
            "max_batch_size": max_batch,
            "channels_last": channels_last,
            "kernels": kernels.value,
            "autotune": autotune and device.startswith("cuda"),
            "weights_sha256": info.sha256,
            "eager": summarize(select_anatomy(model, target.name), example, target.name).__dict__,
            "rewritten": summarize(net, example).__dict__,
        }
        with _progress() as progress, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # compiler warnings; errors still raise, in one line
            step = "export + AOTInductor compile" + (" (autotuning every convolution)" if report["autotune"] else "")
            progress.add_task(step, total=None)
            started = time.perf_counter()
            export_pt2(net, target, out, device=device, max_batch_size=max_batch,
                       info={"weights_sha256": info.sha256, "preprocessing": info.preprocessing},
                       autotune=report["autotune"])
            report["compile_seconds"] = round(time.perf_counter() - started, 1)
        if verify:
            report["max_abs_heatmap_diff_vs_eager_fp32"] = _verify(out, model, target.name, device)
    if output_format is ReportFormat.JSON:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print(report)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console)


@torch.inference_mode()
def _verify(path: Path, model, anatomy: str, device: str) -> float:
    """Largest heatmap difference between the package and the eager fp32 model on a random batch of two."""
    package = load_pt2(path, device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(min(2, package.max_batch_size), 1, package.height, package.width, generator=generator)
    expected = model.to(device)(x.to(device), anatomy)
    return float((package.runner(x.to(device)) - expected).abs().max())


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
