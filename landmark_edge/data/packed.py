"""The packed dataset: every split image already resized to its anatomy's grid, plus one JSON manifest.

``landmark-edge pack`` writes it so a training run can be copied to a remote GPU machine quickly (tens of MiB
instead of the ~170 MiB raw set) and spends no time decoding 1935x2400 images. Images are the exact
:func:`~landmark_edge.transforms.grid_pixels` a raw run feeds the network, stored as grey JPEG (quality 90: about
28 MiB for all three sets, grey levels change by ~1.1-1.4 of 255 on average; quality 95 would be ~40 MiB for
~0.8-1.1); labels stay in
*original* pixels with the original size, so grid labels and both evaluation protocols come out as from the raw
layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel
from rich.progress import track

from landmark_edge.anatomy import Anatomy, get_anatomy
from landmark_edge.data.sources import SPLITS, DatasetError, Sample, SplitData, load_raw_split
from landmark_edge.errors import first_line
from landmark_edge.io.atomic import atomic_path, atomic_write_text
from landmark_edge.transforms import read_grid_pixels

MANIFEST = "manifest.json"
FORMAT = "landmark-edge-packed"
FORMAT_VERSION = 1
DEFAULT_QUALITY = 90  # all three sets ~28 MiB; mean grey-level change ~1.1-1.4 of 255


class PackedSample(BaseModel):
    file: str  # relative to the packed root
    original_size: tuple[int, int]
    landmarks: list[tuple[float, float]]
    spacing_mm: tuple[float, float] | None = None


class PackedAnatomy(BaseModel):
    grid: tuple[int, int]
    splits: dict[str, list[str]]
    samples: dict[str, PackedSample]
    skipped: list[str] = []


class PackedManifest(BaseModel):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    jpeg_quality: int
    anatomies: dict[str, PackedAnatomy]


def is_packed(root: Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def read_manifest(root: Path) -> PackedManifest:
    path = Path(root) / MANIFEST
    try:
        manifest = PackedManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable packed-dataset manifest ({first_line(error)})")
    if manifest.format != FORMAT or manifest.format_version > FORMAT_VERSION:
        raise DatasetError(f"{path}: unsupported packed format {manifest.format} v{manifest.format_version}")
    return manifest


def load_packed_split(root: Path, anatomy: Anatomy, split: str) -> SplitData:
    manifest = read_manifest(root)
    if anatomy.name not in manifest.anatomies:
        raise DatasetError(f"{Path(root) / MANIFEST}: packed data has no {anatomy.name} images")
    packed = manifest.anatomies[anatomy.name]
    result = SplitData(anatomy.name, split)
    for sample_id in packed.splits.get(split, []):
        entry = packed.samples[sample_id]
        result.samples.append(
            Sample(anatomy.name, sample_id, Path(root) / entry.file, entry.original_size,
                   np.asarray(entry.landmarks, dtype=np.float64), entry.spacing_mm)
        )
    return result


def pack(data: Path, out: Path, anatomies: list[Anatomy], quality: int = DEFAULT_QUALITY) -> PackedManifest:
    """Write the packed copy of ``anatomies``' reference splits from the raw layout at ``data``."""
    entries: dict[str, PackedAnatomy] = {}
    for anatomy in anatomies:
        packed = PackedAnatomy(grid=anatomy.grid, splits={}, samples={})
        for split in SPLITS:
            loaded = load_raw_split(data, anatomy, split)
            packed.skipped += loaded.skipped
            packed.splits[split] = [s.id for s in loaded.samples]
            for sample in track(loaded.samples, description=f"pack {anatomy.name} {split}", transient=True):
                packed.samples[sample.id] = _pack_one(sample, anatomy, out, quality)
        entries[anatomy.name] = packed
    manifest = PackedManifest(jpeg_quality=quality, anatomies=entries)
    atomic_write_text(Path(out) / MANIFEST, manifest.model_dump_json())
    return manifest


def _pack_one(sample: Sample, anatomy: Anatomy, out: Path, quality: int) -> PackedSample:
    relative = f"{anatomy.name}/{sample.id}.jpg"
    pixels = read_grid_pixels(sample.image, anatomy.grid)
    with atomic_path(Path(out) / relative) as tmp:
        Image.fromarray(pixels.astype(np.uint8), mode="L").save(tmp, format="JPEG", quality=quality)
    return PackedSample(
        file=relative,
        original_size=sample.original_size,
        landmarks=[tuple(p) for p in sample.landmarks.tolist()],
        spacing_mm=sample.spacing_mm,
    )


def load_split(root: Path, anatomy: Anatomy | str, split: str) -> SplitData:
    """One anatomy's split from either layout: packed (``root/manifest.json``) or raw."""
    anatomy = get_anatomy(anatomy) if isinstance(anatomy, str) else anatomy
    if is_packed(root):
        return load_packed_split(Path(root), anatomy, split)
    return load_raw_split(Path(root), anatomy, split)
