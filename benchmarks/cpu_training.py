"""CPU training speed and learning: fp32 vs bf16 autocast vs bf16 + channels_last (issue 26, item 2).

Speed: seconds per training iteration (one batch of one anatomy: forward, float32 BCE, backward, Adam step) of the
full GU2Net, median over ``--iterations`` after ``--warmup`` untimed ones, the same batch every time. Learning: the
same model (same seed), the same ``--learn-iterations`` batches in the same order, Adam at ``--lr``, under each
setting; bf16 learns as fp32 does when its loss curve stays close to fp32's (the mean and the last relative
difference are printed; bf16 rounds activations to 8 bits of mantissa, so the curves are never bit-equal).

Prints a Markdown table and, with ``--out STEM``, writes ``STEM.json`` and ``STEM.md`` through the records helper.
Run it on a quiet machine: two jobs sharing the cores slow each other many times over.

    PYTHONPATH=. python benchmarks/cpu_training.py --data data_packed --out benchmarks/results/cpu_training
    python benchmarks/cpu_training.py --data data_packed --anatomy hand --iterations 3 --learn-iterations 10
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from landmark_edge.anatomy import PAPER_ORDER, get_anatomy
from landmark_edge.data import Batch, GridDataset, load_split
from landmark_edge.bench.records import write_record
from landmark_edge.model import gu2net
from landmark_edge.training.schedule import build_optimizer
from landmark_edge.training.trainer import batch_loss

SETTINGS = {"fp32": ("none", False), "bf16": ("bf16", False), "bf16+channels_last": ("bf16", True)}
CPU = torch.device("cpu")


def model_for(amp_channels_last: bool, seed: int, widths: list[int], global_width: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = gu2net(PAPER_ORDER, local_widths=widths, global_width=global_width).train()
    return model.to(memory_format=torch.channels_last) if amp_channels_last else model


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, amp: str, channels_last: bool
         ) -> float:  # fmt: skip
    loss = batch_loss(model, batch, CPU, amp, channels_last)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def speed(batch: Batch, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per iteration of each setting on one batch."""
    result = {}
    for name, (amp, channels_last) in SETTINGS.items():
        model = model_for(channels_last, args.seed, args.local_widths, args.global_width)
        optimizer = build_optimizer(model, args.lr, 1e-4)
        times = []
        for index in range(args.warmup + args.iterations):
            start = time.perf_counter()
            step(model, optimizer, batch, amp, channels_last)
            if index >= args.warmup:
                times.append(time.perf_counter() - start)
        result[name] = statistics.median(times)
        print(f"{name}: {result[name]:.2f} s/iteration", flush=True)
    return result


def learning(batches: list[Batch], args: argparse.Namespace) -> dict[str, list[float]]:
    """Each setting's per-image loss over the same batches from the same initial weights."""
    curves = {}
    for name, (amp, channels_last) in SETTINGS.items():
        model = model_for(channels_last, args.seed, args.local_widths, args.global_width)
        optimizer = build_optimizer(model, args.lr, 1e-4)
        curves[name] = [step(model, optimizer, b, amp, channels_last) / len(b.ids) for b in batches]
        print(f"{name}: loss/image {curves[name][0]:.0f} -> {curves[name][-1]:.0f}", flush=True)
    return curves


def closeness(curves: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Mean and last relative difference of each curve to fp32's."""
    reference = curves["fp32"]
    out = {}
    for name, curve in curves.items():
        relative = [abs(a - b) / b for a, b in zip(curve, reference, strict=True)]
        out[name] = {"mean_relative_difference": sum(relative) / len(relative),
                     "last_relative_difference": relative[-1]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="Dataset root (a `pack` folder reads fastest).")
    parser.add_argument("--anatomy", default="head")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=5, help="Timed iterations per setting.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed iterations first (oneDNN primitive set-up).")
    parser.add_argument("--learn-iterations", type=int, default=20, help="Iterations of the learning comparison.")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--local-widths", type=lambda t: [int(v) for v in t.split(",")],
                        default=[64, 128, 256, 512, 512])
    parser.add_argument("--global-width", type=int, default=128)
    parser.add_argument("--out", type=Path, help="Also write the record STEM.json and STEM.md.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    anatomy = get_anatomy(args.anatomy)
    samples = load_split(args.data, anatomy, "train").samples
    dataset = GridDataset(samples, anatomy)
    size = args.batch_size
    count = min(args.learn_iterations, len(samples) // size)
    batches = [dataset.batch(list(range(i * size, (i + 1) * size))) for i in range(max(count, 1))]
    seconds = speed(batches[0], args)
    curves = learning(batches[:count], args) if count else {}
    close = closeness(curves) if curves else {}
    report = {"anatomy": anatomy.name, "batch_size": size, "threads": args.threads, "torch": torch.__version__,
              "seconds_per_iteration": seconds, "loss_per_image": curves, "closeness": close,
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    print(markdown(report))
    if args.out:
        write_record(args.out, report, markdown)


def markdown(report: dict) -> str:
    """The speed and learning table of a report."""
    seconds, close = report["seconds_per_iteration"], report["closeness"]
    lines = [
        "# CPU training: fp32 vs bf16 vs bf16 + channels_last",
        "",
        f"{report['anatomy']}, batch {report['batch_size']}, {report['threads']} threads, torch {report['torch']}",
        "",
        "| setting | s/iteration | speed-up | mean rel. loss difference to fp32 | last |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in SETTINGS:
        c = close.get(name, {})
        mean, last = c.get("mean_relative_difference"), c.get("last_relative_difference")
        cells = ["-" if v is None else f"{v:.2%}" for v in (mean, last)]
        lines.append(f"| {name} | {seconds[name]:.2f} | {seconds['fp32'] / seconds[name]:.2f}x | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    main()
