"""Overlays: the original image with its numbered landmarks (and flags), for people to look at."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from landmark_edge.io.atomic import atomic_path
from landmark_edge.results.records import ImageResult

if TYPE_CHECKING:
    from landmark_edge.io.images import XrayImage

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
