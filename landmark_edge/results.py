"""Inference results: one :class:`ImageResult` per image, or an :class:`ImageFailure` saying why not.

Besides the aggregate formats (JSON, CSV, JSONL), a :class:`ResultStore` keeps one JSON file per image in an
output folder: the unit a folder run resumes from (``--skip-existing``), each written atomically, so a killed
run leaves whole files only and a resumed run rebuilds exactly the aggregate an uninterrupted one writes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from landmark_edge.errors import LandmarkEdgeError
from landmark_edge.io.atomic import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from landmark_edge.io.images import XrayImage


@dataclass
class Landmark:
    index: int  # 1-based, as landmark tables are numbered in the literature
    name: str
    x: float  # original-image pixels
    y: float
    x_mm: float | None
    y_mm: float | None
    confidence: float  # heatmap peak value in (0, 1)
    grid_x: float  # model-grid pixels
    grid_y: float


@dataclass
class Measurement:
    """One clinical measurement from a result's landmarks (``landmark_edge.analysis``): a value, or why none.

    ``value`` is None exactly when ``reason`` says why (so JSON never holds a NaN); ``class_`` is the source's
    class number (1 = normal) and is written as ``class``.
    """

    name: str
    value: float | None
    unit: str
    class_: int | None
    class_label: str | None
    landmarks: list[str]
    low_confidence: bool = False  # a landmark it uses is below --min-confidence: read the value with care
    weak_landmarks: list[str] = field(default_factory=list)
    reason: str | None = None

    def to_dict(self) -> dict:
        return {("class" if key == "class_" else key): value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Measurement:
        return cls(**{("class_" if key == "class" else key): value for key, value in data.items()})


@dataclass
class ImageResult:
    path: str
    anatomy: str
    width: int
    height: int
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    decode: str
    landmarks: list[Landmark] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # weak peaks, implausible layout or geometry (landmark_edge.plausibility)
    ok: bool = True
    measurements: list[Measurement] | None = None  # only when asked for (infer --measurements)

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.measurements is None:
            del data["measurements"]
        else:
            data["measurements"] = [m.to_dict() for m in self.measurements]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ImageResult:
        """Inverse of :meth:`to_dict` (JSON turns tuples into lists; they are restored)."""
        values = dict(data)
        values["landmarks"] = [Landmark(**lm) for lm in values["landmarks"]]
        if values.get("measurements") is not None:
            values["measurements"] = [Measurement.from_dict(m) for m in values["measurements"]]
        if values["spacing_mm"] is not None:
            values["spacing_mm"] = tuple(values["spacing_mm"])
        return cls(**values)


@dataclass
class ImageFailure:
    path: str
    error: str
    ok: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


Outcome = ImageResult | ImageFailure

CSV_COLUMNS = [
    "path", "anatomy", "index", "name", "x", "y", "x_mm", "y_mm", "confidence", "grid_x", "grid_y", "flags",
]  # fmt: skip


def to_json(outcomes: list[Outcome]) -> str:
    return json.dumps([o.to_dict() for o in outcomes], indent=2) + "\n"


def to_jsonl_line(outcome: Outcome) -> str:
    return json.dumps(outcome.to_dict()) + "\n"


def csv_columns(outcomes: list[Outcome]) -> list[str]:
    """:data:`CSV_COLUMNS`, plus ``<NAME>`` and ``<NAME>_class`` per measurement when the results carry them."""
    results = [o for o in outcomes if isinstance(o, ImageResult)]
    names = next(([m.name for m in r.measurements] for r in results if r.measurements), [])
    return CSV_COLUMNS + [column for name in names for column in (name, f"{name}_class")]


def landmark_rows(outcomes: list[Outcome]) -> Iterator[dict]:
    """One row per landmark of every successful image; failures have no rows.

    With measurements, each image's rows also carry ``<NAME>`` (value, empty when undefined) and
    ``<NAME>_class`` columns, repeated on its landmark rows as ``path`` and ``flags`` are.
    """
    for outcome in outcomes:
        if not isinstance(outcome, ImageResult):
            continue
        measured = {}
        for m in outcome.measurements or []:
            measured |= {m.name: "" if m.value is None else m.value, f"{m.name}_class": m.class_ or ""}
        flags = "; ".join(outcome.flags)
        for landmark in outcome.landmarks:
            row = {k: v for k, v in asdict(landmark).items() if k in CSV_COLUMNS}
            yield {"path": outcome.path, "anatomy": outcome.anatomy, **row, "flags": flags, **measured}


def to_csv(outcomes: list[Outcome]) -> str:
    """One row per landmark of every successful image (failures are reported on stderr, not here)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(outcomes), lineterminator="\n")
    writer.writeheader()
    writer.writerows(landmark_rows(outcomes))
    return buffer.getvalue()


