"""Preprocessing, coordinate mapping and decoding against synthetic inputs with a known answer."""

import numpy as np
import pytest
import torch
from PIL import Image

from landmark_edge.anatomy import get_anatomy
from landmark_edge.decode import decode_heatmaps
from landmark_edge.transforms import (
    grid_pixels,
    grid_to_original,
    original_to_grid,
    reference_grid_label,
    to_model_input,
    zscore,
    zscore_batch,
)


def gaussian_image(size, centre, sigma, peak=250.0) -> Image.Image:
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    values = peak * np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
    return Image.fromarray(np.round(values).astype(np.uint8), mode="L")


@pytest.mark.parametrize(
    "anatomy, size, centre",
    [("head", (832, 1024), (301.3, 517.8)), ("hand", (700, 1000), (402.6, 233.1)), ("chest", (512, 512), (97.4, 410.7))],
)
def test_bright_spot_round_trip_in_original_pixels(anatomy, size, centre):
    grid = get_anatomy(anatomy).grid
    image = gaussian_image(size, centre, sigma=10.0)
    heatmap = torch.from_numpy(grid_pixels(image, grid).astype(np.float32))[None, None]
    for method, tolerance in (("argmax", 1.0), ("subpixel", 0.25)):
        xy, confidence = decode_heatmaps(heatmap, method)
        found = grid_to_original(xy[0, 0].numpy(), size, grid)
        assert np.abs(found - np.asarray(centre)).max() <= tolerance, (method, found, centre)
        assert confidence[0, 0] == heatmap.max()


def test_subpixel_is_exact_on_a_gaussian_peak():
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(50.0), indexing="ij")
    truth = [(12.3, 20.8), (30.0, 5.4), (44.45, 31.2)]
    maps = torch.stack([torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2)) for x, y in truth])[None]
    xy, _ = decode_heatmaps(maps, "subpixel")
    assert torch.allclose(xy[0], torch.tensor(truth), atol=1e-3)
    argmax_xy, _ = decode_heatmaps(maps, "argmax")
    assert torch.equal(argmax_xy[0], torch.tensor(truth).round())


def test_border_peak_keeps_integer_position_on_that_axis():
    maps = torch.zeros(1, 1, 10, 12)
    maps[0, 0, 0, 5], maps[0, 0, 0, 4], maps[0, 0, 0, 6], maps[0, 0, 1, 5] = 1.0, 0.5, 0.25, 0.4
    xy, confidence = decode_heatmaps(maps, "subpixel")
    assert xy[0, 0, 1] == 0.0 and 4.5 < xy[0, 0, 0] < 5.0 and confidence[0, 0] == 1.0


def test_mapping_is_an_exact_inverse_and_reference_labels_round_half_to_even():
    points = np.array([[0.0, 0.0], [1934.0, 2399.0], [811.5, 1202.25]])
    grid, original = (416, 512), (1935, 2400)
    back = grid_to_original(original_to_grid(points, original, grid), original, grid)
    assert np.allclose(back, points)
    # 5 * 0.5 = 2.5 rounds to 2, 7 * 0.5 = 3.5 rounds to 4 (Python's round, as the reference).
    assert reference_grid_label(np.array([[5, 7]]), (10, 10), (5, 5)).tolist() == [[2, 4]]


def test_model_input_is_reference_preprocessing():
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8), "RGB")
    x = to_model_input(rgb, (416, 512))
    resized = np.asarray(rgb.resize((416, 512), Image.Resampling.BICUBIC))[..., 0].astype(np.float64)
    expected = (resized - resized.mean()) / (resized.std() + 1e-20)
    assert x.shape == (1, 512, 416) and x.dtype == np.float32
    assert np.abs(x[0] - expected).max() < 1e-5
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-4


def test_batched_torch_zscore_matches_numpy():
    pixels = np.random.default_rng(1).integers(0, 255, (3, 64, 48), dtype=np.uint8)
    batch = zscore_batch(torch.from_numpy(pixels))
    for i in range(3):
        assert np.abs(batch[i, 0].numpy() - zscore(pixels[i])).max() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decoding_is_identical_on_cuda_and_cpu():
    """The same heatmaps decode to the same landmarks on both devices: Gaussian peaks at sub-pixel positions, a
    border peak, an exact tie (the first maximum wins on both: torch.max's documented rule) and a flat map."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    maps = [torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2)) for x, y in [(12.3, 20.8), (0.0, 40.6)]]
    tie = torch.zeros(64, 48)
    tie[10, 30] = tie[50, 5] = 0.9
    maps += [tie, torch.full((64, 48), 0.25)]
    heatmaps = torch.stack(maps)[None].repeat(3, 1, 1, 1)
    for method in ("argmax", "subpixel"):
        cpu_xy, cpu_conf = decode_heatmaps(heatmaps, method)
        gpu_xy, gpu_conf = decode_heatmaps(heatmaps.cuda(), method)
        torch.testing.assert_close(gpu_xy.cpu(), cpu_xy, atol=1e-5, rtol=0)
        assert torch.equal(gpu_conf.cpu(), cpu_conf)
        assert cpu_xy[0, 2].tolist() == [30.0, 10.0] and cpu_xy[0, 3].tolist() == [0.0, 0.0]
