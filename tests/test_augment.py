"""The robust recipe: exact affine augmentation, sub-pixel targets, determinism, a tiny run that learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from landmark_edge import anatomy as registry
from landmark_edge.affine import apply_points, centre, rescaling, similarity, warp
from landmark_edge.anatomy import Anatomy, get_anatomy
from landmark_edge.cli import app
from landmark_edge.data import Augmentation, GridDataset, Sample, SplitData, render_heatmaps
from landmark_edge.data.augment import Exposure, Framing
from landmark_edge.decode import decode_heatmaps
from landmark_edge.evaluation import SHIFTS, shifted
from landmark_edge.model import gu2net
from landmark_edge.training.schedule import build_optimizer
from landmark_edge.training.trainer import batch_loss
from landmark_edge.transforms import zscore_batch
from landmark_edge.weights import read_info
from tests.conftest import TINY
from tests.test_data import make_chest_root
from tests.test_training import one_thread  # noqa: F401 - the autouse fixture: one OpenMP thread

NO_EXPOSURE = Exposure(gamma=(1.0, 1.0), blur=0.0, noise=0.0)


def _dots(size: tuple[int, int], points: np.ndarray, sigma: float, amplitude: float = 250.0) -> np.ndarray:
    """Gaussian dots centred exactly on ``points`` (pixel-centre coordinates) on a black background."""
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    image = np.zeros((size[1], size[0]))
    for x, y in points:
        image += amplitude * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return image


def _centroid(pixels: np.ndarray, near: np.ndarray, radius: float) -> np.ndarray:
    """Intensity centroid of the pixels within ``radius`` of ``near``."""
    pixels = np.asarray(pixels, dtype=np.float64)
    yy, xx = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
    weight = pixels * (((xx - near[0]) ** 2 + (yy - near[1]) ** 2) <= radius**2)
    return np.array([(weight * xx).sum(), (weight * yy).sum()]) / weight.sum()


TRANSFORMS = {
    "zoom in": dict(scale_xy=(1.25, 1.25)),
    "zoom out": dict(scale_xy=(0.8, 0.8)),
    "aspect": dict(scale_xy=(1.07, 0.93)),
    "rotate": dict(angle_deg=8.0),
    "rotate and zoom": dict(scale_xy=(1.1, 1.2), angle_deg=-6.5),
}


@pytest.mark.parametrize("name", [*TRANSFORMS, "translate", "top cut"])
def test_warp_keeps_a_subpixel_dot_on_its_moved_label(name):
    """The image and its label go through the same map: the dot's centroid lands on the moved label."""
    size, point = (80, 100), np.array([[31.3, 56.7]])
    middle = centre(size)
    if name == "translate":
        matrix = similarity(middle + [4.6, -7.2], middle)
    elif name == "top cut":
        matrix = similarity(middle + [0, (100 - 100 / 1.3) / 2], middle, (1.3, 1.3))
    else:
        matrix = similarity(middle, middle, **TRANSFORMS[name])
    image = Image.fromarray(_dots(size, point, 2.5).astype(np.float32), mode="F")
    moved = apply_points(matrix, point)[0]
    found = _centroid(np.asarray(warp(image, matrix)), moved, 10)
    assert np.abs(found - moved).max() < 0.02, (found, moved)
    assert np.abs(found - point[0]).max() > 0.5 or name == "aspect"  # the map did move it


@pytest.mark.parametrize("stored", [(600, 600), (512, 512)], ids=["raw", "packed"])
def test_random_framings_keep_the_landmark_on_its_pixel_in_both_layouts(tmp_path, stored):
    """Through GridDataset: the stored original (raw) or its grid copy (packed) is warped, then resized."""
    chest = get_anatomy("chest")
    original, landmark = (600, 600), np.array([[233.4, 287.8]])
    on_stored = apply_points(rescaling(original, stored), landmark)
    path = tmp_path / "dot.png"
    Image.fromarray(_dots(stored, on_stored, 3.0 * stored[0] / 512).astype(np.uint8)).save(path)
    sample = Sample("chest", "dot", path, original, np.repeat(landmark, chest.num_landmarks, axis=0))
    unmoved = GridDataset([sample], chest, "subpixel").read(0)[1][0]
    dataset = GridDataset([sample], chest, "subpixel", Augmentation(exposure=NO_EXPOSURE))
    moves = []
    for seed in range(12):
        pixels, label = dataset.read(0, np.random.default_rng(seed))
        found = _centroid(pixels, label[0], 12)
        assert np.abs(found - label[0]).max() < 0.06, (seed, found, label[0])
        moves.append(np.abs(label[0] - unmoved).max())
    assert max(moves) > 5


