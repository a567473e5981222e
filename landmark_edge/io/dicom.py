"""DICOM radiographs through pydicom: the grey levels a viewer would show, and the pixel spacing in mm.

The display pipeline is the standard's (PS3.3 C.11), with pydicom's own functions rather than hand-written
windowing: stored values -> modality LUT / rescale (:func:`apply_modality_lut`) -> VOI LUT or window
(:func:`apply_voi_lut`, the file's first window) -> MONOCHROME1 inverted so bright means dense, as in every
training image. The result is a float32 ``F`` image, so PIL's resize (the reference preprocessing) sees the full
precision of 12/16-bit data. A DX file's Presentation LUT Shape ``INVERSE`` only restates MONOCHROME1 (PS3.3
C.8.11.7), so it is not applied a second time.

Compressed transfer syntaxes decode where pydicom has a decoder: RLE and Deflate natively, JPEG baseline and
JPEG 2000 through Pillow, JPEG-LS / lossless JPEG through the optional ``dicom`` extra (pylibjpeg).

pydicom is imported when a DICOM file is read, not with this module: recognising a DICOM file needs only its
preamble, and importing pydicom would add a fifth of a second to every run over PNGs.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from landmark_edge.errors import InputError, first_line
from landmark_edge.io.files import read_head
from landmark_edge.io.xray import XrayImage, check_pixel_count

if TYPE_CHECKING:
    import pydicom

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# PixelSpacing is in the patient plane (calibrated); ImagerPixelSpacing at the detector (includes magnification).
_SPACING_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing")


def is_dicom_preamble(head: bytes) -> bool:
    """True when bytes start with the DICOM Part 10 preamble ("DICM" at byte 128)."""
    return head[128:132] == b"DICM"


def has_dicom_magic(path: Path) -> bool:
    """True when the file is a regular file with the DICOM preamble (a FIFO or device is never opened)."""
    return is_dicom_preamble(read_head(path, 132))


def read_dicom(path: Path, data: bytes) -> XrayImage:
    """Read a single-frame DICOM image from the file's bytes; :class:`InputError` names the file and the problem."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not is_dicom_preamble(data))
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on garbage read with force=True
        raise InputError(f"{path}: not a readable DICOM file ({type(error).__name__}: {_reason(error)})") from None
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise InputError(f"{path}: DICOM file has no pixel data (a report or structured document?)")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows == 0 or columns == 0:
        raise InputError(f"{path}: DICOM header gives no image size (Rows x Columns = {rows} x {columns})")
    check_pixel_count(path, columns, rows)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise InputError(f"{path}: multi-frame DICOM ({frames} frames); one radiograph per file is supported")
    pixels = _decode(path, ds)
    spacing, source = dicom_spacing(ds)
    return XrayImage(path=path, image=_display_image(path, ds, pixels), spacing_mm=spacing, spacing_source=source)


def _decode(path: Path, ds: pydicom.Dataset) -> np.ndarray:
    transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError) as error:
        name = getattr(transfer_syntax, "name", transfer_syntax) or "unknown"
        raise InputError(
            f"{path}: cannot decode DICOM transfer syntax '{name}' here; install the decoders with "
            f"pip install 'landmark-edge[dicom]' ({_reason(error)})"
        ) from None
    except Exception as error:  # noqa: BLE001 - truncated or inconsistent pixel data, in whatever form
        raise InputError(f"{path}: DICOM pixel data truncated or inconsistent with its header ({_reason(error)})"
                         ) from None


def _display_image(path: Path, ds: pydicom.Dataset, pixels: np.ndarray) -> Image.Image:
    """Stored values -> display grey levels (rescale, window, MONOCHROME1 inversion) as a float32 PIL image."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if pixels.ndim == 3:  # colour (pydicom converts YBR to RGB): channel 0 is used, as for any RGB file
        if pixels.dtype != np.uint8:
            raise InputError(f"{path}: {pixels.dtype} colour DICOM ({photometric}) is not supported")
        return Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(f"{path}: photometric interpretation {photometric} is not supported for X-rays")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise InputError(f"{path}: pixel values contain NaN or infinity")
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float32)
    if photometric == "MONOCHROME1":  # low values are white: flip within the same range
        values = values.max() + values.min() - values
    return Image.fromarray(values, "F")


def dicom_spacing(ds: pydicom.Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """(x, y) mm per pixel and the tag it came from; DICOM lists the *row* spacing (y) first."""
    for keyword in _SPACING_KEYWORDS:
        value = ds.get(keyword)
        if value is None or len(value) != 2:
            continue
        row_mm, column_mm = float(value[0]), float(value[1])
        if all(math.isfinite(v) and v > 0 for v in (row_mm, column_mm)):
            return (column_mm, row_mm), f"DICOM {keyword}"
    return None, None


def _reason(error: Exception) -> str:
    """A decoder's first line without the colon pydicom ends it with before its details."""
    return first_line(error).rstrip(":")
