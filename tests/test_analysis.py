"""Cephalometric measurements (landmark_edge.analysis): known answers on hand-made landmark sets, class limits,
the undefined cases, real ISBI annotations against an independent computation, and `infer --measurements`."""

import csv
import io
import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from conftest import DATA, require
from landmark_edge.analysis import MEASUREMENTS, Bands, measure, measure_points
from landmark_edge.analysis.render import COLOURS, measurement_drawer
from landmark_edge.anatomy import HEAD
from landmark_edge.cli import app
from landmark_edge.results import ImageResult, Landmark

SHORT = {
    "S": "sella", "N": "nasion", "Or": "orbitale", "Po": "porion", "A": "subspinale", "B": "supramentale",
    "Pog": "pogonion", "Me": "menton", "Gn": "gnathion", "Go": "gonion", "LIT": "lower incisal incision",
    "UIT": "upper incisal incision", "PNS": "posterior nasal spine", "ANS": "anterior nasal spine",
}  # fmt: skip


def face(**overrides) -> dict[str, tuple[float, float]]:
    """All 19 head landmarks at distinct places (pixels); ``overrides`` by their short names."""
    points = {name: (10.0 * i, 7.0 * i * i) for i, name in enumerate(HEAD.landmark_names)}
    points |= {SHORT[short]: xy for short, xy in overrides.items()}
    return points


def at_angle(origin, degrees, length, reference=(-1.0, 0.0)):
    """The point ``length`` from ``origin`` whose direction makes ``degrees`` with ``reference``, turning
    toward +y (downward in the image)."""
    base = math.atan2(reference[1], reference[0]) - math.radians(degrees)
    return origin[0] + length * math.cos(base), origin[1] - length * math.sin(base)


def measured(points, spacing=(0.1, 0.1), weak=()):
    return {m.name: m for m in measure_points(points, spacing, weak)}


def test_sna_snb_anb_known_angles():
    n = (100.0, 0.0)
    m = measured(face(S=(0.0, 0.0), N=n, A=at_angle(n, 80, 50), B=at_angle(n, 76, 60)))
    assert m["SNA"].value == pytest.approx(80) and m["SNB"].value == pytest.approx(76)
    assert m["ANB"].value == pytest.approx(4) and (m["ANB"].class_, m["ANB"].class_label) == (1, "class I")
    assert (m["SNA"].class_, m["SNB"].class_) == (1, 1)
    right = measured(face(S=(0.0, 0.0), N=n, A=(100.0, 50.0), B=(50.0, 50.0)))
    assert right["SNA"].value == pytest.approx(90) and right["SNB"].value == pytest.approx(45)
    assert right["ANB"].value == pytest.approx(45) and right["ANB"].class_ == 2
    assert right["SNA"].unit == "deg" and right["SNA"].landmarks == ["sella", "nasion", "subspinale"]


def test_fma_fhi_and_mw_known_values():
    m = measured(face(S=(0.0, 0.0), N=(100.0, 0.0), Go=(20.0, 80.0), Gn=(70.0, 130.0), Me=(124.0, 32.0)))
    assert m["FMA"].value == pytest.approx(45) and m["FMA"].class_ == 2
    square = measured(face(S=(0.0, 0.0), N=(100.0, 0.0), Go=(20.0, 80.0), Gn=(20.0, 130.0)))
    assert square["FMA"].value == pytest.approx(90)
    fhi = measured(face(S=(0.0, 0.0), Go=(18.0, 24.0), N=(100.0, 0.0), Me=(124.0, 32.0)))["FHI"]  # 30 / 40
    assert fhi.value == pytest.approx(0.75) and fhi.class_ == 1 and fhi.unit == "ratio"
    mw = {
        (130.0, 140.0): (5.0, 4), (70.0, 140.0): (-5.0, 3), (100.0, 100.0): (0.0, 2), (130.0, 100.0): (3.0, 1),
        (110.0, 100.0): (1.0, 3),
    }  # fmt: skip
    for upper, (value, class_) in mw.items():
        result = measured(face(LIT=(100.0, 100.0), UIT=upper))["MW"]
        assert (result.value, result.class_, result.unit) == (pytest.approx(value), class_, "mm")


