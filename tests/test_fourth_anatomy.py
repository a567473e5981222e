"""A fourth anatomy end to end: one registry entry (with its dataset spec) is all it takes.

A fake "foot" (3 landmarks, a 64 x 64 grid, its own folder and label format) is registered for the test only;
synthetic X-rays with a bright dot on each landmark are written in that format, then read through the data
layer, trained for one step by the project's trainer and run through the inference pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landmark_edge.anatomy import ANATOMIES, Anatomy, UnknownAnatomyError, register_anatomy, registered
from landmark_edge.data import GridDataset, load_split
from landmark_edge.data.sources import DatasetError, all_labels
from landmark_edge.dataset_spec import DatasetSpec, LabelReader, images_in, label_stems, parse_points, read_label_lines
from landmark_edge.runtime.eager import TorchBackend
from landmark_edge.runtime.pipeline import run_inference
from landmark_edge.training import RunOptions, TrainConfig, start_run
from landmark_edge.weights import load_weights
from tests.conftest import TINY
from tests.test_training import one_thread  # noqa: F401 - the autouse fixture: one OpenMP thread

SIZE = (96, 80)  # (W, H) of the synthetic originals: not the grid, so every resize is exercised
POINTS = {  # the known answer: (x, y) original pixels per image
    "f1": [(20, 60), (70, 15), (50, 40)],
    "f2": [(30, 55), (80, 20), (45, 30)],
    "f3": [(15, 65), (75, 25), (55, 45)],
    "f4": [(25, 50), (65, 10), (40, 35)],
}


def _open_foot_labels(folder: Path, count: int) -> LabelReader:
    """``labels/<id>.csv``: one ``x,y`` line per landmark, in original pixels."""

    def read(sample_id: str, size: tuple[int, int]) -> np.ndarray:
        path = folder / "labels" / f"{sample_id}.csv"
        return parse_points(read_label_lines(path), count, ",", path)

    return read


FOOT = Anatomy(
    name="foot",
    aliases=("pes",),
    num_landmarks=3,
    grid=(64, 64),
    landmark_names=("heel", "first metatarsal head", "fifth metatarsal head"),
    dataset=DatasetSpec(
        folder="foot_xr",
        list_ids=lambda folder: images_in(folder / "images"),
        label_ids=lambda folder: label_stems(folder / "labels", ".csv"),
        open_labels=_open_foot_labels,
        split_bounds=(2, 3),  # four images: train 2, val 1, test 1
    ),
)


def make_foot_root(root: Path) -> Path:
    """The foot dataset in its spec's format: dark noisy images with a bright dot on each landmark."""
    folder = root / "foot_xr"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    for sample_id, points in POINTS.items():
        image = 25 + rng.normal(0, 4, (SIZE[1], SIZE[0]))
        for x, y in points:
            image += 200 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / "images" / f"{sample_id}.png")
        (folder / "labels" / f"{sample_id}.csv").write_text("".join(f"{x},{y}\n" for x, y in points))
    return root


@pytest.fixture
def foot():
    with registered(FOOT) as entry:
        yield entry


def test_a_registered_anatomy_is_read_trained_and_run_end_to_end(tmp_path, foot):
    root = make_foot_root(tmp_path / "data")
    splits = {split: load_split(root, "pes", split) for split in ("train", "val", "test")}
    assert {s: [x.id for x in d.samples] for s, d in splits.items()} == {"train": ["f1", "f2"], "val": ["f3"],
                                                                        "test": ["f4"]}  # fmt: skip
    test_sample = splits["test"].samples[0]
    assert test_sample.original_size == SIZE and np.array_equal(test_sample.landmarks, POINTS["f4"])
    assert all_labels(root, "foot").shape == (4, 3, 2)
    batch = GridDataset(splits["train"].samples, foot).batch([0, 1])
    assert batch.pixels.shape == (2, 64, 64) and batch.labels.shape == (2, 3, 2)

    config = TrainConfig(data=str(root), anatomies=["foot"], epochs=1, batch_size=2,
                         local_widths=list(TINY["local_widths"]), global_width=TINY["global_width"])  # fmt: skip
    trainer = start_run(config, tmp_path / "run", RunOptions(data=root, workers=0, progress=False,
                                                               report=lambda line: None))  # fmt: skip
    assert trainer.run() is True and trainer.iteration == 1

    model, info = load_weights(tmp_path / "run/best.safetensors", "foot")
    assert info.anatomy_names == ["foot"]
    (result,) = run_inference([test_sample.image], foot, TorchBackend(model, foot), batch_size=1, workers=1)
    assert result.anatomy == "foot" and (result.width, result.height) == SIZE
    assert [lm.name for lm in result.landmarks] == list(FOOT.landmark_names)
    assert all(0 <= lm.x < SIZE[0] and 0 <= lm.y < SIZE[1] for lm in result.landmarks)
    # layouts.json has no foot: every result says its layout went unchecked rather than passing as plausible
    assert any(flag.startswith("layout not checked") and "foot" in flag for flag in result.flags)


def test_an_unregistered_anatomy_is_one_error_naming_it_and_the_known_ones(tmp_path):
    root = make_foot_root(tmp_path)
    with registered(FOOT):
        assert len(load_split(root, "foot", "train").samples) == 2
    assert "foot" not in ANATOMIES  # the registration ended with the block
    with pytest.raises(UnknownAnatomyError, match=r"unknown anatomy 'foot'.*head.*hand.*chest"):
        load_split(root, "foot", "train")


def test_registering_a_taken_name_or_alias_is_refused_and_a_spec_less_entry_is_not_readable(tmp_path):
    with pytest.raises(ValueError, match="cephalometric already registered"):
        register_anatomy(Anatomy(name="skull", aliases=("cephalometric",), num_landmarks=3, grid=(64, 64)))
    with registered(Anatomy(name="toy", num_landmarks=3, grid=(64, 64))):
        with pytest.raises(DatasetError, match="'toy' has no dataset spec"):
            load_split(tmp_path, "toy", "train")
