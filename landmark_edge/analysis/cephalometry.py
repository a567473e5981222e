"""The eight ISBI 2015 cephalometric measurements and their classes, each defined once from named landmarks.

An orthodontist reads angles and distances from the 19 landmarks, not the landmarks themselves. The ISBI 2015
cephalometric challenge defined eight such measurements on exactly this landmark set, each with a normal range
and the classes either side of it (skeletal class, jaw position, bite depth, face height, overjet).

Sources, and how far each was checked:

* Wang C.-W. et al., "A benchmark for comparison of dental radiography analysis algorithms", Medical Image
  Analysis 31 (2016) 63-76, doi:10.1016/j.media.2016.02.004 (PubMed 26974042), and the challenge page it names,
  http://www-o.ntust.edu.tw/~cweiwang/ISBI2015/: the eight measurements, their landmarks and class ranges. The
  paper's table itself was out of this project's reach (only its abstract was); it is cited as the public code
  below quotes it, definition by definition.
* The challenge's classification script as public code carries it (two copies read: LucasL-3/Cephalometric-AI
  ``yolo-webapp/analysis.py`` and a stand-alone ``Angle.py``): vector directions, the cross-product signs of
  the ODI and APDI terms, every range, the class numbering (type 1 = normal) and the MW rule, all followed here.
* A public report notebook that draws each measurement and quotes the paper's wording ("FMA: the angle between
  the line from sella to nasion and the line from gonion to gnathion"; "MW = sqrt((x_L12 - x_L11)^2 +
  (y_L12 - y_L11)^2), if x_L12 > x_L11 a positive MW; otherwise a negative MW"; FHI = |L1-L10| / |L2-L8|):
  the definitions agree with the script's. It runs that script for its values, so its ranges are not a
  second source.
* Independent of the challenge, the norms its ODI and APDI ranges are built from, as orthodontic code states
  them: ODI 74.5 +- 6.07 deg (Kim 1974) and APDI 81.4 +- 3.8 deg (Kim & Vietas 1978), i.e. 68.4-80.5 (the
  challenge rounds 80.57 down) and 77.6-85.2.

Conventions: points are in the image's axes (x = column, grows toward the face, y = row, grows down), y
rescaled by the spacings' ratio when the pixel spacing is known (so angles and the FHI ratio are right for
non-square pixels too; without a spacing they are taken on square pixels, and MW, a distance, is not given).
Angles between two directions are in [0, 180] degrees, as the challenge's ``acos`` of the normalised dot product;
signed terms take the sign of the 2-D cross product ``u.x * v.y - u.y * v.x`` in these axes. Normal ranges
include their limits (the challenge's classifier tests ``< low`` and ``> high``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from landmark_edge.anatomy import HEAD
from landmark_edge.results import ImageResult, Measurement

Points = Mapping[str, np.ndarray]
MIN_LENGTH = 1e-6  # mm (or px): two landmarks closer than this are one point, and a line through them has no direction


class Undefined(ValueError):
    """A measurement without a value on these points; the message says why (it becomes the result's reason)."""


@dataclass(frozen=True)
class Bands:
    """A normal range [low, high], limits included, and the class on either side of it."""

    low: float
    high: float
    normal: str
    below: tuple[int, str]
    above: tuple[int, str]

    def __call__(self, value: float) -> tuple[int, str]:
        if value < self.low:
            return self.below
        if value > self.high:
            return self.above
        return 1, self.normal


@dataclass(frozen=True)
class Definition:
    """One measurement: what it is, from which landmarks, how it is computed and classified."""

    name: str
    formula: str
    unit: str  # "deg", "ratio", or "mm": computed in x-pixel units and scaled; no spacing, no value
    lines: tuple[tuple[str, str], ...]  # the segments it is read from (an overlay draws them); registry names
    compute: Callable[[Points], float]
    classify: Callable[[float], tuple[int, str]]  # (class number, label); a "mm" value is classified in mm
    also: tuple[str, ...] = ()  # landmarks the value depends on beyond the lines' ends (ANB's sign: sella)

    @property
    def landmarks(self) -> tuple[str, ...]:
        """Every landmark the value depends on, each once, in the order the definition names them."""
        return tuple(dict.fromkeys(self.also + tuple(name for line in self.lines for name in line)))


def direction(points: Points, start: str, end: str) -> np.ndarray:
    """The vector from landmark ``start`` to ``end``; a line through one point has no direction."""
    vector = points[end] - points[start]
    if not math.hypot(*vector) > MIN_LENGTH:
        raise Undefined(f"{start} and {end} coincide: the line through them has no direction")
    return vector


def cross(u: np.ndarray, v: np.ndarray) -> float:
    return float(u[0] * v[1] - u[1] * v[0])


def angle(u: np.ndarray, v: np.ndarray) -> float:
    """The angle between two directions in degrees, [0, 180] (atan2 keeps it exact near 0 and 180)."""
    return math.degrees(math.atan2(abs(cross(u, v)), float(np.dot(u, v))))


def _sna(p: Points) -> float:
    return angle(direction(p, "nasion", "sella"), direction(p, "nasion", "subspinale"))


def _snb(p: Points) -> float:
    return angle(direction(p, "nasion", "sella"), direction(p, "nasion", "supramentale"))


def _anb(p: Points) -> float:
    return _sna(p) - _snb(p)


def _palatal_to_frankfort(p: Points) -> float:
    """PNS->ANS against Po->Or; negative when the cross product is (the challenge's sign for both indicators)."""
    frankfort = direction(p, "porion", "orbitale")
    palatal = direction(p, "posterior nasal spine", "anterior nasal spine")
    value = angle(frankfort, palatal)
    return -value if cross(frankfort, palatal) < 0 else value


def _odi(p: Points) -> float:
    ab_to_mandibular = angle(direction(p, "menton", "gonion"), direction(p, "supramentale", "subspinale"))
    return ab_to_mandibular + _palatal_to_frankfort(p)


def _apdi(p: Points) -> float:
    facial = direction(p, "nasion", "pogonion")
    facial_angle = angle(direction(p, "orbitale", "porion"), facial)
    ab_plane = direction(p, "subspinale", "supramentale")
    ab_to_facial = angle(facial, ab_plane)
    if cross(facial, ab_plane) > 0:
        ab_to_facial = -ab_to_facial
    return facial_angle + ab_to_facial + _palatal_to_frankfort(p)


def _fhi(p: Points) -> float:
    posterior = math.hypot(*direction(p, "sella", "gonion"))
    anterior = math.hypot(*direction(p, "nasion", "menton"))
    return posterior / anterior


def _fma(p: Points) -> float:
    return angle(direction(p, "sella", "nasion"), direction(p, "gonion", "gnathion"))


def _mw(p: Points) -> float:
    upper, lower = p["upper incisal incision"], p["lower incisal incision"]
    distance = float(math.hypot(*(upper - lower)))
    return -distance if upper[0] < lower[0] else distance


def _mw_class(value: float) -> tuple[int, str]:
    """The challenge's MW rule. Its table leaves 0 < MW < 2 mm out; its script gives that gap type 3 (the
    number is kept so that classes compare with published class accuracies; the label says what it is)."""
    if 2.0 <= value <= 4.5:
        return 1, "normal"
    if value > 4.5:
        return 4, "large overjet"
    if value == 0.0:
        return 2, "edge to edge"
    return 3, "anterior cross bite" if value < 0 else "small overjet (0-2 mm: type 3 by the challenge's rule)"


MEASUREMENTS: tuple[Definition, ...] = (
    Definition(
        "ANB", "SNA - SNB: the angle A-N-B, positive when A lies ahead of B", "deg",
        (("nasion", "subspinale"), ("nasion", "supramentale")),
        _anb, Bands(3.2, 5.7, "class I", below=(3, "class III"), above=(2, "class II")), also=("sella",),
    ),
    Definition(
        "SNB", "angle at nasion between N->S and N->B", "deg", (("sella", "nasion"), ("nasion", "supramentale")),
        _snb,
        Bands(74.6, 78.7, "normal mandible", below=(2, "retrognathic mandible"), above=(3, "prognathic mandible")),
    ),
    Definition(
        "SNA", "angle at nasion between N->S and N->A", "deg", (("sella", "nasion"), ("nasion", "subspinale")),
        _sna, Bands(79.4, 83.2, "normal maxilla", below=(3, "retrognathic maxilla"), above=(2, "prognathic maxilla")),
    ),
    Definition(
        "ODI", "overbite depth indicator: angle(Me->Go, B->A) + signed angle(Po->Or, PNS->ANS)", "deg",
        (("subspinale", "supramentale"), ("menton", "gonion"), ("porion", "orbitale"),
         ("posterior nasal spine", "anterior nasal spine")),
        _odi, Bands(68.4, 80.5, "normal", below=(3, "open bite tendency"), above=(2, "deep bite tendency")),
    ),
    Definition(
        "APDI", "anteroposterior dysplasia indicator: angle(Or->Po, N->Pog) + signed angle(N->Pog, A->B) "
        "+ signed angle(Po->Or, PNS->ANS)", "deg",
        (("porion", "orbitale"), ("nasion", "pogonion"), ("subspinale", "supramentale"),
         ("posterior nasal spine", "anterior nasal spine")),
        _apdi, Bands(77.6, 85.2, "normal", below=(2, "class II tendency"), above=(3, "class III tendency")),
    ),
    Definition(
        "FHI", "facial height index: posterior face height |S-Go| / anterior face height |N-Me|", "ratio",
        (("sella", "gonion"), ("nasion", "menton")),
        _fhi, Bands(0.65, 0.75, "normal", below=(3, "long face tendency"), above=(2, "short face tendency")),
    ),
    Definition(
        # The challenge's "FMA" is the S-N line against Go-Gn (the SN-GoGn angle), not Frankfort to the
        # mandibular plane; its ranges were set for this definition, so it is kept.
        "FMA", "angle between S->N and Go->Gn", "deg", (("sella", "nasion"), ("gonion", "gnathion")),
        _fma, Bands(26.8, 31.4, "normal", below=(3, "low angle tendency"), above=(2, "high angle tendency")),
    ),
    Definition(
        "MW", "modified Wits appraisal: |UIT - LIT| in mm, negative when the upper incisal tip lies behind the lower",
        "mm", (("lower incisal incision", "upper incisal incision"),), _mw, _mw_class,
    ),
)  # fmt: skip

# Every name must be the registry's: a renamed landmark fails here, at import, not in a patient's report.
if not all(name in HEAD.landmark_names for d in MEASUREMENTS for name in d.landmarks):
    raise RuntimeError("a cephalometric measurement names a landmark the head registry does not have")


def measure_points(
    points: Mapping[str, Sequence[float]], spacing_mm: tuple[float, float] | None, weak: Collection[str] = ()
) -> list[Measurement]:
    """All eight measurements of named landmarks in original pixels; ``weak`` names low-confidence landmarks.

    Never raises on bad geometry: a measurement that has no value (a missing or non-finite landmark, two
    landmarks on one spot, no spacing for a distance) carries ``value=None`` and the reason.
    """
    # Geometry in x-pixel units (y rescaled by the spacings' ratio, 1 for square pixels): exact pixel arithmetic
    # keeps a value that lies on a class limit on it; distances become mm only at the end (mm_per_unit).
    mm_per_unit = None if spacing_mm is None else float(spacing_mm[0])
    aspect = 1.0 if spacing_mm is None else spacing_mm[1] / spacing_mm[0]
    scaled = {name: np.asarray(xy, dtype=np.float64) * (1.0, aspect) for name, xy in points.items()}
    return [_measure_one(definition, scaled, mm_per_unit, set(weak)) for definition in MEASUREMENTS]


def measure(result: ImageResult, min_confidence: float | Sequence[float] | None = None) -> list[Measurement]:
    """The measurements of one result; landmarks whose peak is below their ``min_confidence`` (one threshold for
    all, or one per landmark as the flags use them) mark those using them."""
    points = {lm.name: (lm.x, lm.y) for lm in result.landmarks}
    if min_confidence is None or isinstance(min_confidence, (int, float)):
        limit = -math.inf if min_confidence is None else float(min_confidence)
        limits: Sequence[float] = [limit] * len(result.landmarks)
    else:
        limits = min_confidence
    weak = {lm.name for lm, limit in zip(result.landmarks, limits, strict=True) if lm.confidence < limit}
    return measure_points(points, result.spacing_mm, weak)


def _measure_one(definition: Definition, points: Points, mm_per_unit: float | None, weak: set[str]) -> Measurement:
    used = list(definition.landmarks)
    measurement = Measurement(
        definition.name, None, definition.unit, None, None, used,
        low_confidence=bool(weak.intersection(used)), weak_landmarks=[n for n in used if n in weak],
    )  # fmt: skip
    try:
        measurement.value = _value(definition, points, mm_per_unit)
    except Undefined as why:
        measurement.reason = str(why)
        return measurement
    measurement.class_, measurement.class_label = definition.classify(measurement.value)
    return measurement


def _value(definition: Definition, points: Points, mm_per_unit: float | None) -> float:
    missing = [name for name in definition.landmarks if name not in points]
    if missing:
        raise Undefined(f"no landmark named {', '.join(missing)}: defined on the 19 ISBI 2015 head landmarks")
    unplaced = [name for name in definition.landmarks if not np.isfinite(points[name]).all()]
    if unplaced:
        raise Undefined(f"no finite position for {', '.join(unplaced)}")
    value = definition.compute(points)
    if definition.unit == "mm":
        if mm_per_unit is None:
            raise Undefined("a distance in mm needs the pixel spacing, unknown for this image (give --spacing)")
        value *= mm_per_unit
    if not math.isfinite(value):  # defensive: every formula above is finite on finite, distinct points
        raise Undefined(f"not a finite number ({value})")
    return value


def supports(landmark_names: Collection[str] | None) -> bool:
    """Whether an anatomy's landmarks carry every name the measurements use (today: the head only)."""
    names = set(landmark_names or ())
    return all(name in names for definition in MEASUREMENTS for name in definition.landmarks)