def test_odi_and_apdi_signs():
    """ODI: AB perpendicular to the mandibular plane (90) plus the palatal plane's tilt to Frankfort, positive
    when ANS is lower than PNS. APDI: facial plane perpendicular to FH (90), minus an AB plane whose B lies behind
    A (class II direction)."""
    flat = dict(Po=(0.0, 10.0), Or=(80.0, 10.0), A=(100.0, 40.0), B=(100.0, 60.0), Go=(20.0, 80.0), Me=(120.0, 80.0),
                N=(100.0, 0.0), Pog=(100.0, 90.0), PNS=(30.0, 30.0), ANS=(80.0, 30.0))  # fmt: skip
    m = measured(face(**flat))
    assert m["ODI"].value == pytest.approx(90) and m["APDI"].value == pytest.approx(90)
    down = (30 + 50 * math.cos(math.radians(5)), 30 + 50 * math.sin(math.radians(5)))
    up = (down[0], 60 - down[1])
    assert measured(face(**flat | {"ANS": down}))["ODI"].value == pytest.approx(95)
    assert measured(face(**flat | {"ANS": up}))["ODI"].value == pytest.approx(85)
    assert measured(face(**flat | {"ANS": down}))["APDI"].value == pytest.approx(95)
    behind = (100.0 - 20 * math.tan(math.radians(15)), 60.0)
    apdi = measured(face(**flat | {"B": behind}))["APDI"]
    assert apdi.value == pytest.approx(75) and (apdi.class_, apdi.class_label) == (2, "class II tendency")


# The sources' normal ranges and the class numbers either side (module docstring of analysis/cephalometry.py).
RANGES = {
    "ANB": (3.2, 5.7, 3, 2), "SNB": (74.6, 78.7, 2, 3), "SNA": (79.4, 83.2, 3, 2), "ODI": (68.4, 80.5, 3, 2),
    "APDI": (77.6, 85.2, 2, 3), "FHI": (0.65, 0.75, 3, 2), "FMA": (26.8, 31.4, 3, 2),
}  # fmt: skip


@pytest.mark.parametrize("name", list(RANGES))
def test_class_limits_belong_to_the_normal_range(name):
    classify = next(d.classify for d in MEASUREMENTS if d.name == name)
    low, high, below, above = RANGES[name]
    assert isinstance(classify, Bands)
    assert [classify(v)[0] for v in (low, high, (low + high) / 2)] == [1, 1, 1]
    assert classify(low - 1e-9)[0] == below and classify(high + 1e-9)[0] == above


def test_mw_class_limits():
    classify = next(d.classify for d in MEASUREMENTS if d.name == "MW")
    cases = {2.0: 1, 4.5: 1, 4.5 + 1e-9: 4, 0.0: 2, -1e-9: 3, 1e-9: 3, 2.0 - 1e-9: 3}
    assert {value: classify(value)[0] for value in cases} == cases
    assert classify(-1.0)[1] == "anterior cross bite" and "type 3" in classify(1.0)[1]


def test_nan_landmark_undefines_only_what_uses_it():
    m = measured(face(S=(math.nan, 0.0)))
    for name in ("ANB", "SNB", "SNA", "FHI", "FMA"):
        assert m[name].value is None and m[name].class_ is None and "sella" in m[name].reason
    assert all(m[name].value is not None and m[name].reason is None for name in ("ODI", "APDI", "MW"))
    json.dumps([x.to_dict() for x in m.values()], allow_nan=False)  # valid JSON: no NaN literal


def test_coincident_points_have_no_direction_but_collinear_points_do():
    same = measured(face(S=(100.0, 0.0), N=(100.0, 0.0)))
    assert same["SNA"].value is None and "nasion and sella coincide" in same["SNA"].reason
    assert same["FMA"].value is None and same["ANB"].value is None
    no_height = measured(face(N=(50.0, 50.0), Me=(50.0, 50.0)))["FHI"]
    assert no_height.value is None and "nasion and menton coincide" in no_height.reason
    beyond = measured(face(S=(0.0, 0.0), N=(100.0, 0.0), A=(150.0, 0.0)))["SNA"]
    between = measured(face(S=(0.0, 0.0), N=(100.0, 0.0), A=(50.0, 0.0)))["SNA"]
    assert beyond.value == pytest.approx(180) and between.value == pytest.approx(0)