def test_exposure_changes_grey_levels_but_not_the_landmark():
    pixels = np.clip(_dots((64, 64), np.array([[30.4, 25.6]]), 2.5) + 20, 0, 255).astype(np.uint8)
    exposure = Exposure(gamma=(0.7, 0.7), blur=1.0, noise=0.0)
    out = exposure.apply(np.random.default_rng(0), pixels)
    assert out.dtype == np.uint8 and out.shape == pixels.shape and not np.array_equal(out, pixels)
    assert np.abs(_centroid(out.astype(float) - out.min(), [30.4, 25.6], 8) - [30.4, 25.6]).max() < 0.05
    noisy = Exposure(gamma=(1.0, 1.0), blur=0.0, noise=1.0, noise_std=(4.0, 4.0)).apply(np.random.default_rng(1), pixels)
    assert 2.0 < (noisy.astype(float) - pixels).std() < 6.0


def test_framings_never_flip_and_keep_every_landmark_inside():
    """A flip would reverse orientation (negative determinant); lateral images have a side."""
    grid = (416, 512)
    landmarks = np.random.default_rng(0).uniform([130, 170], [320, 430], size=(19, 2))  # where ISBI's lie
    framing, rng = Framing(), np.random.default_rng(1)
    matrices = [framing.draw(rng, grid, landmarks) for _ in range(300)]
    assert all(np.linalg.det(m[:2, :2]) > 0 for m in matrices)
    for matrix in matrices:
        moved = apply_points(matrix, landmarks)
        assert np.all(moved >= framing.margin_px) and np.all(moved <= np.asarray(grid) - 1 - framing.margin_px)
    assert sum(np.array_equal(m, np.eye(3)) for m in matrices) < 10  # falling back to no change is rare
    scales = np.array([np.sqrt(np.linalg.det(m[:2, :2])) for m in matrices])
    assert scales.min() < 0.85 and scales.max() > 1.3  # the ranges are used, top cuts included
    top_cut = [m for m in matrices if apply_points(np.linalg.inv(m), [[207.5, -0.5]])[0, 1] > 20]
    assert len(top_cut) > 30  # the output's top edge shows a row well inside the image: its top is cut


def test_augmentation_is_a_function_of_the_key(tmp_path):
    root = make_chest_root(tmp_path, 2)
    chest = get_anatomy("chest")
    samples = [Sample("chest", p.stem, p, (32, 32), np.full((6, 2), 15.0)) for p in sorted(root.glob("chest/pngs/*"))]
    dataset = GridDataset(samples, chest, "subpixel", Augmentation())
    first, again, other = dataset.batch([0, 1], key=(42, 0, 3)), dataset.batch([0, 1], key=(42, 0, 3)), \
        dataset.batch([0, 1], key=(42, 0, 4))  # fmt: skip
    assert torch.equal(first.pixels, again.pixels) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.pixels, other.pixels) and not torch.equal(first.labels, other.labels)
    assert first.labels.dtype == torch.float32
    with pytest.raises(ValueError, match="sub-pixel"):
        GridDataset(samples, chest, "reference", Augmentation())


def test_subpixel_targets_peak_at_the_exact_label():
    labels = torch.tensor([[[10.3, 20.7], [31.5, 5.25], [0.0, 63.0]]])
    heatmaps = render_heatmaps(labels, (64, 48))
    assert heatmaps.shape == (1, 3, 64, 48) and heatmaps.dtype == torch.float32
    xy, peak = decode_heatmaps(heatmaps, "subpixel")
    assert torch.allclose(xy, labels, atol=1e-3)
    assert peak[0, 2] == pytest.approx(1.0) and peak[0, 0] < 1.0  # 1 only when the label is a pixel centre
    reference = render_heatmaps(labels.round().long(), (64, 48))  # integer labels: the reference mask, unchanged
    assert reference[0, 0, 21, 10] == 1.0 and reference[0, 0].count_nonzero() == 18 * 18 - 1  # its corner is 0


