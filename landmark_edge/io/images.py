"""Reading X-ray images into a :class:`XrayImage` that carries its physical spacing (when known)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from landmark_edge.anatomy import Anatomy
from landmark_edge.errors import InputError


@dataclass
class XrayImage:
    """An image as read from disk, before any resizing. ``spacing_mm`` is (x, y) mm per original pixel."""

    path: Path
    image: Image.Image
    spacing_mm: tuple[float, float] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in original pixels."""
        return self.image.size


def read_image(path: str | Path) -> XrayImage:
    """Open and fully decode an image, raising :class:`InputError` with a one-line reason on any problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        image = Image.open(path)
        image.load()
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image PIL can read") from None
    except Image.DecompressionBombError as error:
        raise InputError(f"{path}: refused, image too large ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: truncated or corrupt image ({error})") from None
    return XrayImage(path=path, image=image)


def resolve_spacing(
    image: XrayImage, anatomy: Anatomy, override_mm: float | None = None
) -> tuple[tuple[float, float] | None, str]:
    """Spacing precedence: ``--spacing`` > the file's own tags > the anatomy's default; with its source."""
    if override_mm is not None:
        return (override_mm, override_mm), "--spacing"
    if image.spacing_mm is not None:
        return image.spacing_mm, "file"
    if anatomy.default_spacing_mm is not None:
        return anatomy.default_spacing_mm, f"{anatomy.name} default"
    return None, "none"
