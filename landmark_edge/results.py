"""Inference results: one :class:`ImageResult` per image, or an :class:`ImageFailure` saying why not."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field


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
class ImageResult:
    path: str
    anatomy: str
    width: int
    height: int
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    decode: str
    landmarks: list[Landmark] = field(default_factory=list)
    ok: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageFailure:
    path: str
    error: str
    ok: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


Outcome = ImageResult | ImageFailure

CSV_COLUMNS = ["path", "anatomy", "index", "name", "x", "y", "x_mm", "y_mm", "confidence", "grid_x", "grid_y"]


def to_json(outcomes: list[Outcome]) -> str:
    return json.dumps([o.to_dict() for o in outcomes], indent=2) + "\n"


def to_jsonl_line(outcome: Outcome) -> str:
    return json.dumps(outcome.to_dict()) + "\n"


def to_csv(outcomes: list[Outcome]) -> str:
    """One row per landmark of every successful image (failures are reported on stderr, not here)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for outcome in outcomes:
        if isinstance(outcome, ImageResult):
            for landmark in outcome.landmarks:
                row = {k: v for k, v in asdict(landmark).items() if k in CSV_COLUMNS}
                writer.writerow({"path": outcome.path, "anatomy": outcome.anatomy, **row})
    return buffer.getvalue()
