"""GPU fast-path benchmark (issue 8): eager fp32 vs each optimisation step, and each Triton kernel vs cuDNN.

One command on the GPU machine, under 10 minutes, from the repository root::

    PYTHONPATH=. python benchmarks/gpu_fast_path.py --out benchmarks/results

``--sections kernels`` (what benchmarks/device/gpu_check.sh runs) keeps only the kernel rows; ``--batches`` replaces 1,32.

It writes ``gpu_fast_path_<gpu>_<time>.json`` and ``.md`` under ``--out`` after *every* measurement, so a run cut
short still leaves what it measured; steps that do not fit in ``--budget-s`` are recorded as skipped.

Network steps are cumulative, on the full-width GU2Net for one anatomy at its grid size, batch 1 (latency) and
batch 32 (throughput), input already on the GPU, z-scored float32 in, float32 heatmaps out:

    eager_fp32 -> bn_fold -> fp16 -> channels_last -> compile -> cuda_graphs -> triton

then extras: Triton kernels without compile, the other torch.compile modes, the AOTInductor ``.pt2``, and the
``compiled`` backend end to end (uint8 upload, z-score, network, decode). Kernel rows time each fused stage shape
of the network: cuDNN eager, cuDNN under torch.compile, and the Triton kernel, with the Triton error vs fp32.
Weights are random unless ``--weights`` is given (speed does not depend on values; errors are then relative to a
random network's outputs). Timings: CUDA events around each call, median of ``--iters`` after warm-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from landmark_edge.anatomy import get_anatomy
from landmark_edge.bench.environment import cpu_name
from landmark_edge.bench.records import write_record
from landmark_edge.model import SingleAnatomy, gu2net
from landmark_edge.optimize import Kernels, rewrite_for_inference, triton_kernels
from landmark_edge.export.pt2 import export_pt2
from landmark_edge.runtime.compiled import DEFAULT_CUDA_MODE, CompiledBackend, CompileOptions, CudaGraphs, load_pt2
from landmark_edge.weights import load_weights

BATCHES = [1, 32]  # --batches replaces it
SECTIONS = ("network", "kernels", "extras", "end_to_end")
TINY = {"local_widths": (4, 4, 8, 8, 8), "global_width": 8}  # --tiny: a CPU smoke run of this script


@dataclass
class Step:
    name: str
    what: str
    build: Callable[[], Callable[[torch.Tensor], torch.Tensor]]  # returns fn(x) for any batch in BATCHES
    cuda_only: bool = True
    triton: bool = False


class Recorder:
    """Keeps the results and rewrites the JSON and markdown files after every change."""

    def __init__(self, out_dir: Path, meta: dict) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        gpu = meta["device_name"].replace(" ", "-").replace("/", "-")
        self.stem = out_dir / f"gpu_fast_path_{gpu}_{stamp}"
        self.data = {"meta": meta, "network": [], "kernels": [], "skipped": []}

    def add(self, section: str, row: dict) -> None:
        self.data[section].append(row)
        print(json.dumps(row), flush=True)
        self.save()

    def save(self) -> None:
        write_record(self.stem, self.data, to_markdown, device=self.data["meta"]["device"])


def time_ms(fn, x: torch.Tensor, iters: int, warmup: int) -> dict:
    """Median/p90 milliseconds per call (CUDA events on GPU, perf_counter on CPU)."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        samples = []
        for _ in range(iters):
            if x.is_cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(x)
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn(x)
                samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return {"median_ms": statistics.median(samples), "p90_ms": samples[int(0.9 * (len(samples) - 1))]}