def test_tiny_robust_run_learns_to_find_a_known_landmark(monkeypatch, tmp_path):
    """Two landmarks (a bright and a dark dot) at random sub-pixel spots; trained on 4 augmented images, found
    on 2 new, unaugmented ones."""
    monkeypatch.setitem(registry.ANATOMIES, "toy", Anatomy(name="toy", num_landmarks=2, grid=(64, 64)))
    toy = get_anatomy("toy")
    rng = np.random.default_rng(0)
    samples = []
    for n in range(6):
        points = rng.uniform(14, 50, size=(2, 2))
        image = 110 + _dots((64, 64), points[:1], 2.0, 120) - _dots((64, 64), points[1:], 2.0, 90)
        path = tmp_path / f"{n}.png"
        Image.fromarray(np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)).save(path)
        samples.append(Sample("toy", str(n), path, (64, 64), points))
    train = GridDataset(samples[:4], toy, "subpixel", Augmentation())
    torch.manual_seed(0)
    model = gu2net(["toy"], **TINY)
    optimizer = build_optimizer(model, 1e-2, 1e-4)
    losses = []
    for step in range(150):
        pair = [2 * step % 4, (2 * step + 1) % 4]
        loss = batch_loss(model, train.batch(pair, key=(0, step)), torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    held_out = GridDataset(samples[4:], toy, "subpixel").batch([0, 1])
    with torch.no_grad():
        xy, _ = decode_heatmaps(model.eval()(zscore_batch(held_out.pixels), "toy"), "subpixel")
    assert (xy - held_out.labels).norm(dim=-1).max() <= 2.0


def test_shifted_split_moves_image_and_labels_together(tmp_path):
    """Each --shift zoom condition: the blob under every moved chest label is still there in the shifted image."""
    root = make_chest_root(tmp_path, 1, size=96)
    chest = get_anatomy("chest")
    path = next(root.glob("chest/pngs/*.png"))
    lines = (root / "chest/labels" / f"{path.stem}.txt").read_text().split("\n")[1:7]
    points = np.array([[float(v) for v in line.split()] for line in lines]) * 96 - 0.5  # blobs sit at r * 96 - 0.5
    split = SplitData("chest", "test", [Sample("chest", path.stem, path, (96, 96), points, (0.2, 0.2))])
    for shift in SHIFTS["zoom"]:
        moved = shifted(split, shift).samples[0]
        assert moved.spacing_mm == pytest.approx((0.2 / shift.scale, 0.2 / shift.scale))
        pixels, label = GridDataset([moved], chest, "subpixel").read(0)
        for xy in label:
            if np.all((xy > 12) & (xy < 500)):
                assert np.abs(_centroid(pixels - 20.0, xy, 8) - xy).max() < 1.0, (shift.name, xy)


def test_evaluate_shift_zoom_reports_every_condition(tmp_path, tiny_weights):
    root = make_chest_root(tmp_path / "raw", 235, size=32)  # 232 kept after the exclude list: test = last 3
    out, plain = tmp_path / "shift.json", tmp_path / "plain.json"
    base = ["evaluate", "--data", str(root), "--weights", str(tiny_weights), "--anatomies", "chest", "--limit", "2"]
    runner = CliRunner()
    result = runner.invoke(app, [*base, "--shift", "zoom", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    conditions = report["anatomies"]["chest"]
    assert list(conditions) == [s.name for s in SHIFTS["zoom"]] and "crop-top-1.4" in result.stdout
    assert all(c["images"] == 2 and c["unit"] == "px" for c in conditions.values())
    assert runner.invoke(app, [*base, "--out", str(plain)]).exit_code == 0
    original = json.loads(plain.read_text())["anatomies"]["chest"]["original"]
    assert conditions["none"]["MRE"] == pytest.approx(original["MRE"])  # the unchanged condition is the plain run
    assert runner.invoke(app, [*base, "--shift", "tilt"]).exit_code == 2


def test_train_records_the_recipe_and_resume_keeps_it(tmp_path):
    data = make_chest_root(tmp_path / "data", 2)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), "--anatomies", "chest", "--recipe", "robust",
            "--epochs", "1", "--batch-size", "1", "--local-widths", "4,4,8,8,8", "--global-width", "8",
            "--workers", "0", "--no-progress", "--max-minutes", "0"]  # fmt: skip
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 75
    assert json.loads((run / "config.json").read_text())["recipe"] == "robust"
    refused = runner.invoke(app, ["train", "--resume", str(run), "--recipe", "reference", "--workers", "0"])
    assert refused.exit_code == 2 and "--recipe" in refused.stderr
    result = runner.invoke(app, ["train", "--resume", str(run), "--no-progress", "--workers", "0"])
    assert result.exit_code == 0, result.output
    info = read_info(run / "best.safetensors")
    assert "--recipe robust" in info.source and info.metrics["train_config"]["recipe"] == "robust"
