"""Reading inputs: image modes (16-bit, RGBA, palette, EXIF), DICOM intensity/orientation/spacing, expansion."""

import io
import json

import numpy as np
import pydicom
import pytest
from factories import gradient, make_dicom, save
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless
from typer.testing import CliRunner

from landmark_edge.anatomy import get_anatomy
from landmark_edge.cli import app
from landmark_edge.io.images import read_image, resolve_spacing
from landmark_edge.io.inputs import expand_inputs
from landmark_edge.transforms import grid_pixels, zscore

GRID = (48, 40)


def pixels(path) -> np.ndarray:
    return np.asarray(read_image(path).image, dtype=np.float64)


# --- images -----------------------------------------------------------------------------------------------------


def test_sixteen_bit_keeps_its_bits_and_gives_the_8_bit_model_input(tmp_path):
    eight = gradient()
    path16 = save(tmp_path / "g16.png", Image.fromarray(eight.astype(np.uint16) * 257))
    path8 = save(tmp_path / "g8.png", Image.fromarray(eight))
    xray = read_image(path16)
    assert xray.image.mode == "I;16" and np.asarray(xray.image).max() == 255 * 257
    model16 = zscore(grid_pixels(xray.image, GRID))
    model8 = zscore(grid_pixels(read_image(path8).image, GRID))
    np.testing.assert_allclose(model16, model8, atol=0.02)  # z-score: bit depth does not matter


def test_big_endian_sixteen_bit_tiff_is_widened(tmp_path):
    values = gradient(maximum=60000, dtype=np.uint16)
    path = save(tmp_path / "be.tif", Image.frombytes("I;16B", values.shape[::-1], values.astype(">u2").tobytes()))
    xray = read_image(path)
    assert xray.image.mode == "I"
    np.testing.assert_array_equal(np.asarray(xray.image), values)
    assert grid_pixels(xray.image, GRID).shape == (40, 48)


def test_rgba_and_palette_use_channel_0_like_the_reference(tmp_path):
    grey = gradient()
    reference = grid_pixels(Image.fromarray(grey), GRID)
    rgba = np.dstack([grey, np.zeros_like(grey), 255 - grey, np.full_like(grey, 90)])
    shuffled = np.random.default_rng(0).permutation(256)  # palette index i shows grey level shuffled[i]
    palette = Image.fromarray(np.argsort(shuffled)[grey].astype(np.uint8), "P")
    palette.putpalette(np.repeat(shuffled, 3).astype(np.uint8).tobytes())
    for name, image in [("rgba.png", Image.fromarray(rgba, "RGBA")), ("p.png", palette)]:
        np.testing.assert_array_equal(grid_pixels(read_image(save(tmp_path / name, image)).image, GRID), reference)


def test_exif_orientation_is_applied(tmp_path):
    upright = gradient(60, 90)  # what a viewer shows: 90 wide, 60 high
    stored = Image.fromarray(np.rot90(upright))  # stored on its side; orientation 6 = rotate 90 deg clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    xray = read_image(save(tmp_path / "rotated.png", stored, exif=exif))
    assert xray.size == (90, 60)
    np.testing.assert_array_equal(np.asarray(xray.image), upright)
    exif[0x0112] = 9  # not a valid orientation: left as stored
    assert read_image(save(tmp_path / "odd.png", stored, exif=exif)).size == (60, 90)


def test_bilevel_and_cmyk_become_intensities(tmp_path):
    bilevel = read_image(save(tmp_path / "b.png", Image.fromarray(gradient() > 100)))
    assert bilevel.image.mode == "L" and set(np.unique(np.asarray(bilevel.image))) == {0, 255}
    cmyk = read_image(save(tmp_path / "c.jpg", Image.fromarray(gradient()).convert("CMYK")))
    assert cmyk.image.mode == "RGB"


# --- DICOM -------------------------------------------------------------------------------------------------------


