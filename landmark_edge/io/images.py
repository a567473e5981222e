"""Reading X-ray images into a :class:`XrayImage` that carries its physical spacing (when known).

What the model sees follows the reference reader (PIL's resize of the stored pixels, then channel 0, then a
per-image z-score), so the choices made here are about which *stored pixels* an input file yields:

* 16-bit greyscale (PNG/TIFF ``I;16``) keeps all its bits: PIL resizes it as it is, and the z-score makes the
  result independent of the bit depth (an 8-bit export of the same film gives the same network input up to
  quantisation). Big-endian ``I;16B`` is widened to 32-bit ``I`` because PIL cannot resize it.
* RGB keeps its channels and the model uses channel 0 (red), exactly as the reference does. Alpha is dropped
  before resizing (RGBA -> RGB, LA -> L): PIL resizes RGBA premultiplied, which would let a transparency mask
  change the grey levels. Palette images are expanded to RGB (the palette *indices* are not intensities),
  bilevel to ``L`` and CMYK/YCbCr/LAB/HSV to RGB.
* EXIF orientation is applied, as viewers and ``cv2.imread`` do: the model needs the image upright, and
  coordinates are reported in that upright frame (the one the user sees). Files without the tag (every
  dataset image) are untouched, so the reference preprocessing is unchanged for them.
* DICOM goes through :mod:`landmark_edge.io.dicom` (rescale, window, MONOCHROME1 inversion, spacing tags).

Every problem becomes an :class:`InputError` whose message names the file: a run over a folder reports it in
one line and goes on.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from landmark_edge.anatomy import Anatomy
from landmark_edge.errors import InputError, first_line
from landmark_edge.io.dicom import DICOM_SUFFIXES, is_dicom_preamble, read_dicom
from landmark_edge.io.files import read_snapshot
from landmark_edge.io.xray import IMAGE_SUFFIXES, MAX_PIXELS, ImageHeader, XrayImage, check_pixel_count

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "XrayImage", "check_pixel_count", "read_image", "resolve_spacing"]

# A side shorter than this cannot hold an anatomy worth 512 grid pixels; upsampling it would only invent detail.
MIN_SIDE = 32

# Our guard refuses these images with a clear line, so PIL's own warning (at 89 Mpx) would only duplicate it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Modes the reference preprocessing handles as they are (resize, then channel 0); others are converted.
_KEPT_MODES = frozenset({"L", "I", "I;16", "F", "RGB"})
_TO_RGB_MODES = frozenset({"RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
_EXIF_ORIENTATION = 0x0112


def read_image(path: str | Path) -> XrayImage:
    """Open and fully decode an image or DICOM file; :class:`InputError` with a one-line reason on any problem.

    The file is read once into memory (:func:`~landmark_edge.io.files.read_snapshot`: regular files only, never
    a FIFO or device, refused if it changes meanwhile) and the decoders parse that snapshot.
    """
    path = Path(path)
    data = read_snapshot(path)
    try:
        xray = _read_any(path, data)
        check_pixels(xray)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - untrusted bytes reach two parsers; no input may stop the run
        raise InputError(f"{path}: cannot decode ({type(error).__name__}: {first_line(error)})") from None
    return xray


class _NotAnImage(InputError):
    """PIL does not recognise the bytes (the file may still be DICOM without its preamble)."""


def _read_any(path: Path, data: bytes) -> XrayImage:
    """DICOM when the file has the DICOM preamble; otherwise an image PIL recognises; otherwise, for a DICOM
    suffix, DICOM without a preamble. Content wins over names: a PNG called ``x.dcm`` is read as the PNG."""
    if is_dicom_preamble(data):
        return read_dicom(path, data)
    try:
        return XrayImage(path=path, image=_read_pil(path, data))
    except _NotAnImage:
        if path.suffix.lower() in DICOM_SUFFIXES:
            return read_dicom(path, data)
        raise


def _read_pil(path: Path, data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        check_pixel_count(path, *image.size)
        image.load()
    except UnidentifiedImageError:
        raise _NotAnImage(f"{path}: not a readable image (PNG, JPEG, BMP, TIFF) or DICOM file") from None
    except Image.DecompressionBombError as error:
        raise InputError(f"{path}: refused by the decompression-bomb guard ({first_line(error)})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: truncated or corrupt image ({first_line(error)})") from None
    if getattr(image, "n_frames", 1) > 1:  # multi-frame TIFF/GIF keep their file open: keep frame 0 only
        frame = image.copy()
        image.close()
        image = frame
    return _upright(_normalise_mode(image))


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Convert modes whose stored values are not intensities PIL can resize (see the module docstring)."""
    if image.mode in _KEPT_MODES:
        return image
    if image.mode in _TO_RGB_MODES:
        return image.convert("RGB")
    if image.mode in ("1", "LA", "La"):
        return image.convert("L")
    if image.mode.startswith("I;16"):
        return image.convert("I")
    raise InputError(f"unsupported image mode {image.mode}")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (2-8) so the image is as viewers show it; untagged images are returned."""
    if image.getexif().get(_EXIF_ORIENTATION, 1) in range(2, 9):
        return ImageOps.exif_transpose(image)
    return image


def check_pixels(xray: XrayImage) -> None:
    """Refuse images the network cannot give a meaningful answer for, before they reach it.

    A constant channel 0 would be z-scored to all zeros (the reference divides by ``std + 1e-20``) and produce
    landmarks that look like answers; NaN/inf would propagate through the resize into every output.
    """
    width, height = xray.size
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{xray.path}: image is {width}x{height} px, smaller than {MIN_SIDE} px on a side")
    channel = xray.image.getchannel(0) if len(xray.image.getbands()) > 1 else xray.image
    if channel.mode == "F" and not np.isfinite(np.asarray(channel)).all():
        raise InputError(f"{xray.path}: pixel values contain NaN or infinity")
    low, high = channel.getextrema()
    if low == high:
        raise InputError(f"{xray.path}: constant image (every pixel of channel 0 is {low:g}), nothing to detect")


def resolve_spacing(
    image: XrayImage | ImageHeader, anatomy: Anatomy, override_mm: float | None = None
) -> tuple[tuple[float, float] | None, str]:
    """Spacing precedence: ``--spacing`` > the file's own tags > the anatomy's default; with its source."""
    if override_mm is not None:
        return (override_mm, override_mm), "--spacing"
    if image.spacing_mm is not None:
        return image.spacing_mm, image.spacing_source or "file"
    if anatomy.default_spacing_mm is not None:
        return anatomy.default_spacing_mm, f"{anatomy.name} default"
    return None, "none"