def test_wrong_anatomy_gives_a_reason_per_measurement():
    chest = {f"L{i}": (float(i), float(i * i)) for i in range(1, 7)}
    results = measure_points(chest, None)
    assert [m.name for m in results] == ["ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW"]
    assert all(m.value is None and "no landmark named" in m.reason for m in results)


def test_no_spacing_no_distance_and_spacing_scales_axes():
    points = face(S=(0.0, 0.0), N=(100.0, 0.0), A=(50.0, 50.0))
    pixels, mm = measured(points, None), measured(points, (0.1, 0.1))
    assert pixels["MW"].value is None and "spacing" in pixels["MW"].reason
    assert pixels["SNA"].value == pytest.approx(45) == mm["SNA"].value
    assert pixels["FHI"].value == pytest.approx(mm["FHI"].value)
    stretched = measured(points, (0.1, 0.2))["SNA"]  # N->A = (-5, 10) mm against N->S = (-10, 0) mm
    assert stretched.value == pytest.approx(math.degrees(math.atan2(10, 5)))


def test_low_confidence_landmarks_mark_the_measurements_using_them():
    names = HEAD.landmark_names
    points = face()
    landmarks = [
        Landmark(i + 1, name, *points[name], None, None, 0.05 if name == "sella" else 0.9, 0.0, 0.0)
        for i, name in enumerate(names)
    ]  # fmt: skip
    result = ImageResult("x.png", "head", 400, 400, (0.1, 0.1), "head default", "subpixel", landmarks)
    m = {x.name: x for x in measure(result, min_confidence=0.1)}
    assert m["SNA"].low_confidence and m["SNA"].weak_landmarks == ["sella"]
    assert not m["MW"].low_confidence and m["MW"].weak_landmarks == []
    assert not any(x.low_confidence for x in measure(result))  # no threshold, no marks
    result.measurements = list(m.values())
    assert ImageResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result  # --out-dir round trip
    assert "measurements" not in ImageResult.from_dict(result.to_dict() | {"measurements": None}).to_dict()
    assert result.to_dict()["measurements"][0]["class"] == m["ANB"].class_


def test_overlay_draws_each_defined_measurement_line_once():
    n = (100.0, 20.0)
    points = face(S=(0.0, 20.0), N=n, A=(100.0, 70.0), B=(60.0, 70.0))
    names = HEAD.landmark_names
    landmarks = [Landmark(i + 1, name, *points[name], None, None, 0.9, 0.0, 0.0) for i, name in enumerate(names)]
    result = ImageResult("x.png", "head", 400, 4000, (0.1, 0.1), "head default", "subpixel", landmarks)
    result.measurements = measure(result)
    picture = Image.new("RGB", (400, 4000))
    draw = ImageDraw.Draw(picture)
    measurement_drawer(result)(draw, 1.0, ImageFont.load_default(size=10))
    assert picture.getpixel((100, 45)) == COLOURS[0]  # N-A: an ANB line, drawn in ANB's colour
    assert picture.getpixel((50, 20)) == COLOURS[1]  # S-N: first used by SNB
    assert picture.getpixel((100, 400)) == (0, 0, 0)  # nothing elsewhere


# --- real annotations against an independent computation --------------------------------------------------


def challenge_style(p: dict[str, np.ndarray]) -> dict[str, float]:
    """The eight values written out plainly, the challenge's way (arccos of normalised dot products and
    cross-product signs), in mm at 0.1 mm/px."""

    def vec(a, b):
        return p[b] - p[a]

    def theta(u, v):
        return math.degrees(math.acos(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))))

    def cross(u, v):
        return u[0] * v[1] - u[1] * v[0]

    sna = theta(vec("N", "S"), vec("N", "A"))
    snb = theta(vec("N", "S"), vec("N", "B"))
    fh, pp = vec("Po", "Or"), vec("PNS", "ANS")
    palatal = theta(fh, pp) * (-1 if cross(fh, pp) < 0 else 1)
    facial, ab = vec("N", "Pog"), vec("A", "B")
    mw = np.linalg.norm(p["UIT"] - p["LIT"]) * (-1 if p["UIT"][0] < p["LIT"][0] else 1)
    return {
        "ANB": sna - snb, "SNB": snb, "SNA": sna,
        "ODI": theta(vec("Me", "Go"), vec("B", "A")) + palatal,
        "APDI": theta(vec("Or", "Po"), facial) + theta(facial, ab) * (-1 if cross(facial, ab) > 0 else 1) + palatal,
        "FHI": np.linalg.norm(vec("S", "Go")) / np.linalg.norm(vec("N", "Me")),
        "FMA": theta(vec("S", "N"), vec("Go", "Gn")), "MW": mw,
    }  # fmt: skip


