"""Datasets: heatmap targets, reference splits on the real data, label parsing, skipped labels, packing."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from landmark_edge.anatomy import get_anatomy
from landmark_edge.data import DatasetError, gaussian_mask, grid_label, load_split, pack, render_heatmaps
from landmark_edge.data.packed import read_manifest
from tests.conftest import DATA, require


def _g(dx: int, dy: int) -> float:
    """The reference mask value at offset (dx, dy), by hand: min-max normalised exp(-d^2 / 18) over offsets -9..8."""
    low = math.exp(-(81 + 81) / 18)
    return (math.exp(-(dx * dx + dy * dy) / 18) - low) / (1 - low)


def test_mask_matches_hand_computed_values_and_the_reference_row():
    mask = gaussian_mask()
    assert mask.shape == (18, 18)
    assert mask[9, 9] == 1.0 and mask[0, 0] == 0.0
    for dy, dx in [(0, -9), (0, 8), (3, -4), (-9, 8), (1, 1)]:
        assert mask[9 + dy, 9 + dx] == pytest.approx(_g(dx, dy), abs=1e-12)
    quoted = [0.011, 0.028, 0.066, 0.135, 0.249, 0.411, 0.607, 0.801, 0.946, 1.0, 0.946]  # reference.md §6.2
    assert np.abs(mask[9, :11] - quoted).max() < 6e-4  # quoted to 3 decimals


def test_rendered_targets_peak_at_the_label_with_asymmetric_clipped_support():
    labels = torch.tensor([[[20, 30], [2, 0], [-3, 40]]])  # (x, y); the second and third cross the border
    maps = render_heatmaps(labels, (64, 48))
    assert maps.shape == (1, 3, 64, 48) and maps.dtype == torch.float32
    first = maps[0, 0]
    assert first[30, 20] == 1.0 and first.argmax() == 30 * 48 + 20
    assert first[30, 28].item() == pytest.approx(_g(8, 0), rel=1e-6)  # +8 is inside the support
    assert first[30, 29] == 0 and first[39, 20] == 0  # +9 is cut off
    assert first[21, 11].item() == pytest.approx(_g(-9, -9), abs=1e-7)  # the corner: exactly 0
    assert first[27, 16].item() == pytest.approx(_g(-4, -3), rel=1e-6)
    assert (first > 0).sum() == 18 * 18 - 1  # the whole -9..8 square except its corner
    assert maps[0, 1, 0, 2] == 1.0 and maps[0, 1, 0, 2 + 8] > 0  # clipped at the top border, no error
    assert maps[0, 2, 40, 0].item() == pytest.approx(_g(3, 0), rel=1e-6)  # centre off the grid: truncated tail


@pytest.mark.parametrize(
    "anatomy, sizes, first_last",
    [
        ("head", (130, 20, 250), [("001", "130"), ("131", "150"), ("151", "400")]),
        # The hand subset (138 images) ships its own split.csv (train 92 / val 21 / test 25).
        ("hand", (92, 21, 25), [("3143", "5245"), ("3144", "3819"), ("3145", "7236")]),
        ("chest", (195, 34, 41), [("CHNCXR_0001_0", "CHNCXR_0245_0"), ("CHNCXR_0246_0", "CHNCXR_0281_0"),
                                  ("CHNCXR_0282_0", "CHNCXR_0326_0")]),
    ],
)  # fmt: skip
def test_reference_splits_on_the_real_data(anatomy, sizes, first_last):
    require(DATA)
    for split, size, ends in zip(("train", "val", "test"), sizes, first_last):
        loaded = load_split(DATA, anatomy, split)
        assert len(loaded.samples) == size and not loaded.skipped
        if ends:
            assert (loaded.samples[0].id, loaded.samples[-1].id) == ends


def test_head_labels_are_the_mean_of_both_annotators_and_round_on_the_grid():
    require(DATA)
    sample = load_split(DATA, "head", "train").samples[0]
    root = DATA / "ISBI2015_ceph"
    senior = [float(v) for v in (root / "400_senior/001.txt").read_text().splitlines()[0].split(",")]
    junior = [float(v) for v in (root / "400_junior/001.txt").read_text().splitlines()[0].split(",")]
    assert sample.landmarks[0].tolist() == [(senior[0] + junior[0]) / 2, (senior[1] + junior[1]) / 2]
    assert sample.original_size == (1935, 2400) and sample.spacing_mm == (0.1, 0.1)
    x, y = sample.landmarks[0]
    assert grid_label(sample, get_anatomy("head"))[0].tolist() == [round(x * 416 / 1935), round(y * 512 / 2400)]


def make_chest_root(root: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    """A raw chest layout of ``count`` synthetic images; landmark k sits on a bright blob in every image."""
    rng = np.random.default_rng(seed)
    (root / "chest/pngs").mkdir(parents=True)
    (root / "chest/labels").mkdir(parents=True)
    for n in range(1, count + 1):
        name = f"CHNCXR_{n:04d}_0"
        ratios = rng.uniform(0.15, 0.85, size=(6, 2))
        yy, xx = np.mgrid[0:size, 0:size]
        image = 20 + rng.normal(0, 3, (size, size))
        for rx, ry in ratios:
            image += 200 * np.exp(-((xx + 0.5 - rx * size) ** 2 + (yy + 0.5 - ry * size) ** 2) / (2 * 1.5**2))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / f"chest/pngs/{name}.png")
        lines = ["6", *(f"{rx:.6f} {ry:.6f}" for rx, ry in ratios)]
        (root / f"chest/labels/{name}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_missing_and_malformed_labels_are_skipped_and_counted(tmp_path):
    root = make_chest_root(tmp_path, 4)
    (root / "chest/labels/CHNCXR_0002_0.txt").write_text("6\n0.1 0.2\nnot numbers\n")
    (root / "chest/labels/CHNCXR_0003_0.txt").unlink()
    loaded = load_split(root, "chest", "train")
    assert [s.id for s in loaded.samples] == ["CHNCXR_0001_0", "CHNCXR_0004_0"]
    assert len(loaded.skipped) == 2
    assert "CHNCXR_0002_0.txt" in loaded.skipped[0] and "CHNCXR_0003_0.txt: label file missing" in loaded.skipped[1]
    assert all("\n" not in line for line in loaded.skipped)


def test_malformed_hand_row_is_skipped_and_named(tmp_path):
    """Without split.csv the reference rule applies (test: sorted label ids from 610 on that have an image)."""
    require(DATA)
    (tmp_path / "hand").mkdir()
    shutil.copytree(DATA / "hand/jpg", tmp_path / "hand/jpg")
    rows = (DATA / "hand/all.csv").read_text().splitlines()
    rows = [row if not row.startswith("7088,") else "7088,1,2,3" for row in rows]
    (tmp_path / "hand/all.csv").write_text("\n".join(rows) + "\n")
    loaded = load_split(tmp_path, "hand", "test")
    assert [s.id for s in loaded.samples] == ["7081", "7232", "7236"]
    assert len(loaded.skipped) == 1 and "all.csv line" in loaded.skipped[0] and "7088" in loaded.skipped[0]


def test_split_file_overrides_the_reference_rule_and_pack_carries_it(tmp_path):
    raw = make_chest_root(tmp_path / "raw", 4)
    (raw / "chest/split.csv").write_text("id,split\nCHNCXR_0001_0,test\nCHNCXR_0002_0,val\nCHNCXR_0004_0,train\n")
    assert [s.id for s in load_split(raw, "chest", "test").samples] == ["CHNCXR_0001_0"]
    assert [s.id for s in load_split(raw, "chest", "train").samples] == ["CHNCXR_0004_0"]  # 0003: in no split
    manifest = pack(raw, tmp_path / "packed", [get_anatomy("chest")])
    splits = manifest.anatomies["chest"].splits
    assert splits == {"train": ["CHNCXR_0004_0"], "val": ["CHNCXR_0002_0"], "test": ["CHNCXR_0001_0"]}
    assert [s.id for s in load_split(tmp_path / "packed", "chest", "val").samples] == ["CHNCXR_0002_0"]


@pytest.mark.parametrize("text, problem", [("name,fold\na,train\n", "header"), ("id,split\na,holdout\n", "line 2")])
def test_malformed_split_file_is_one_line_naming_it(tmp_path, text, problem):
    raw = make_chest_root(tmp_path, 2)
    (raw / "chest/split.csv").write_text(text)
    with pytest.raises(DatasetError, match=rf"split\.csv.*{problem}"):
        load_split(raw, "chest", "train")


def test_packed_copy_reads_like_the_raw_layout(tmp_path):
    raw = make_chest_root(tmp_path / "raw", 3)
    manifest = pack(raw, tmp_path / "packed", [get_anatomy("chest")])
    assert manifest.anatomies["chest"].splits["train"] == ["CHNCXR_0001_0", "CHNCXR_0002_0", "CHNCXR_0003_0"]
    packed = load_split(tmp_path / "packed", "chest", "train")
    original = load_split(raw, "chest", "train")
    for a, b in zip(packed.samples, original.samples):
        assert a.id == b.id and a.original_size == b.original_size == (32, 32)
        assert np.array_equal(a.landmarks, b.landmarks)
        assert Image.open(a.image).size == (512, 512)  # stored on the grid already
    assert read_manifest(tmp_path / "packed").jpeg_quality == 90


def test_packed_real_images_fit_the_size_budget(tmp_path):
    """A few real images per anatomy, packed: the mean file size keeps all 817 images under 40 MiB."""
    require(DATA)
    raw = tmp_path / "raw"
    head = raw / "ISBI2015_ceph"
    for folder in ("raw", "400_senior", "400_junior"):
        (head / folder).mkdir(parents=True)
    for sample_id in ("001", "200"):
        (head / "raw" / f"{sample_id}.jpg").symlink_to(DATA / f"ISBI2015_ceph/raw/{sample_id}.jpg")
        for who in ("senior", "junior"):
            (head / f"400_{who}" / f"{sample_id}.txt").symlink_to(DATA / f"ISBI2015_ceph/400_{who}/{sample_id}.txt")
    for sub in ("pngs", "labels"):
        (raw / "chest" / sub).mkdir(parents=True)
    for name in ("CHNCXR_0001_0", "CHNCXR_0300_0"):
        (raw / f"chest/pngs/{name}.png").symlink_to(DATA / f"chest/pngs/{name}.png")
        (raw / f"chest/labels/{name}.txt").symlink_to(DATA / f"chest/labels/{name}.txt")
    pack(raw, tmp_path / "packed", [get_anatomy("head"), get_anatomy("chest")])
    sizes = [p.stat().st_size for p in (tmp_path / "packed").rglob("*.jpg")]
    assert len(sizes) == 4
    assert np.mean(sizes) * (400 + 279 + 138) < 40 * 2**20
