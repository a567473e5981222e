"""Any registered anatomy's dataset in the raw layout of ``shared/data`` (or any ``--data`` root), with its splits.

Where a dataset lives and how its ids and labels are read is the anatomy's registry entry
(:class:`~landmark_edge.dataset_spec.DatasetSpec`); this module applies it the same way to every anatomy and
turns a dataset folder into :class:`Sample` records: the image file, its original size, its landmarks in
*original* pixels (floats) and its physical spacing when one is known. Labels are parsed up front, so a missing
or malformed label file is reported (one line naming it), that sample is skipped and counted, and no epoch can
crash half way on a label.

Splits follow the entry's reference rule (reference §6.3-6.5), unless the dataset folder has a ``split.csv``
(``id,split`` rows): a subset of a dataset (the 138-image hand set) comes with the split meant for it, since the
reference boundaries, made for the whole set, would put nearly all of a subset in train.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from landmark_edge.anatomy import Anatomy, get_anatomy
from landmark_edge.dataset_spec import DatasetError, DatasetSpec, LabelError

SPLITS = ("train", "val", "test")
SPLIT_FILE = "split.csv"


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``landmarks`` are (C, 2) float (x, y) in the original image's pixels.

    ``view`` (3x3, original pixels) makes the sample a moved copy of its file: the image is the file's through
    that map (:func:`landmark_edge.affine.warp`), and ``landmarks`` and ``spacing_mm`` are already the moved
    image's (an evaluation shift).
    """

    anatomy: str
    id: str
    image: Path
    original_size: tuple[int, int]  # (W, H) of the original image (the packed copy is stored at grid size)
    landmarks: np.ndarray
    spacing_mm: tuple[float, float] | None = None
    view: np.ndarray | None = None


@dataclass
class SplitData:
    """The usable samples of one anatomy's split, and one line per skipped sample saying why."""

    anatomy: str
    split: str
    samples: list[Sample] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def split_ids(bounds: tuple[int, int], ids: list[str], split: str) -> list[str]:
    """The reference split of an already sorted id list: ``bounds`` are (train end, val end) positions."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}': choose from {', '.join(SPLITS)}")
    train_end, val_end = bounds
    return {"train": ids[:train_end], "val": ids[train_end:val_end], "test": ids[val_end:]}[split]


def read_split_file(path: Path) -> dict[str, str]:
    """``id -> split`` from a dataset's ``split.csv`` (header ``id,split``); a bad row names the file and line."""
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: unreadable split file ({error})") from None
    if not rows or [c.strip() for c in rows[0]] != ["id", "split"]:
        raise DatasetError(f"{path}: split file must start with the header 'id,split'")
    splits = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        if len(row) != 2 or row[1].strip() not in SPLITS:
            raise DatasetError(f"{path} line {number}: expected 'id,split' with split one of {', '.join(SPLITS)}")
        splits[row[0].strip()] = row[1].strip()
    return splits


def choose_split(folder: Path, bounds: tuple[int, int], ids: list[str], split: str) -> list[str]:
    """``ids`` (sorted) of ``split``: the folder's ``split.csv`` when it has one, else the reference ``bounds``."""
    path = folder / SPLIT_FILE
    if not path.is_file():
        return split_ids(bounds, ids, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}': choose from {', '.join(SPLITS)}")
    assigned = read_split_file(path)
    return [i for i in ids if assigned.get(i) == split]


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise LabelError(f"{path}: unreadable image ({error})") from None


def spec_of(anatomy: Anatomy) -> DatasetSpec:
    """The entry's dataset spec; an anatomy registered without one cannot be read from a data folder."""
    if anatomy.dataset is None:
        raise DatasetError(f"anatomy '{anatomy.name}' has no dataset spec in the registry: no raw layout to read")
    return anatomy.dataset


def load_raw_split(root: Path, anatomy: Anatomy | str, split: str) -> SplitData:
    """One anatomy's split from the raw layout (``root/<its dataset folder>``, e.g. ``root/ISBI2015_ceph``)."""
    anatomy = get_anatomy(anatomy) if isinstance(anatomy, str) else anatomy
    spec = spec_of(anatomy)
    folder = Path(root) / spec.folder
    ids, images = spec.list_ids(folder)
    read = spec.open_labels(folder, anatomy.num_landmarks)
    result = SplitData(anatomy.name, split)
    for sample_id in (i for i in choose_split(folder, spec.split_bounds, ids, split) if i in images):
        try:
            size = _image_size(images[sample_id])
            points = read(sample_id, size)
        except LabelError as error:
            result.skipped.append(str(error))
            continue
        result.samples.append(
            Sample(anatomy.name, sample_id, images[sample_id], size, points, anatomy.default_spacing_mm)
        )
    return result


def all_labels(root: Path, anatomy: Anatomy | str) -> np.ndarray:
    """(N, C, 2) every annotation of one anatomy in the raw layout, whether or not its image is present.

    For statistics over the labels alone (``scripts/make_layouts.py``), each read as for a 1 x 1 image: pixels
    where the labels are pixels (head: the senior/junior mean; hand: the rows of ``all.csv``), the fractions of
    the image size where they are fractions (chest). A malformed label stops it: statistics must not drift.
    """
    anatomy = get_anatomy(anatomy) if isinstance(anatomy, str) else anatomy
    spec = spec_of(anatomy)
    folder = Path(root) / spec.folder
    read = spec.open_labels(folder, anatomy.num_landmarks)
    try:
        return np.array([read(sample_id, (1, 1)) for sample_id in spec.label_ids(folder)])
    except LabelError as error:
        raise DatasetError(str(error)) from None
