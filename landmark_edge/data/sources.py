"""The three datasets in the reference layout of ``shared/data`` (or any ``--data`` root), with their splits.

Each reader turns a dataset folder into :class:`Sample` records: the image file, its original size, its
landmarks in *original* pixels (floats) and its physical spacing when one is known. Labels are parsed up front,
so a missing or malformed label file is reported (one line naming it), that sample is skipped and counted, and
no epoch can crash half way on a label.

Splits follow the reference loaders (reference §6.3-6.5), unless the dataset folder has a ``split.csv``
(``id,split`` rows): a subset of a dataset (the 138-image hand set) comes with the split meant for it, since the
reference boundaries, made for the whole set, would put nearly all of a subset in train. The hand rule is applied
to the sorted *label* ids so that a subset of the atlas keeps every image in its paper split.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from landmark_edge.anatomy import Anatomy, get_anatomy
from landmark_edge.errors import LandmarkEdgeError
from landmark_edge.io.images import IMAGE_SUFFIXES

SPLITS = ("train", "val", "test")
SPLIT_FILE = "split.csv"

# Reference config.yaml, chest `exclude_list`.
CHEST_EXCLUDED = tuple(f"CHNCXR_{n:04d}_0" for n in (59, 178, 228, 267, 295, 310, 285, 276, 303))
# Reference split boundaries: (train end, val end) positions in each dataset's sorted list.
SPLIT_BOUNDS = {"head": (130, 150), "hand": (550, 609), "chest": (195, 229)}
FOLDERS = {"head": "ISBI2015_ceph", "hand": "hand", "chest": "chest"}


class DatasetError(LandmarkEdgeError):
    """A dataset folder or manifest cannot be used at all; the message names it."""


class LabelError(ValueError):
    """A label file (or row) is missing or malformed; the message names it. The sample is skipped."""


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


def split_ids(anatomy: str, ids: list[str], split: str) -> list[str]:
    """The reference split of an already sorted id list."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}': choose from {', '.join(SPLITS)}")
    train_end, val_end = SPLIT_BOUNDS[anatomy]
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


def choose_split(folder: Path, anatomy: str, ids: list[str], split: str) -> list[str]:
    """``ids`` (sorted) of ``split``: the folder's ``split.csv`` when it has one, else the reference rule."""
    path = folder / SPLIT_FILE
    if not path.is_file():
        return split_ids(anatomy, ids, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}': choose from {', '.join(SPLITS)}")
    assigned = read_split_file(path)
    return [i for i in ids if assigned.get(i) == split]


