"""How each anatomy's raw dataset is laid out and read: the dataset half of a registry entry.

A :class:`DatasetSpec` says where an anatomy's folder is under a data root, which ids it holds, how one id's
labels are read and how the sorted ids split. The anatomy registry (:mod:`landmark_edge.anatomy`) puts one in
each entry, so :mod:`landmark_edge.data.sources` reads any anatomy the same way and adding an anatomy touches
its entry only. This module sits *below* the registry (it imports no anatomy), which is why the readers of the
three reference layouts (reference §6.3-6.5) live here rather than in ``data/``.

Readers raise :class:`LabelError` for a missing or malformed label (that sample is skipped and counted) and
:class:`DatasetError` for a folder or table that cannot be used at all.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landmark_edge.errors import LandmarkEdgeError
from landmark_edge.io.xray import IMAGE_SUFFIXES

# ``(id, original (W, H)) -> (C, 2)`` float landmarks in original pixels; raises LabelError.
LabelReader = Callable[[str, tuple[int, int]], np.ndarray]
# ``folder -> (ids the split rule applies to, sorted; the image file of each id that has one)``.
IdLister = Callable[[Path], tuple[list[str], dict[str, Path]]]


class DatasetError(LandmarkEdgeError):
    """A dataset folder or manifest cannot be used at all; the message names it."""


class LabelError(ValueError):
    """A label file (or row) is missing or malformed; the message names it. The sample is skipped."""


@dataclass(frozen=True)
class DatasetSpec:
    """One anatomy's raw dataset.

    ``folder``: its folder under the data root. ``list_ids``: the ids a split is drawn from and their images (an
    id without an image is left out of its split: the hand ids come from the label table, so a subset of the
    atlas keeps every image in its paper split). ``label_ids``: every annotated id, image or not (statistics
    over the labels alone). ``open_labels(folder, count)``: the id's label reader, opened once per split so a
    label table is parsed once. ``split_bounds``: the reference split rule, (train end, val end) positions in
    the sorted ids; a ``split.csv`` in the folder overrides it (:func:`landmark_edge.data.sources.choose_split`).
    """

    folder: str
    list_ids: IdLister
    label_ids: Callable[[Path], list[str]]
    open_labels: Callable[[Path, int], LabelReader]
    split_bounds: tuple[int, int]


def image_files(folder: Path) -> dict[str, Path]:
    """``id -> image`` for the raster images directly in ``folder`` (the id is the file's stem)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def read_label_lines(path: Path) -> list[str]:
    """The non-blank lines of one label file; a missing or unreadable file is a :class:`LabelError`."""
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise LabelError(f"{path}: label file missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise LabelError(f"{path}: unreadable label file ({error})") from None


def parse_points(lines: list[str], count: int, separator: str | None, path: Path) -> np.ndarray:
    """(count, 2) float points from the first two numbers of each of the first ``count`` lines."""
    if len(lines) < count:
        raise LabelError(f"{path}: {len(lines)} landmark lines, expected {count}")
    try:
        points = np.array([[float(v) for v in line.split(separator)[:2]] for line in lines[:count]], dtype=np.float64)
    except ValueError as error:
        raise LabelError(f"{path}: malformed landmark line ({error})") from None
    if points.shape != (count, 2) or not np.isfinite(points).all():
        raise LabelError(f"{path}: malformed landmark lines (need {count} pairs of numbers)")
    return points


def label_stems(folder: Path, suffix: str = ".txt") -> list[str]:
    """The sorted stems of the label files (one per id, ending in ``suffix``) in ``folder``."""
    return [path.stem for path in sorted(folder.glob(f"*{suffix}"))]


def images_in(folder: Path) -> tuple[list[str], dict[str, Path]]:
    """The sorted ids of the images in ``folder`` and ``id -> image``: the listing of a dataset whose ids are
    its image files (head, and most new ones)."""
    images = image_files(folder)
    return sorted(images), images


# -- head: ISBI 2015 cephalograms ------------------------------------------------------------------------------
def _head_points(folder: Path, sample_id: str, count: int) -> np.ndarray:
    """Mean of the junior and senior annotations, as the reference's ground truth."""
    junior, senior = (folder / f"400_{who}" / f"{sample_id}.txt" for who in ("junior", "senior"))
    return (parse_points(read_label_lines(junior), count, ",", junior)
            + parse_points(read_label_lines(senior), count, ",", senior)) / 2  # fmt: skip


def _open_head_labels(folder: Path, count: int) -> LabelReader:
    return lambda sample_id, size: _head_points(folder, sample_id, count)


HEAD_DATASET = DatasetSpec(
    folder="ISBI2015_ceph",
    list_ids=lambda folder: images_in(folder / "raw"),
    label_ids=lambda folder: label_stems(folder / "400_senior"),
    open_labels=_open_head_labels,
    split_bounds=(130, 150),
)


# -- hand: the hand atlas, one label table ---------------------------------------------------------------------
def _hand_rows(folder: Path) -> tuple[Path, list[tuple[int, list[str]]]]:
    """all.csv and its non-empty rows, each with its line number (the table is the hand's only label file)."""
    path = folder / "all.csv"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DatasetError(f"{path}: hand label table unreadable ({error})") from None
    rows = enumerate(csv.reader(text.splitlines()), start=1)
    return path, [(number, row) for number, row in rows if row and row[0].strip()]


def _hand_points(path: Path, number: int, row: list[str], count: int) -> np.ndarray:
    """One all.csv row, ``id,x1,y1,...``, as (count, 2) points; a malformed row names its line and id."""
    try:
        values = np.array([float(v) for v in row[1:]], dtype=np.float64)
        if values.size != 2 * count or not np.isfinite(values).all():
            raise ValueError(f"{values.size} values, expected {2 * count}")
    except ValueError as error:
        raise LabelError(f"{path} line {number} (id {row[0].strip()}): malformed row ({error})") from None
    return values.reshape(count, 2)


def _hand_label_ids(folder: Path) -> list[str]:
    return sorted(row[0].strip() for _, row in _hand_rows(folder)[1])


def _hand_ids(folder: Path) -> tuple[list[str], dict[str, Path]]:
    """The sorted *label* ids (the reference rule splits those) and the images present."""
    return _hand_label_ids(folder), image_files(folder / "jpg")


def _open_hand_labels(folder: Path, count: int) -> LabelReader:
    path, rows = _hand_rows(folder)
    by_id = {row[0].strip(): (number, row) for number, row in rows}
    return lambda sample_id, size: _hand_points(path, *by_id[sample_id], count)


HAND_DATASET = DatasetSpec(
    folder="hand", list_ids=_hand_ids, label_ids=_hand_label_ids, open_labels=_open_hand_labels,
    split_bounds=(550, 609),
)  # fmt: skip


# -- chest: Shenzhen chest X-rays ------------------------------------------------------------------------------
# Reference config.yaml, chest `exclude_list`.
CHEST_EXCLUDED = tuple(f"CHNCXR_{n:04d}_0" for n in (59, 178, 228, 267, 295, 310, 285, 276, 303))


def _chest_ids(folder: Path) -> tuple[list[str], dict[str, Path]]:
    images = image_files(folder / "pngs")
    keep = [i for i in sorted(images) if i.startswith("CHN") and i not in CHEST_EXCLUDED and i.endswith("_0")]
    return keep, images


def _open_chest_labels(folder: Path, count: int) -> LabelReader:
    """Label lines are (x / W, y / H) ratios after a count line; scaled by this image's size."""

    def read(sample_id: str, size: tuple[int, int]) -> np.ndarray:
        path = folder / "labels" / f"{sample_id}.txt"
        return parse_points(read_label_lines(path)[1:], count, None, path) * np.asarray(size, dtype=np.float64)

    return read


CHEST_DATASET = DatasetSpec(
    folder="chest", list_ids=_chest_ids, label_ids=lambda folder: label_stems(folder / "labels"),
    open_labels=_open_chest_labels, split_bounds=(195, 229),
)  # fmt: skip
