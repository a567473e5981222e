"""Test inputs made in code: DICOM files (pydicom), images of every mode, and the bad-input corpus.

Each bad input is a :class:`BadInput`: how to make it in a folder, and the words its one-line error must hold.
Nothing binary is committed: every file is generated, so each case says exactly what is wrong with it.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def gradient(height: int = 80, width: int = 100, maximum: int = 255, dtype=np.uint8) -> np.ndarray:
    """A non-constant image whose value at (row, column) is known: rises left to right and top to bottom."""
    rows, columns = np.mgrid[0:height, 0:width]
    return ((rows + 2 * columns) * maximum // (height - 1 + 2 * (width - 1))).astype(dtype)


def make_dicom(
    path: Path,
    pixels: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    *,
    spacing: tuple[float, float] | None = None,
    spacing_tag: str = "PixelSpacing",
    preamble: bool = True,
    **elements,
) -> Path:
    """Write a single-frame DX file; ``spacing`` is DICOM's order, (row mm, column mm). ``pixels=None``: no pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.BitsAllocated = pixels.dtype.itemsize * 8
        if pixels.dtype.kind == "f":
            ds.FloatPixelData = pixels.tobytes()
        else:
            ds.BitsStored = ds.BitsAllocated
            ds.HighBit = ds.BitsStored - 1
            ds.PixelRepresentation = int(pixels.dtype.kind == "i")
            ds.PixelData = pixels.tobytes()
    if spacing is not None:
        setattr(ds, spacing_tag, [f"{v:g}" for v in spacing])
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=preamble)
    return path


def save(path: Path, image: Image.Image, **params) -> Path:
    image.save(path, **params)
    return path


