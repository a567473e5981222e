"""One anatomy's network as a verified AOTInductor package (``.pt2``): ``landmark-edge compile``'s work.

Rewrite (BatchNorm folded, separable and dilated stages fused), summarise what the rewrite removed, export and
AOT-compile (:func:`landmark_edge.export.pt2.export_pt2`), then load the package back through the runtime
(:func:`landmark_edge.runtime.compiled.load_pt2`, as the ``aoti`` backend does) and compare it with the eager
model. Writing uses export and checking uses the runtime, which never import each other, so this job stands
above both, beside :mod:`landmark_edge.backends`. The command only parses, shows progress and prints the report.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from landmark_edge.anatomy import Anatomy
from landmark_edge.export.pt2 import export_pt2
from landmark_edge.optimize import Kernels, rewrite_for_inference, select_anatomy, summarize
from landmark_edge.runtime.compiled import load_pt2
from landmark_edge.runtime.eager import torch_dtype
from landmark_edge.weights import load_weights

__all__ = ["CompileReport", "compile_pt2"]


@dataclass
class CompileReport:
    """What was compiled, what the rewrite changed (operator counts) and, when verified, how far the package is
    from the eager fp32 model. ``to_dict`` is ``compile --format json``'s output."""

    package: str
    anatomy: str
    device: str
    precision: str
    max_batch_size: int
    channels_last: bool
    kernels: str
    autotune: bool
    weights_sha256: str
    eager: dict
    rewritten: dict
    compile_seconds: float = 0.0
    max_abs_heatmap_diff_vs_eager_fp32: float | None = None  # None: not verified

    def to_dict(self) -> dict:
        report = asdict(self)
        if self.max_abs_heatmap_diff_vs_eager_fp32 is None:
            del report["max_abs_heatmap_diff_vs_eager_fp32"]
        return report


def compile_pt2(
    weights: Path,
    anatomy: Anatomy,
    out: Path,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    max_batch_size: int = 32,
    channels_last: bool = False,
    kernels: Kernels = Kernels.AUTO,
    autotune: bool = True,
    verify: bool = True,
    progress: Callable[[str], None] = lambda step: None,
) -> CompileReport:
    """Compile ``anatomy``'s network of ``weights`` into ``out`` (atomically); ``progress`` hears the long step.

    Triton kernels and autotuning are CUDA-only, so on the CPU they are off whatever is asked.
    """
    dtype = torch_dtype(precision)
    model, info = load_weights(weights, anatomy.name)
    kernels = kernels if device.startswith("cuda") else Kernels.CUDNN
    net = rewrite_for_inference(model, anatomy.name, dtype=dtype, channels_last=channels_last, kernels=kernels)
    example = torch.zeros(1, 1, 64, 64)  # operator counts do not depend on the image size
    report = CompileReport(
        package=str(out), anatomy=anatomy.name, device=device, precision=precision, max_batch_size=max_batch_size,
        channels_last=channels_last, kernels=kernels.value, autotune=autotune and device.startswith("cuda"),
        weights_sha256=info.sha256,
        eager=summarize(select_anatomy(model, anatomy.name), example, anatomy.name).__dict__,
        rewritten=summarize(net, example).__dict__,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # compiler warnings; errors still raise, in one line
        progress("export + AOTInductor compile" + (" (autotuning every convolution)" if report.autotune else ""))
        started = time.perf_counter()
        export_pt2(net, anatomy, out, device=device, max_batch_size=max_batch_size,
                   info={"weights_sha256": info.sha256, "preprocessing": info.preprocessing},
                   autotune=report.autotune)  # fmt: skip
        report.compile_seconds = round(time.perf_counter() - started, 1)
    if verify:
        report.max_abs_heatmap_diff_vs_eager_fp32 = _verify(out, model, anatomy.name, device)
    return report


@torch.inference_mode()
def _verify(path: Path, model, anatomy: str, device: str) -> float:
    """Largest heatmap difference between the package and the eager fp32 model on a random batch of two."""
    package = load_pt2(path, device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(min(2, package.max_batch_size), 1, package.height, package.width, generator=generator)
    expected = model.to(device)(x.to(device), anatomy)
    return float((package.runner(x.to(device)) - expected).abs().max())
