"""Property-based tests of the readers (hypothesis): whatever bytes a file holds, reading it gives an image or one
clean :class:`InputError` line naming the file, never another exception.

Seeds are real files: a Shenzhen chest PNG and an ISBI cephalogram JPEG from the shared data, re-encodings of a
real crop as BMP, TIFF and 16-bit PNG (their headers differ), and a pydicom-written DICOM of real pixels. Each test
mutates them (random bytes, truncation, header bytes overwritten) and runs the pipeline's per-input step
(:func:`~landmark_edge.runtime.pipeline.prepare`: read, checks, resize to the grid), the step a run relies on.
Example counts are bounded (50 per test) so the file runs in a few seconds; ``READER_EXAMPLES=400`` searches
harder (about two minutes on 2 cores; it passed when this was written).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from factories import make_dicom
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from landmark_edge.anatomy import get_anatomy
from landmark_edge.errors import InputError
from landmark_edge.io.images import read_image
from landmark_edge.runtime.pipeline import Prepared, prepare
from tests.conftest import DATA, require

CHEST = get_anatomy("chest")
SUFFIXES = [".png", ".jpg", ".bmp", ".tif", ".dcm", ""]
FUZZ = settings(max_examples=int(os.environ.get("READER_EXAMPLES", 50)), deadline=None, database=None)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reader-properties")


@pytest.fixture(scope="module")
def seeds(scratch) -> dict[str, bytes]:
    """name (with its suffix) -> bytes of a real file or a re-encoding of real pixels."""
    chest = require(DATA / "chest" / "originals_aspect" / "CHNCXR_0001_0.png").read_bytes()
    ceph = require(DATA / "ISBI2015_ceph" / "raw" / "001.jpg").read_bytes()
    crop = Image.open(io.BytesIO(chest)).convert("L").crop((200, 200, 328, 296))
    encoded = {"chest.png": chest, "ceph.jpg": ceph}
    for name, image, kind in [("crop.bmp", crop, "BMP"), ("crop.tif", crop, "TIFF"),
                              ("crop16.png", Image.fromarray(np.asarray(crop, np.uint16) * 257), "PNG")]:  # fmt: skip
        buffer = io.BytesIO()
        image.save(buffer, format=kind)
        encoded[name] = buffer.getvalue()
    dicom = make_dicom(scratch / "crop.dcm", np.asarray(crop, np.uint16) * 16, spacing=(0.2, 0.2))
    encoded["crop.dcm"] = dicom.read_bytes()
    return encoded


def check_one_clean_outcome(path: Path, data: bytes) -> None:
    """The property: ``prepare`` gives pixels or a failure whose one line names the file; ``read_image`` raises
    nothing but :class:`InputError`."""
    path.write_bytes(data)
    outcome = prepare(path, CHEST)
    if isinstance(outcome, Prepared):
        assert outcome.pixels.shape[:2] == CHEST.grid_hw
        return
    assert outcome.error.startswith(f"{path}: ") and "\n" not in outcome.error, outcome.error
    with pytest.raises(InputError):
        read_image(path)


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(SUFFIXES), dicom_preamble=st.booleans())
def test_random_bytes(scratch, data, suffix, dicom_preamble):
    if dicom_preamble:  # random bytes behind the DICOM magic reach pydicom's parser, not only PIL's
        data = bytes(128) + b"DICM" + data
    check_one_clean_outcome(scratch / f"random{suffix}", data)


@FUZZ
@given(seed=st.sampled_from(["chest.png", "ceph.jpg", "crop.bmp", "crop.tif", "crop16.png", "crop.dcm"]),
       fraction=st.floats(0.0, 1.0))  # fmt: skip
def test_truncated_real_files(scratch, seeds, seed, fraction):
    data = seeds[seed]
    check_one_clean_outcome(scratch / seed, data[: int(len(data) * fraction)])


@FUZZ
@given(seed=st.sampled_from(["chest.png", "crop.bmp", "crop.tif", "crop16.png", "crop.dcm"]),
       mutations=st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), min_size=1, max_size=8))  # fmt: skip
def test_header_mutations_of_real_files(scratch, seeds, seed, mutations):
    """Bytes of the first 512 (PNG IHDR, BMP/TIFF headers and IFD, the DICOM preamble and file meta) overwritten."""
    data = bytearray(seeds[seed])
    for offset, value in mutations:
        data[offset % len(data)] = value
    check_one_clean_outcome(scratch / seed, bytes(data))


def test_seeds_are_read(scratch, seeds):
    """The unmutated seeds are good images: the mutations above start from files that work."""
    for name, data in seeds.items():
        (scratch / name).write_bytes(data)
        assert isinstance(prepare(scratch / name, CHEST), Prepared), name