def test_dicom_monochrome2_16_bit_orientation_and_spacing(tmp_path):
    stored = gradient(40, 60, 4095, np.uint16)
    xray = read_image(make_dicom(tmp_path / "m2.dcm", stored, spacing=(0.2, 0.1)))
    assert xray.size == (60, 40)  # (width = Columns, height = Rows)
    np.testing.assert_array_equal(np.asarray(xray.image), stored)  # row 0 is the top, column 0 the left
    assert xray.spacing_mm == (0.1, 0.2) and xray.spacing_source == "DICOM PixelSpacing"  # DICOM: rows first


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = gradient(dtype=np.uint8)
    values = pixels(make_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1"))
    np.testing.assert_array_equal(values, 255 - stored.astype(np.float64))  # min + max - stored, range 0..255


def test_dicom_rescale_and_window(tmp_path):
    stored = np.arange(2000, dtype=np.uint16).reshape(40, 50)
    rescaled = pixels(make_dicom(tmp_path / "r.dcm", stored, RescaleSlope=2, RescaleIntercept=-100))
    np.testing.assert_array_equal(rescaled, stored * 2.0 - 100)
    # LINEAR window (PS3.3 C.11.2.1.2): x <= c - 0.5 - (w-1)/2 -> min, x > c - 0.5 + (w-1)/2 -> max, and
    # x = c - 0.5 maps to the middle of the output range (0..65535 for 16 stored bits).
    windowed = pixels(make_dicom(tmp_path / "w.dcm", stored, WindowCenter="1000.5", WindowWidth="401"))
    assert windowed[stored <= 800].max() == 0 and windowed[stored > 1200].min() == 65535
    assert windowed[stored == 1000][0] == pytest.approx(65535 / 2)


def test_dicom_spacing_tags_and_precedence(tmp_path):
    stored = gradient(dtype=np.uint16)
    head = get_anatomy("head")
    imager = read_image(make_dicom(tmp_path / "i.dcm", stored, spacing=(0.15, 0.12), spacing_tag="ImagerPixelSpacing"))
    assert imager.spacing_mm == (0.12, 0.15) and imager.spacing_source == "DICOM ImagerPixelSpacing"
    both = make_dicom(tmp_path / "b.dcm", stored, spacing=(0.3, 0.3), ImagerPixelSpacing=["0.5", "0.5"])
    assert read_image(both).spacing_source == "DICOM PixelSpacing"
    untagged = read_image(make_dicom(tmp_path / "n.dcm", stored))
    assert resolve_spacing(untagged, head) == ((0.1, 0.1), "head default")
    assert resolve_spacing(imager, head) == ((0.12, 0.15), "DICOM ImagerPixelSpacing")
    assert resolve_spacing(imager, head, 0.5) == ((0.5, 0.5), "--spacing")
    invalid = read_image(make_dicom(tmp_path / "z.dcm", stored, spacing=(0.0, 0.1)))
    assert invalid.spacing_mm is None


def test_dicom_without_preamble_and_compressed(tmp_path):
    stored = gradient(dtype=np.uint16, maximum=3000)
    bare = make_dicom(tmp_path / "bare.dcm", stored, preamble=False)
    np.testing.assert_array_equal(pixels(bare), stored)
    ds = pydicom.dcmread(make_dicom(tmp_path / "rle.dcm", stored))
    ds.compress(RLELossless)  # pydicom's own encoder and decoder
    ds.save_as(tmp_path / "rle.dcm")
    np.testing.assert_array_equal(pixels(tmp_path / "rle.dcm"), stored)
    jpeg = io.BytesIO()
    Image.fromarray(gradient()).save(jpeg, format="JPEG", quality=90)
    ds = pydicom.dcmread(make_dicom(tmp_path / "jpeg.dcm", gradient()))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit  # decoded through Pillow
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpeg.dcm")
    np.testing.assert_array_equal(pixels(tmp_path / "jpeg.dcm"), np.asarray(Image.open(jpeg), dtype=np.float64))


def test_cli_reports_dicom_millimetres_and_their_source(tmp_path, tiny_weights):
    path = make_dicom(tmp_path / "ceph.dcm", gradient(120, 100, 4095, np.uint16), "MONOCHROME1", spacing=(0.2, 0.1))
    for extra, spacing, source in [([], [0.1, 0.2], "DICOM PixelSpacing"), (["--spacing", "0.5"], [0.5, 0.5],
                                                                              "--spacing")]:
        result = CliRunner().invoke(app, ["infer", str(path), "-a", "head", "-w", str(tiny_weights), "-f", "json",
                                          *extra])
        assert result.exit_code == 0, result.output
        (outcome,) = json.loads(result.stdout)
        assert outcome["spacing_mm"] == spacing and outcome["spacing_source"] == source
        assert (outcome["width"], outcome["height"]) == (100, 120)
        for lm in outcome["landmarks"]:
            assert lm["x_mm"] == pytest.approx(lm["x"] * spacing[0], abs=2e-3)
            assert lm["y_mm"] == pytest.approx(lm["y"] * spacing[1], abs=2e-3)


# --- expansion ---------------------------------------------------------------------------------------------------


def test_folders_recurse_sorted_skip_hidden_and_non_images(tmp_path):
    image = Image.fromarray(gradient())
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / ".cache").mkdir()
    expected = [save(tmp_path / "a.png", image), make_dicom(tmp_path / "b" / "IM1", gradient()),
                save(tmp_path / "b" / "c" / "d.JPG", image), save(tmp_path / "z.tiff", image)]
    save(tmp_path / ".a.png.123.tmp", image, format="PNG")
    save(tmp_path / ".cache" / "x.png", image)
    (tmp_path / "b" / "labels.txt").write_text("1,2")
    (tmp_path / "b" / "README").write_text("no preamble")
    inputs = expand_inputs([tmp_path])
    assert inputs.files == expected and inputs.skipped == 2 and not inputs.failures
    again = expand_inputs([tmp_path / "a.png", f"{tmp_path}/**/*.png", tmp_path / "b"])
    assert again.files == [expected[0], expected[1], expected[2]]  # each file once, first mention wins
