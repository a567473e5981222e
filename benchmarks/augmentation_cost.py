"""What the robust recipe's augmentation costs per sample, and what augmenting the packed grid copy loses.

1. CPU time per training sample read by a DataLoader worker (one thread), packed layout (grid JPEG, what the GPU
   run reads): the reference recipe's read (decode) against the robust one (decode, warp, gamma, blur, noise).
   The GPU run keeps up when 8 workers deliver 15.5 it/s x 4 samples: at most 8 / 62 s = 129 ms per sample.
2. Resolution: a zoomed framing made from the packed grid image (upsampled: detail above the grid's Nyquist
   limit is gone) against the same framing made from the original image and then resized (what the raw layout
   gives): mean absolute grey-level difference and the ratio of mean gradient magnitudes (sharpness).

    python benchmarks/augmentation_cost.py --data ../shared/data --images 8
writes benchmarks/results/augmentation.md (and .json).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from landmark_edge.affine import centre, conjugate, similarity, warp
from landmark_edge.anatomy import get_anatomy
from landmark_edge.bench.records import machine, write_record
from landmark_edge.data import Augmentation, GridDataset, Sample, load_split
from landmark_edge.data.packed import DEFAULT_QUALITY
from landmark_edge.io.images import read_image
from landmark_edge.transforms import grid_pixels

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MS = 1000 * 8 / (15.5 * 4)
ZOOMS = (1.0, 1.1, 1.25, 1.45)  # 1.0: the pack's JPEG alone; 1.45: the largest top-cut zoom of the recipe


def packed_copy(sample: Sample, grid: tuple[int, int], folder: Path) -> Sample:
    """The sample as `landmark-edge pack` stores it: grid pixels as a grey JPEG of the pack's quality."""
    path = folder / f"{sample.anatomy}_{sample.id}.jpg"
    pixels = grid_pixels(read_image(sample.image).image, grid)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path, format="JPEG", quality=DEFAULT_QUALITY)
    return Sample(sample.anatomy, sample.id, path, sample.original_size, sample.landmarks, sample.spacing_mm)


def cost_ms(dataset: GridDataset, repeats: int) -> float:
    """Mean CPU milliseconds per read (process time: not inflated by other jobs on a shared machine)."""
    start = time.process_time()
    for repeat in range(repeats):
        for index in range(len(dataset)):
            dataset.read(index, np.random.default_rng([repeat, index]))
    return 1000 * (time.process_time() - start) / (repeats * len(dataset))


def resolution_loss(sample: Sample, packed: Sample, grid: tuple[int, int], zoom: float) -> dict:
    """The same zoomed framing from the original (then resized) and from the packed grid copy."""
    matrix = similarity(centre(grid), centre(grid), (zoom, zoom))
    original = read_image(sample.image).image
    from_original = grid_pixels(warp(original, conjugate(matrix, grid, original.size)), grid).astype(np.float64)
    from_packed = np.asarray(warp(Image.open(packed.image), matrix), dtype=np.float64)
    inner = (slice(8, -8), slice(8, -8))  # leave out the border rows where the two resamplers' edges differ

    def sharpness(pixels: np.ndarray) -> float:
        gy, gx = np.gradient(pixels)
        return float(np.hypot(gx, gy)[inner].mean())

    return {"mean_abs_diff": float(np.abs(from_original - from_packed)[inner].mean()),
            "sharpness_ratio": sharpness(from_packed) / sharpness(from_original)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--images", type=int, default=8, help="Training images per anatomy (the first N).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/augmentation")
    args = parser.parse_args()
    results = {"anatomies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("head", "hand", "chest"):
            anatomy = get_anatomy(name)
            samples = load_split(args.data, anatomy, "train").samples[: args.images]
            packed = [packed_copy(s, anatomy.grid, Path(tmp)) for s in samples]
            reference = cost_ms(GridDataset(packed, anatomy), args.repeats)
            robust = cost_ms(GridDataset(packed, anatomy, "subpixel", Augmentation()), args.repeats)
            raw_robust = cost_ms(GridDataset(samples[:2], anatomy, "subpixel", Augmentation()), 1)
            zooms = {str(z): [resolution_loss(s, p, anatomy.grid, z) for s, p in zip(samples[:4], packed[:4])]
                     for z in ZOOMS}  # fmt: skip
            results["anatomies"][name] = {
                "grid": anatomy.grid, "images": len(samples), "packed_reference_ms": reference,
                "packed_robust_ms": robust, "raw_robust_ms": raw_robust,
                "zoom": {z: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} for z, rows in zooms.items()},
            }  # fmt: skip
    results["budget_ms"] = BUDGET_MS
    print(render(write_record(args.out, results, render)))


def render(results: dict) -> str:
    lines = [
        "# Robust-recipe augmentation: cost per sample and the packed copy's resolution",
        "",
        f"On {machine(results)}, one thread: CPU time (process time) per sample read by a loader worker. The GPU "
        f"run (8 workers, 15.5 it/s, batch 4) needs at most **{results['budget_ms']:.0f} ms** per sample per worker.",
        "",
        "| anatomy | grid | packed, reference read | packed, robust read | raw original, robust read |",
        "|---|---|---:|---:|---:|",
    ]
    for name, r in results["anatomies"].items():
        lines.append(f"| {name} | {r['grid'][0]}x{r['grid'][1]} | {r['packed_reference_ms']:.1f} ms | "
                     f"{r['packed_robust_ms']:.1f} ms | {r['raw_robust_ms']:.0f} ms |")
    lines += [
        "",
        "Zoomed framing made from the packed grid JPEG vs from the original then resized (the raw layout), first 4",
        "training images, grid pixels away from the border: mean |difference| in grey levels (of 255) and the",
        "packed version's sharpness (mean gradient magnitude) relative to the original's. x1 is the pack's JPEG",
        "alone (quality 90).",
        "",
        "| anatomy | " + " | ".join(f"x{z} diff | x{z} sharpness" for z in ZOOMS) + " |",
        "|---|" + "---:|---:|" * len(ZOOMS),
    ]
    for name, r in results["anatomies"].items():
        cells = [f"{r['zoom'][str(z)]['mean_abs_diff']:.2f} | {r['zoom'][str(z)]['sharpness_ratio']:.3f}"
                 for z in ZOOMS]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
