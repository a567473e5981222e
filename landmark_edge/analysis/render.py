"""Measurements for people: a terminal table and the lines drawn on an overlay."""

from __future__ import annotations

from collections.abc import Callable

from PIL import ImageDraw, ImageFont
from rich.table import Table
from rich.text import Text

from landmark_edge.analysis.cephalometry import MEASUREMENTS
from landmark_edge.results import ImageResult, Measurement

UNIT_SUFFIX = {"deg": "°", "mm": " mm", "ratio": ""}
# One colour per measurement (the overlay's legend uses the same), distinct from the green/red markers.
COLOURS = ((255, 196, 0), (0, 200, 255), (255, 120, 220), (160, 120, 255), (255, 140, 40), (120, 255, 255),
           (255, 255, 120), (200, 200, 200))  # fmt: skip


def format_value(measurement: Measurement) -> str:
    if measurement.value is None:
        return "-"
    digits = 3 if measurement.unit == "ratio" else 1
    return f"{measurement.value:.{digits}f}{UNIT_SUFFIX.get(measurement.unit, ' ' + measurement.unit)}"


def measurement_table(result: ImageResult) -> Table:
    """The second table of ``infer --measurements``: value, class and a note (low confidence, or why none)."""
    table = Table(title="ISBI 2015 cephalometric measurements")
    for column in ("measurement", "value", "class", "meaning", "note"):
        table.add_column(column, justify="right" if column in ("value", "class") else "left")
    for m in result.measurements or []:
        note = m.reason or (f"low confidence: {', '.join(m.weak_landmarks)}" if m.low_confidence else "")
        cells = (m.name, format_value(m), "-" if m.class_ is None else str(m.class_), m.class_label or "-", note)
        table.add_row(*(Text(cell) for cell in cells))  # plain text: a reason is never read as markup
    return table


def measurement_drawer(result: ImageResult) -> Callable[[ImageDraw.ImageDraw, float, ImageFont.FreeTypeFont], None]:
    """A ``write_overlay`` decorator drawing each defined measurement's lines and a legend of the values."""
    lines = {d.name: d.lines for d in MEASUREMENTS}
    points = {lm.name: (lm.x, lm.y) for lm in result.landmarks}
    measurements = result.measurements or []

    def draw(canvas: ImageDraw.ImageDraw, unit: float, font: ImageFont.FreeTypeFont) -> None:
        drawn = set()
        for colour, m in zip(COLOURS, measurements, strict=False):
            # Lines shared by several measurements (S-N, A-B, FH, palatal) are drawn once, in the first colour.
            for start, end in [s for s in lines.get(m.name, ()) if m.value is not None and s not in drawn]:
                drawn.add((start, end))
                canvas.line([points[start], points[end]], fill=colour, width=max(1, round(unit / 2)))
        top = canvas.im.size[1] - 4 - (font.size + 2) * len(measurements)
        for row, (colour, m) in enumerate(zip(COLOURS, measurements, strict=False)):
            text = f"{m.name} {format_value(m)}  {m.class_label or m.reason or ''}"
            text += "  (low confidence)" if m.low_confidence else ""
            canvas.text((4, top + row * (font.size + 2)), text, fill=colour, font=font, stroke_width=1,
                        stroke_fill=(0, 0, 0))  # fmt: skip

    return draw