def first_call_s(fn, x: torch.Tensor) -> float:
    """Seconds of the first call (compilation, autotuning, graph capture happen here)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def environment(args: argparse.Namespace, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    props = torch.cuda.get_device_properties(device) if cuda else None
    return {  # the machine, versions, command and commit are in the record (landmark_edge.bench.records)
        "device": str(device),
        "device_name": props.name if cuda else cpu_name(),
        "compute_capability": f"{props.major}.{props.minor}" if cuda else None,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1) if cuda else None,
        "triton": getattr(triton_kernels.triton, "__version__", None),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "anatomy": args.anatomy,
        "input_hw": list(get_anatomy(args.anatomy).grid_hw),
        "weights": str(args.weights) if args.weights else "random init (seed 0)",
        "model": "tiny (smoke run)" if args.tiny else "full width (paper)",
        "iters": args.iters,
        "compile_mode": args.compile_mode,
    }


def network_steps(model, anatomy: str, device: torch.device, mode: str) -> list[Step]:
    """The cumulative chain, then the extras; each builder makes its model only when its turn comes."""

    def rewritten(dtype=torch.float16, channels_last=True, kernels=Kernels.CUDNN):
        return rewrite_for_inference(model, anatomy, dtype=dtype, channels_last=channels_last, kernels=kernels).to(
            device
        )

    def compiled(net, compile_mode=mode, graphs=True):
        fn = torch.compile(net, mode=compile_mode, fullgraph=True, dynamic=False)
        return CudaGraphs(fn, device) if graphs else fn

    def graphed(runner):
        return lambda x: runner(x, x.shape[0])

    eager = SingleAnatomy(model, anatomy).to(device).eval()
    return [
        Step("eager_fp32", "GU2Net eager fp32 (the reference)", lambda: eager, cuda_only=False),
        Step("bn_fold", "+ rewrite: BN folded, fused stages (cuDNN), fp32", lambda: rewritten(torch.float32, False),
             cuda_only=False),
        Step("fp16", "+ fp16", lambda: rewritten(torch.float16, False)),
        Step("channels_last", "+ channels_last", lambda: rewritten()),
        Step("compile", f"+ torch.compile({mode})", lambda: compiled(rewritten(), graphs=False)),
        Step("cuda_graphs", "+ CUDA graphs (one per batch size)", lambda: graphed(compiled(rewritten()))),
        Step("triton", "+ Triton fused kernels (compiled, CUDA graphs)",
             lambda: graphed(compiled(rewritten(kernels=Kernels.TRITON))), triton=True),
        Step("triton_eager", "extra: fp16 channels_last + Triton kernels, no compile",
             lambda: rewritten(kernels=Kernels.TRITON), triton=True),
        Step("triton_eager_nchw", "extra: fp16 NCHW + Triton kernels, no compile",
             lambda: rewritten(channels_last=False, kernels=Kernels.TRITON), triton=True),
        Step("compile_default_graphs", "extra: torch.compile(default) + our CUDA graphs, fp16 channels_last",
             lambda: graphed(compiled(rewritten(), "default"))),
        Step("compile_reduce_overhead", "extra: torch.compile(reduce-overhead), fp16 channels_last",
             lambda: compiled(rewritten(), "reduce-overhead", graphs=False)),
        Step("compile_max_autotune", "extra: torch.compile(max-autotune), fp16 channels_last",
             lambda: compiled(rewritten(), "max-autotune", graphs=False)),
    ]  # fmt: skip


def run_network(rec: Recorder, steps: list[Step], hw, device, args, deadline: float, baseline: dict) -> None:
    """Time each step at each batch size; ``baseline`` keeps eager fp32's (ms, output) per batch across calls."""
    inputs = {b: torch.randn(b, 1, *hw, device=device, generator=torch.Generator(device).manual_seed(b))
              for b in BATCHES}  # fmt: skip
    for step in steps:
        if reason := _skip_reason(step, device, deadline):
            rec.data["skipped"].append({"step": step.name, "reason": reason})
            rec.save()
            continue
        fn = step.build()
        for batch in BATCHES:
            x = inputs[batch]
            compile_s = first_call_s(fn, x)
            timing = time_ms(fn, x, args.iters, warmup=3)
            with torch.inference_mode():
                out = fn(x).float().clone()
            if step.name == "eager_fp32":
                baseline[batch] = timing["median_ms"], out
            base_ms, reference = baseline[batch]
            rec.add("network", {
                "step": step.name, "what": step.what, "batch": batch, **timing,
                "images_per_s": batch / timing["median_ms"] * 1e3,
                "speedup_vs_eager_fp32": base_ms / timing["median_ms"],
                "first_call_s": compile_s,
                "max_abs_diff_vs_eager_fp32": float((out - reference).abs().max()),
            })  # fmt: skip
        del fn
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _skip_reason(step: Step, device: torch.device, deadline: float) -> str:
    if step.cuda_only and device.type != "cuda":
        return "needs CUDA"
    if step.triton and not triton_kernels.available():
        return triton_kernels.unavailable_reason()
    if time.monotonic() > deadline:
        return "time budget spent"
    return ""