def write_parquet(outcomes: list[Outcome], path: Path) -> None:
    """The CSV's rows as a Parquet table (pyarrow, which the ``ray`` extra brings), written atomically."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LandmarkEdgeError('--format parquet needs pyarrow: pip install "landmark-edge[ray]"') from None
    table = pa.Table.from_pylist(list(landmark_rows(outcomes)), schema=_parquet_schema(pa))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _parquet_schema(pa):
    text = ("path", "anatomy", "name", "flags")
    types = {"index": pa.int32(), **{column: pa.string() for column in text}}
    return pa.schema([(column, types.get(column, pa.float64())) for column in CSV_COLUMNS])


class ResultStore:
    """One ``<out_dir>/<relative input path>.json`` per image, named relative to the inputs' common folder.

    Naming by the path relative to the common folder keeps files from different sub-folders apart
    (``a/001.png`` and ``b/001.png``) and is the same on every run over the same inputs.
    """

    def __init__(self, out_dir: Path | None, inputs: list[Path]) -> None:
        self.out_dir = out_dir
        parents = [str(p.resolve().parent) for p in inputs]
        self.root = Path(os.path.commonpath(parents)) if parents else Path.cwd()

    def key(self, image: str | Path) -> Path:
        """The input's path relative to the common folder (the name its outputs take)."""
        return Path(image).resolve().relative_to(self.root)

    def path(self, image: str | Path, suffix: str = ".json", out_dir: Path | None = None) -> Path:
        key = self.key(image)
        return (out_dir or self.out_dir) / key.with_name(key.name + suffix)

    def has(self, image: str | Path) -> bool:
        return self.path(image).is_file()

    def load(self, image: str | Path) -> ImageResult:
        return ImageResult.from_dict(json.loads(self.path(image).read_text(encoding="utf-8")))

    def save(self, result: ImageResult) -> None:
        atomic_write_text(self.path(result.path), json.dumps(result.to_dict(), indent=1) + "\n")


def display_image(image: Image.Image) -> Image.Image:
    """An RGB picture of any stored image (16-bit, float, RGBA...), its channel 0 stretched to 0-255 for viewing."""
    channel = image.getchannel(0) if len(image.getbands()) > 1 else image
    if channel.mode == "L":
        return channel.convert("RGB")
    values = np.asarray(channel, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")


def write_overlay(
    xray: XrayImage, result: ImageResult, path: Path,
    decorate: Callable[[ImageDraw.ImageDraw, float, ImageFont.FreeTypeFont], None] | None = None,
) -> None:  # fmt: skip
    """A PNG of the original image (channel 0, as the model saw it) with each landmark numbered, atomically.

    Markers scale with the image so they read the same on a 500 px thumbnail and a 3000 px film; flagged
    results get their first flag written across the top. ``decorate(draw, unit, font)`` draws under the
    markers (measurement lines: ``landmark_edge.analysis``).
    """
    picture = display_image(xray.image)
    draw = ImageDraw.Draw(picture)
    unit = max(picture.size) / 400
    radius = max(2.0, 2.5 * unit)
    font = ImageFont.load_default(size=max(10, round(9 * unit)))
    if decorate is not None:
        decorate(draw, unit, font)
    colour = (255, 64, 64) if result.flags else (0, 255, 96)
    for lm in result.landmarks:
        draw.ellipse((lm.x - radius, lm.y - radius, lm.x + radius, lm.y + radius), outline=colour,
                     width=max(1, round(unit)))
        draw.text((lm.x + radius + 1, lm.y - radius), str(lm.index), fill=colour, font=font,
                  stroke_width=max(1, round(unit / 2)), stroke_fill=(0, 0, 0))
    if result.flags:
        draw.text((4, 4), result.flags[0], fill=colour, font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