def _image_ids(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def _points(lines: list[str], count: int, separator: str | None, path: Path, skip_first: bool = False) -> np.ndarray:
    body = lines[1:] if skip_first else lines
    if len(body) < count:
        raise LabelError(f"{path}: {len(body)} landmark lines, expected {count}")
    try:
        points = np.array([[float(v) for v in line.split(separator)[:2]] for line in body[:count]], dtype=np.float64)
    except ValueError as error:
        raise LabelError(f"{path}: malformed landmark line ({error})") from None
    if points.shape != (count, 2) or not np.isfinite(points).all():
        raise LabelError(f"{path}: malformed landmark lines (need {count} pairs of numbers)")
    return points


def _read_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise LabelError(f"{path}: label file missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise LabelError(f"{path}: unreadable label file ({error})") from None


def _head_points(root: Path, sample_id: str, count: int) -> np.ndarray:
    """Mean of the junior and senior annotations, as the reference's ground truth."""
    junior, senior = (root / f"400_{who}" / f"{sample_id}.txt" for who in ("junior", "senior"))
    return (_points(_read_lines(junior), count, ",", junior) + _points(_read_lines(senior), count, ",", senior)) / 2


def _chest_points(root: Path, sample_id: str, count: int, size: tuple[int, int]) -> np.ndarray:
    """Label lines are (x / W, y / H) ratios after a count line; scaled by this image's size."""
    path = root / "labels" / f"{sample_id}.txt"
    return _points(_read_lines(path), count, None, path, skip_first=True) * np.asarray(size, dtype=np.float64)


def _hand_table(root: Path, count: int) -> tuple[list[str], dict[str, np.ndarray], dict[str, str]]:
    """all.csv: every id in file order, the parsed rows, and one error line per malformed row."""
    path = root / "all.csv"
    ids, rows, errors = [], {}, {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DatasetError(f"{path}: hand label table unreadable ({error})") from None
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not row[0].strip():
            continue
        sample_id = row[0].strip()
        ids.append(sample_id)
        try:
            values = np.array([float(v) for v in row[1:]], dtype=np.float64)
            if values.size != 2 * count or not np.isfinite(values).all():
                raise ValueError(f"{values.size} values, expected {2 * count}")
            rows[sample_id] = values.reshape(count, 2)
        except ValueError as error:
            errors[sample_id] = f"{path} line {number} (id {sample_id}): malformed row ({error})"
    return sorted(ids), rows, errors


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise LabelError(f"{path}: unreadable image ({error})") from None


def _head_ids(root: Path) -> tuple[list[str], dict[str, Path]]:
    images = _image_ids(root / "raw")
    return sorted(images), images


def _chest_ids(root: Path) -> tuple[list[str], dict[str, Path]]:
    images = _image_ids(root / "pngs")
    keep = [i for i in sorted(images) if i.startswith("CHN") and i not in CHEST_EXCLUDED and i.endswith("_0")]
    return keep, images


def load_raw_split(root: Path, anatomy: Anatomy | str, split: str) -> SplitData:
    """One anatomy's reference split from the raw layout (``root/ISBI2015_ceph``, ``root/hand``, ``root/chest``)."""
    anatomy = get_anatomy(anatomy) if isinstance(anatomy, str) else anatomy
    folder = Path(root) / FOLDERS[anatomy.name]
    count = anatomy.num_landmarks
    result = SplitData(anatomy.name, split)
    read: Callable[[str, tuple[int, int]], np.ndarray]
    if anatomy.name == "hand":
        label_ids, rows, errors = _hand_table(folder, count)
        images = _image_ids(folder / "jpg")
        chosen = [i for i in choose_split(folder, "hand", label_ids, split) if i in images]
        result.skipped += [errors[i] for i in chosen if i in errors]
        chosen = [i for i in chosen if i not in errors]

        def read(sample_id, size):
            return rows[sample_id]
    else:
        ids, images = (_head_ids if anatomy.name == "head" else _chest_ids)(folder)
        chosen = choose_split(folder, anatomy.name, ids, split)
        if anatomy.name == "head":

            def read(sample_id, size):
                return _head_points(folder, sample_id, count)
        else:

            def read(sample_id, size):
                return _chest_points(folder, sample_id, count, size)

    for sample_id in chosen:
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

    For statistics over the labels alone (``scripts/make_layouts.py``): head is the senior/junior mean in
    pixels, hand the rows of ``all.csv`` in pixels, chest the label files' fractions of the image size.
    """
    anatomy = get_anatomy(anatomy) if isinstance(anatomy, str) else anatomy
    folder = Path(root) / FOLDERS[anatomy.name]
    count = anatomy.num_landmarks
    if anatomy.name == "hand":
        ids, rows, errors = _hand_table(folder, count)
        if errors:
            raise DatasetError(next(iter(errors.values())))
        return np.array([rows[i] for i in ids])
    if anatomy.name == "head":
        ids = [path.stem for path in sorted((folder / "400_senior").glob("*.txt"))]
        return np.array([_head_points(folder, i, count) for i in ids])
    ids = [path.stem for path in sorted((folder / "labels").glob("*.txt"))]
    return np.array([_chest_points(folder, i, count, (1, 1)) for i in ids])