@pytest.mark.parametrize("sample", ["151", "307"])
def test_real_annotations_match_an_independent_computation(sample):
    root = require(DATA / "ISBI2015_ceph")
    senior, junior = (np.loadtxt(root / f"400_{who}" / f"{sample}.txt", delimiter=",") for who in ("senior", "junior"))
    mean = (senior + junior) / 2
    named = dict(zip(HEAD.landmark_names, mean, strict=True))
    expected = challenge_style({short: named[name] * 0.1 for short, name in SHORT.items()})
    got = measured(named, (0.1, 0.1))
    for name, value in expected.items():
        assert got[name].value == pytest.approx(value, abs=1e-9), name
        assert got[name].reason is None
    assert 60 < got["SNA"].value < 100 and 0.5 < got["FHI"].value < 0.9  # a real face, not a degenerate one


# --- infer --measurements ------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture()
def scan(tmp_path):
    path = tmp_path / "ceph.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (240, 200), dtype=np.uint8), "L").save(path)
    return path


def test_infer_measurements_in_every_format(scan, tiny_weights, tmp_path):
    base = ["infer", str(scan), "-a", "head", "-w", str(tiny_weights), "--measurements", "--min-confidence", "1"]
    result = runner.invoke(app, base + ["-f", "csv", "--out-dir", str(tmp_path / "json"), "--overlay", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 19 and {"ANB", "ANB_class", "MW", "MW_class"} <= set(rows[0])
    measurements = json.loads((tmp_path / "json" / "ceph.png.json").read_text())["measurements"]  # = JSON/JSONL
    assert [m["name"] for m in measurements] == [d.name for d in MEASUREMENTS]
    for m in measurements:
        assert set(m) == {"name", "value", "unit", "class", "class_label", "landmarks", "low_confidence",
                          "weak_landmarks", "reason"}  # fmt: skip
        assert (m["value"] is None) == (m["reason"] is not None) and m["low_confidence"]  # every peak < 1
        assert rows[0][m["name"]] == ("" if m["value"] is None else str(m["value"]))
    assert Image.open(tmp_path / "ceph.png.png").size == (200, 240)
    table = runner.invoke(app, base + ["-f", "table"]).stdout
    assert "cephalometric measurements" in table and "APDI" in table and "low confidence" in table


def test_infer_measurements_refused_for_other_anatomies(scan, tiny_weights):
    result = runner.invoke(app, ["infer", str(scan), "-a", "chest", "-w", str(tiny_weights), "--measurements"])
    assert result.exit_code == 2 and "head landmarks" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_library_session_measures_before_the_overlay_sink_sees_the_result(scan, tiny_weights):
    """The measurements are part of the finished result, for library callers as for `infer`; a chest session
    cannot be asked for them."""
    from landmark_edge.anatomy import CHEST
    from landmark_edge.runtime.eager import TorchBackend
    from landmark_edge.runtime.pipeline import InferenceSession
    from landmark_edge.weights import load_weights

    seen = []
    backend = TorchBackend(load_weights(tiny_weights, "head")[0], HEAD)
    session = InferenceSession(HEAD, backend, min_confidence=1, measurements=True,
                               overlay_sink=lambda xray, result: seen.append(list(result.measurements)))  # fmt: skip
    (inference,) = session.run([scan])
    assert [m.name for m in inference.result.measurements] == [d.name for d in MEASUREMENTS]
    assert seen == [inference.result.measurements] and all(m.low_confidence for m in seen[0])
    assert inference.result.measurements == measure(inference.result, 1)
    with pytest.raises(ValueError, match="need the head landmarks, not chest's"):
        InferenceSession(CHEST, backend, measurements=True)