def png_bytes(width: int, height: int) -> bytes:
    """A PNG that is only a header (IHDR) claiming ``width`` x ``height`` grey pixels, one empty IDAT and IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming ``width`` x ``height`` with no pixel data behind it."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + width * height * 3, 0, 0, 54) + info


def _good_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient()).save(buffer, format="PNG")
    return buffer.getvalue()


def _good_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient()).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write(name: str, data: bytes | str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    return build


def _image(name: str, image: Callable[[], Image.Image], **params) -> Callable[[Path], Path]:
    return lambda folder: save(folder / name, image(), **params)


def _dicom(name: str, pixels: Callable[[], np.ndarray | None], **kwargs) -> Callable[[Path], Path]:
    return lambda folder: make_dicom(folder / name, pixels(), **kwargs)


def _broken_png_crc(folder: Path) -> Path:
    data = bytearray(_good_png())
    data[29] ^= 0xFF  # inside IHDR's CRC
    return _write("bad_crc.png", bytes(data))(folder)


def _truncated_dicom(folder: Path) -> Path:
    path = make_dicom(folder / "truncated_pixels.dcm", gradient(dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-4000])
    return path


def _undecodable_dicom(folder: Path) -> Path:
    path = make_dicom(folder / "jpegls.dcm", gradient(dtype=np.uint16))
    from pydicom import dcmread

    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not really JPEG-LS"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    return path


def _multiframe_dicom(folder: Path) -> Path:
    frames = np.stack([gradient(dtype=np.uint16)] * 2)
    return make_dicom(folder / "multiframe.dcm", frames, NumberOfFrames=2)


def _dicom_bomb(folder: Path) -> Path:
    path = make_dicom(folder / "bomb.dcm", gradient(dtype=np.uint16))
    from pydicom import dcmread

    ds = dcmread(path)
    ds.Rows = ds.Columns = 30000
    ds.save_as(path)
    return path


def _broken_symlink(folder: Path) -> Path:
    path = folder / "dangling.png"
    path.symlink_to(folder / "nowhere.png")
    return path


def _empty_folder(folder: Path) -> Path:
    path = folder / "empty_folder"
    path.mkdir()
    return path


def _text_only_folder(folder: Path) -> Path:
    path = folder / "labels_only"
    path.mkdir()
    (path / "001.txt").write_text("1,2\n")
    return path


def _nan(kind: str) -> Callable[[], np.ndarray]:
    def pixels() -> np.ndarray:
        values = gradient().astype(np.float32)
        values[10, 10] = {"nan": np.nan, "inf": np.inf}[kind]
        return values

    return pixels


@dataclass(frozen=True)
class BadInput:
    name: str
    build: Callable[[Path], Path]  # makes the input inside a folder; returns what to pass on the command line
    message: str  # the one-line error must contain "<path>: <message>"


UNREADABLE_FOLDER = "unreadable_folder"  # made by the test (permissions need the test's monkeypatch as root)

BAD_INPUTS: list[BadInput] = [
    BadInput("empty PNG", _write("empty.png", b""), "empty file (0 bytes)"),
    BadInput("empty DICOM", _write("empty.dcm", b""), "empty file (0 bytes)"),
    BadInput("truncated PNG", _write("truncated.png", _good_png()[:120]), "truncated or corrupt image"),
    BadInput("truncated JPEG", _write("truncated.jpg", _good_jpeg()[:400]), "truncated or corrupt image"),
    BadInput("PNG with a broken CRC", _broken_png_crc, "not a readable image"),
    BadInput("text named .png", _write("notes.png", "hello"), "not a readable image (PNG, JPEG, BMP, TIFF) or DICOM"),
    BadInput("HTML named .jpg", _write("page.jpg", "<html><body>404</body></html>"), "not a readable image"),
    BadInput("text file", _write("labels.txt", "835,996\n"), "not a readable image"),
    BadInput("random bytes named .bmp", _write("noise.bmp", bytes(range(256)) * 4), "not a readable image"),
    BadInput("text named .dcm", _write("report.dcm", "not dicom at all"), "DICOM"),
    BadInput("1x1 image", _image("dot.png", lambda: Image.new("L", (1, 1), 7)), "image is 1x1 px, smaller than 32"),
    BadInput("1x500 image", _image("line.png", lambda: Image.fromarray(gradient(500, 1))), "smaller than 32 px"),
    BadInput("PNG header 30000x30000", _write("bomb.png", png_bytes(30000, 30000)), "decompression-bomb"),
    BadInput("PNG header 9000x9000", _write("bomb9k.png", png_bytes(9000, 9000)), "header claims 9000x9000 px"),
    BadInput("BMP header 30000x30000", _write("bomb.bmp", bmp_header(30000, 30000)), "decompression-bomb"),
    BadInput("float TIFF with NaN", _image("nan.tif", lambda: Image.fromarray(_nan("nan")(), "F")), "NaN or infinity"),
    BadInput("float TIFF with inf", _image("inf.tif", lambda: Image.fromarray(_nan("inf")(), "F")), "NaN or infinity"),
    BadInput("constant 8-bit", _image("flat.png", lambda: Image.new("L", (64, 64), 128)), "constant image"),
    BadInput("constant RGB", _image("flat_rgb.png", lambda: Image.new("RGB", (64, 64), (9, 9, 9))), "constant image"),
    BadInput("constant 16-bit", _image("flat16.png", lambda: Image.new("I;16", (64, 64), 4000)), "constant image"),
    BadInput("constant float", _image("flat.tif", lambda: Image.new("F", (64, 64), 0.5)), "constant image"),
    BadInput("DICOM without pixel data", _dicom("nopixels.dcm", lambda: None), "DICOM file has no pixel data"),
    BadInput("DICOM pixel data cut short", _truncated_dicom, "DICOM pixel data truncated or inconsistent"),
    BadInput("DICOM float pixels with NaN", _dicom("nan.dcm", _nan("nan")), "NaN or infinity"),
    BadInput("DICOM multi-frame", _multiframe_dicom, "multi-frame DICOM (2 frames)"),
    BadInput("DICOM JPEG-LS without decoder", _undecodable_dicom, "cannot decode DICOM transfer syntax"),
    BadInput("DICOM with Rows 0", _dicom("rows0.dcm", lambda: gradient(dtype=np.uint16), Rows=0),
             "DICOM header gives no image size"),
    BadInput("DICOM header 30000x30000", _dicom_bomb, "header claims 30000x30000 px"),
    BadInput("DICOM palette colour", _dicom("palette.dcm", gradient, photometric="PALETTE COLOR"),
             "photometric interpretation PALETTE COLOR is not supported"),
    BadInput("DICOM constant", _dicom("flat.dcm", lambda: np.full((64, 64), 700, np.uint16)), "constant image"),
    BadInput("dangling symlink", _broken_symlink, "file not found"),
    BadInput("missing file", lambda folder: folder / "missing.png", "file not found"),
    BadInput("glob matching nothing", lambda folder: Path(f"{folder}/nothing_*.png"), "no files match this pattern"),
    BadInput("empty folder", _empty_folder, "folder holds no image or DICOM files"),
    BadInput("folder without images", _text_only_folder, "folder holds no image or DICOM files"),
]
