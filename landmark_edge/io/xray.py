"""The decoded X-ray every reader returns (PIL/DICOM alike), and the size guard they all apply first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from landmark_edge.errors import InputError

# The decompression-bomb guard. Large clinical radiographs are about 4300 x 4300 px (18 Mpx); 80 Mpx leaves room
# for any real X-ray and refuses a header that asks for gigabytes before a single pixel is decoded.
MAX_PIXELS = 80_000_000
# The raster files the readers decode (DICOM has its own suffixes, io.dicom); here, below io.images, so the
# dataset specs of the anatomy registry can list a folder's images without importing the readers.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


@dataclass
class XrayImage:
    """An image as read from disk, before any resizing.

    ``spacing_mm`` is (x, y) mm per original pixel when the file states it, ``spacing_source`` says where from
    (e.g. ``DICOM PixelSpacing``).
    """

    path: Path
    image: Image.Image
    spacing_mm: tuple[float, float] | None = None
    spacing_source: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in original pixels."""
        return self.image.size

    @property
    def header(self) -> ImageHeader:
        return ImageHeader(self.path, self.size, self.spacing_mm, self.spacing_source)


@dataclass(frozen=True)
class ImageHeader:
    """What a result needs of an image besides the network's output: its path, the frame its landmarks are
    reported in (``size``, (W, H)) and its stated spacing. Only this, not the pixels, travels with a Ray batch; a
    dataset sample read from a resized copy reports in its original's frame."""

    path: Path
    size: tuple[int, int]
    spacing_mm: tuple[float, float] | None = None
    spacing_source: str | None = None


def check_pixel_count(path: Path, width: int, height: int) -> None:
    """The decompression-bomb guard, applied to the header's size before anything is decoded."""
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{path}: refused, header claims {width}x{height} px ({width * height / 1e6:.0f} Mpx), over the "
            f"{MAX_PIXELS / 1e6:.0f} Mpx decompression-bomb limit"
        )
