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

    def draw(canvas: ImageDraw.ImageDraw, unit: float, font: ImageFont.FreeTypeFont) -> None:
        drawn = set()
        legend_y = canvas.im.size[1] - 4 - (font.size + 2) * len(result.measurements or [])
        for colour, m in zip(COLOURS, result.measurements or [], strict=False):
            if m.value is not None:
                for segment in lines.get(m.name, ()):
                    if segment not in drawn:  # shared lines (S-N, A-B, FH, palatal) once, in the first colour
                        drawn.add(segment)
                        canvas.line([points[segment[0]], points[segment[1]]], fill=colour, width=max(1, round(unit / 2)))
            text = f"{m.name} {format_value(m)}  {m.class_label or m.reason or ''}" + ("  (low confidence)" if m.low_confidence else "")
            canvas.text((4, legend_y), text, fill=colour, font=font, stroke_width=1, stroke_fill=(0, 0, 0))
            legend_y += font.size + 2

    return draw
