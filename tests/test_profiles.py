"""Deployment profiles: the shipped ones load; a typo or bad value is one line naming the file and field."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from landmark_edge.cli import app
from landmark_edge.export.profiles import ProfileError, load_profile, profile_names, with_overrides

SHIPPED = {"jetson-orin-nano-fp16", "jetson-agx-orin-int8", "datacenter-h100-fp16", "cpu-onnxruntime"}


def test_shipped_profiles_load():
    assert SHIPPED <= set(profile_names())
    profiles = {name: load_profile(name) for name in SHIPPED}
    assert profiles["jetson-orin-nano-fp16"].precision == "fp16"
    assert profiles["jetson-agx-orin-int8"].calibration is not None
    assert profiles["datacenter-h100-fp16"].batch.max == 64


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("precison: fp16\n", "precison", "unknown field"),
        ("precision: fp17\n", "precision", "'fp32'"),
        ("batch: {min: 4, opt: 2, max: 8}\n", "batch", "min <= opt <= max"),
        ("batch: {min: 1, max: 8, maxx: 9}\n", "batch.maxx", "unknown field"),
        ("opset: 9\n", "opset", "greater than or equal to 17"),
        ("precision: int8\n", "(profile)", "needs a calibration section"),
        ("decode: bicubic\n", "decode", "argmax"),
    ],
)
def test_bad_profile_is_one_line_naming_file_and_field(tmp_path, text, field, message):
    path = tmp_path / "target.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    line = str(error.value)
    assert "\n" not in line and str(path) in line and f"field '{field}'" in line and message in line


def test_unknown_profile_name_lists_the_shipped_ones():
    with pytest.raises(ProfileError, match="jetson-orin-nano-fp16"):
        load_profile("jetson-orin-nano-fp61")


def test_command_line_overrides_are_validated():
    profile = with_overrides(load_profile("jetson-orin-nano-fp16"), "cli", precision="bf16", batch_max=16)
    assert profile.precision == "bf16" and profile.batch.max == 16 and profile.batch.min == 1
    with pytest.raises(ProfileError, match="batch"):
        with_overrides(profile, "cli", batch_min=32)


def test_cli_reports_a_bad_profile_in_one_line_with_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("workspace_mib: lots\n")
    result = CliRunner().invoke(app, ["build", str(tmp_path / "x.onnx"), "--profile", str(path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "workspace_mib" in result.stderr and str(path) in result.stderr


def test_shipped_profiles_name_no_data_path():
    """The wheel carries the profiles: calibration images are the user's own (--calibration), never a path of
    this repository's data."""
    for name in profile_names():
        profile = load_profile(name)
        for section in (profile.calibration, profile.accuracy_control):  # --calibration, --validation
            assert section is None or section.images is None, name


def test_shipped_int8_profile_asks_for_calibration_images_before_exporting(tiny_weights, tmp_path, monkeypatch):
    def no_export(*args, **kwargs):
        raise AssertionError("exported before checking the calibration images")

    monkeypatch.setattr("landmark_edge.export.onnx.onnx_graph", no_export)
    out = tmp_path / "chest.int8.onnx"
    args = ["export", "-a", "chest", "-w", str(tiny_weights), "--profile", "cpu-onnxruntime-int8", "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "no calibration images: give --calibration" in result.stderr and not out.exists()