def kernel_shapes(widths, global_width, hw) -> list[tuple[str, int, int, int, int, int]]:
    """(label, C_in, C_out, H, W, dilation) of distinct fused-stage shapes; dilation 0 marks separable."""
    h, w = hw
    w0, w1, w2, w3, w4 = widths
    return [
        ("sep in_block.stage1 64->64 @1", w0, w0, h, w, 0),
        ("sep up4.stage1 128->64 @1", 2 * w0, w0, h, w, 0),
        ("sep down1.stage2 128->128 @1/2", w1, w1, h // 2, w // 2, 0),
        ("sep down2.stage2 256->256 @1/4", w2, w2, h // 4, w // 4, 0),
        ("sep up1.stage1 1024->512 @1/8", w3 + w4, (w3 + w4) // 2, h // 8, w // 8, 0),
        *[(f"dilated d{d} 128->128 @1/4", global_width, global_width, h // 4, w // 4, d) for d in (1, 2, 5)],
    ]


def run_kernels(rec: Recorder, shapes, device, args, deadline: float) -> None:
    """Each Triton kernel vs the same stage on cuDNN (eager and torch.compile), fp16 channels_last."""
    if reason := triton_kernels.unavailable_reason() or ("needs CUDA" if device.type != "cuda" else ""):
        rec.data["skipped"].append({"step": "kernels", "reason": reason})
        rec.save()
        return
    from landmark_edge.optimize import FusedConvReLU, FusedSeparableConv

    for label, c_in, c_out, h, w, dilation in shapes:
        gen = torch.Generator(device).manual_seed(0)
        if dilation:
            module = FusedConvReLU(torch.randn(c_out, c_in, 3, 3, device=device, generator=gen) / (3 * c_in**0.5),
                                   torch.randn(c_out, device=device, generator=gen), dilation)  # fmt: skip
        else:
            module = FusedSeparableConv(
                torch.randn(c_in, 1, 3, 3, device=device, generator=gen) / 3,
                torch.randn(c_out, c_in, 1, 1, device=device, generator=gen) / c_in**0.5,
                torch.randn(c_out, device=device, generator=gen), 0.01,
            )  # fmt: skip
        for batch in BATCHES:
            if time.monotonic() > deadline:
                rec.data["skipped"].append({"step": f"kernel {label} b{batch}", "reason": "time budget spent"})
                rec.save()
                continue
            x = torch.randn(batch, c_in, h, w, device=device, generator=gen)
            with torch.inference_mode():
                module.kernels = Kernels.CUDNN
                reference = module.float()(x)
            half = module.half().to(memory_format=torch.channels_last)
            xh = x.half().contiguous(memory_format=torch.channels_last)
            row = {"kernel": label, "batch": batch}
            half.kernels = Kernels.CUDNN
            row["cudnn_eager_ms"] = time_ms(half, xh, args.iters, 3)["median_ms"]
            compiled = torch.compile(half, dynamic=False)
            first_call_s(compiled, xh)
            row["cudnn_compile_ms"] = time_ms(compiled, xh, args.iters, 3)["median_ms"]
            half.kernels = Kernels.TRITON
            row["triton_first_call_s"] = first_call_s(half, xh)
            row["triton_ms"] = time_ms(half, xh, args.iters, 3)["median_ms"]
            with torch.inference_mode():
                out = half(xh).float()
            row["triton_max_rel_err_vs_fp32"] = float((out - reference).abs().max() / reference.abs().max())
            row["triton_speedup_vs_cudnn_eager"] = row["cudnn_eager_ms"] / row["triton_ms"]
            row["triton_speedup_vs_cudnn_compile"] = row["cudnn_compile_ms"] / row["triton_ms"]
            rec.add("kernels", row)
            module = module.float().to(memory_format=torch.contiguous_format)


def run_end_to_end(rec: Recorder, model, anatomy, device, args, deadline: float) -> None:
    """The ``compiled`` backend and the ``.pt2`` package as ``infer`` runs them (uint8 in, landmarks out)."""
    import numpy as np

    from landmark_edge.runtime.eager import TorchBackend
    from landmark_edge.runtime.compiled import AOTIBackend

    target = get_anatomy(anatomy)
    pixels = {b: np.random.default_rng(b).integers(0, 255, (b, *target.grid_hw), dtype=np.uint8) for b in BATCHES}
    makers = {
        "backend_torch_fp32": lambda: TorchBackend(model, target, device=device),
        "backend_compiled_fp16": lambda: CompiledBackend(
            model, target, device=device, dtype=torch.float16, options=CompileOptions(channels_last=True),
            max_batch_size=max(BATCHES)),
        "backend_aoti_fp16": lambda: AOTIBackend(_pt2(model, target, device), device=device),
    }  # fmt: skip
    for name, make in makers.items():
        if device.type != "cuda" or time.monotonic() > deadline:
            rec.data["skipped"].append({"step": name, "reason": "needs CUDA" if device.type != "cuda" else
                                        "time budget spent"})  # fmt: skip
            rec.save()
            continue
        t0 = time.perf_counter()
        backend = make()
        for batch in BATCHES:
            backend.run(pixels[batch])
        setup_s = time.perf_counter() - t0
        for batch in BATCHES:
            samples = []
            for _ in range(args.iters):
                t0 = time.perf_counter()
                backend.run(pixels[batch])
                samples.append((time.perf_counter() - t0) * 1e3)
            median = statistics.median(samples)
            rec.add("network", {"step": name, "what": "end to end: upload uint8, z-score, network, decode",
                                "batch": batch, "median_ms": median, "images_per_s": batch / median * 1e3,
                                "first_call_s": setup_s})  # fmt: skip


def _pt2(model, target, device):
    path = Path(tempfile.mkdtemp()) / f"{target.name}.pt2"
    net = rewrite_for_inference(model, target.name, dtype=torch.float16, channels_last=True, kernels=Kernels.AUTO)
    export_pt2(net, target, path, device=str(device), max_batch_size=max(BATCHES))
    return load_pt2(path, str(device))


def to_markdown(data: dict) -> str:
    meta = data["meta"]
    lines = [
        f"# GPU fast path: {meta['device_name']} ({meta['anatomy']}, input {meta['input_hw'][0]}x{meta['input_hw'][1]})",
        "",
        ", ".join(f"{k}: {meta[k]}" for k in ("triton", "weights", "model", "cudnn_allow_tf32")),
        "",
        "| step | what | batch | median ms | p90 ms | images/s | x eager fp32 | first call s | max abs diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in data["network"]:
        lines.append(
            f"| {r['step']} | {r['what']} | {r['batch']} | {r['median_ms']:.3f} | {_f(r.get('p90_ms'), '.3f')} | "
            f"{r['images_per_s']:.1f} | {_f(r.get('speedup_vs_eager_fp32'), '.2f')} | {r['first_call_s']:.1f} | "
            f"{_f(r.get('max_abs_diff_vs_eager_fp32'), '.2e')} |"
        )
    if data["kernels"]:
        lines += ["", "| kernel | batch | cuDNN eager ms | cuDNN compile ms | Triton ms | x eager | x compile | "
                      "Triton rel err (fp16 vs fp32) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in data["kernels"]:
            lines.append(
                f"| {r['kernel']} | {r['batch']} | {r['cudnn_eager_ms']:.3f} | {r['cudnn_compile_ms']:.3f} | "
                f"{r['triton_ms']:.3f} | {r['triton_speedup_vs_cudnn_eager']:.2f} | "
                f"{r['triton_speedup_vs_cudnn_compile']:.2f} | {r['triton_max_rel_err_vs_fp32']:.1e} |"
            )
    if data["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{s['step']} ({s['reason']})" for s in data["skipped"])]
    return "\n".join(lines) + "\n"


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--anatomy", default="chest")
    parser.add_argument("--weights", type=Path, help="weights file (default: random full-width weights)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting new steps after this")
    parser.add_argument("--compile-mode", default=DEFAULT_CUDA_MODE)
    parser.add_argument("--tiny", action="store_true", help="narrow model: a CPU smoke run of this script")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {', '.join(SECTIONS)} (gpu_check.sh runs kernels only)")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes (default 1,32)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if unknown := sections - set(SECTIONS):
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))} (choose from {', '.join(SECTIONS)})")
    BATCHES[:] = [int(b) for b in args.batches.split(",")]
    deadline = time.monotonic() + args.budget_s
    device = torch.device(args.device)
    anatomy = get_anatomy(args.anatomy).name
    if args.weights:
        model, _ = load_weights(args.weights, anatomy)
    else:
        torch.manual_seed(0)
        model = gu2net([anatomy], **(TINY if args.tiny else {})).eval()
    rec = Recorder(args.out, environment(args, device))
    hw = get_anatomy(anatomy).grid_hw
    config = model.config
    steps = network_steps(model, anatomy, device, args.compile_mode)
    baseline: dict = {}
    if "network" in sections:
        run_network(rec, steps[:7], hw, device, args, deadline, baseline)  # the issue's chain first
    if "kernels" in sections:
        run_kernels(rec, kernel_shapes(config["local_widths"], config["global_width"], hw), device, args, deadline)
    if "extras" in sections:
        run_network(rec, ([] if baseline else steps[:1]) + steps[7:], hw, device, args, deadline, baseline)
    if "end_to_end" in sections:
        run_end_to_end(rec, model, anatomy, device, args, deadline)
    print(f"wrote {rec.stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
