"""Geometry plausibility: an image whose shape or size is far outside the anatomy's training images is flagged."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark_edge.anatomy import ANATOMIES, get_anatomy
from landmark_edge.cli import app
from scripts.image_geometry import geometry, image_paths
from tests.conftest import DATA, REPO, require

CHEST_EXAMPLE = REPO / "landmark_edge" / "examples" / "chest_CHNCXR_0001_0.png"


@pytest.mark.parametrize("name", list(ANATOMIES))
def test_registry_geometry_is_the_measured_training_range(name):
    """The registry's numbers are what scripts/image_geometry.py measures over the shared data (3 decimals)."""
    measured = geometry(image_paths(require(DATA), ANATOMIES[name]))
    anatomy = ANATOMIES[name]
    assert anatomy.training_aspect == (round(measured["aspect_min"], 3), round(measured["aspect_max"], 3))
    assert anatomy.training_short_side == measured["short_side_min"]


@pytest.mark.parametrize(
    ("anatomy", "size", "problem"),
    [
        ("chest", (2048, 64), "aspect ratio 32.00 (width / height) is far outside the chest training images'"),
        ("chest", (64, 2048), "aspect ratio 0.03"),
        ("head", (2400, 1935), "aspect ratio 1.24"),  # a ceph lying on its side
        ("head", (400, 496), "400x496 px is far smaller than the head training images"),
        ("hand", (100, 200), "under 1/4 of their smallest, 1050 px"),
    ],
)
def test_far_outside_is_named(anatomy, size, problem):
    assert problem in get_anatomy(anatomy).geometry_problem(*size)


@pytest.mark.parametrize(("anatomy", "size"), [("chest", (3000, 2900)), ("chest", (2048, 2500)), ("head", (1935, 2400)),
                                               ("hand", (1216, 1913)), ("chest", (512, 512))])  # fmt: skip
def test_ordinary_radiographs_pass(anatomy, size):
    assert get_anatomy(anatomy).geometry_problem(*size) is None


def test_strip_cut_from_a_chest_xray_is_flagged(tmp_path, tiny_weights):
    """The issue's case: a 2048 x 64 strip of a real chest X-ray, as --anatomy chest, gets a flag and a warning."""
    with Image.open(CHEST_EXAMPLE) as xray:
        strip = xray.crop((0, 300, 750, 323)).resize((2048, 64))
    strip.save(tmp_path / "strip.png")
    result = CliRunner().invoke(app, ["infer", str(tmp_path / "strip.png"), "-a", "chest", "-w", str(tiny_weights),
                                      "-f", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (outcome,) = json.loads(result.stdout)
    assert outcome["flags"][0].startswith("implausible image for chest: aspect ratio 32.00")
    assert "warning:" in result.stderr and "implausible image for chest" in result.stderr
