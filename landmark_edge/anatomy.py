"""The anatomy registry: the one place that knows each anatomy GU2Net detects.

Every other module (model construction, preprocessing, datasets, evaluation, export metadata, the CLI) reads
landmark counts, input grids, names, millimetre rules and dataset layouts from here, so a fact is never written
twice. Adding an anatomy is one :class:`Anatomy` entry (with its :class:`~landmark_edge.dataset_spec.DatasetSpec`)
in :data:`ANATOMIES` below, or given to :func:`register_anatomy` at run time, plus its data files and weights; help
texts and defaults follow the registry (those built when the CLI is imported list the anatomies registered then).

The one fact kept outside an entry is its *typical landmark layout* (``layouts.json``, read by
:mod:`landmark_edge.plausibility`): it is measured from the labels by ``scripts/make_layouts.py`` and calibrated
on trained weights, so it is a data file, not something to write by hand. An anatomy without one is not refused:
each of its results carries a "layout not checked" flag, so an unchecked layout never reads as a plausible one.

Coordinates follow one convention across the project: ``x`` is the column (grows right), ``y`` the row (grows
down), 0-based, in a stated space (original pixels, model-grid pixels, or millimetres).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

from landmark_edge.dataset_spec import CHEST_DATASET, HAND_DATASET, HEAD_DATASET, DatasetSpec


# How far outside the training images' geometry an input may be before it is flagged (Anatomy.geometry_problem).
ASPECT_MARGIN = 1.5
SHORT_SIDE_MARGIN = 4.0


class SpacingRule(str, Enum):
    """How an anatomy's pixel distances become millimetres."""

    FIXED = "fixed"  # a known physical pixel spacing at the original resolution (ISBI 2015: 0.1 mm/px)
    WRIST_WIDTH = "wrist-width"  # reference hand protocol: landmarks 1 and 5 are taken to be 50 mm apart
    PIXELS = "pixels"  # no physical spacing known (Shenzhen chest): report pixels only


@dataclass(frozen=True)
class Anatomy:
    """Everything the project knows about one anatomy.

    ``grid`` is the model's input size as (width, height), as the reference configuration writes it.
    ``default_spacing_mm`` is (x, y) mm per pixel at the *original* resolution, when a physical spacing is known.
    ``reference_mm_per_grid_px`` is the single factor the reference evaluation multiplies grid distances by.
    ``dataset`` says how its raw dataset is laid out and read (None: it cannot be read from a data folder).
    """

    name: str
    num_landmarks: int
    grid: tuple[int, int]
    aliases: tuple[str, ...] = ()
    landmark_names: tuple[str, ...] | None = None
    spacing_rule: SpacingRule = SpacingRule.PIXELS
    default_spacing_mm: tuple[float, float] | None = None
    reference_mm_per_grid_px: float | None = None
    wrist_landmarks: tuple[int, int] | None = None
    wrist_width_mm: float | None = None
    sdr_thresholds: tuple[float, ...] = field(default=(2.0, 2.5, 3.0, 4.0, 6.0, 9.0, 10.0))
    unit: str = "mm"
    # GU2Net's test MRE (in ``unit``) as reported in the paper (Zhu et al. 2021, Table 1; not checked against
    # the table itself, which was out of reach): what shipped weights are judged against.
    paper_mre: float | None = None
    # The images the anatomy's weights were trained and checked on (``scripts/image_geometry.py`` over the shared
    # data): width / height range and smallest short side. An input far outside them (see
    # :meth:`geometry_problem`) is not an image of this anatomy, or not a whole one.
    training_aspect: tuple[float, float] | None = None
    training_short_side: int | None = None
    dataset: DatasetSpec | None = None

    @property
    def grid_hw(self) -> tuple[int, int]:
        """The input grid as (height, width): the tensor layout the model uses."""
        return self.grid[1], self.grid[0]

    def spacing_from_landmarks(self, xy, confidence) -> tuple[tuple[float, float], str] | None:
        """(x, y) mm per original pixel implied by the image's own landmarks, with its source, or None.

        The wrist-width rule: the two wrist landmarks (found: a positive heatmap peak each, at distinct points)
        are taken to be ``wrist_width_mm`` apart, as the reference hand protocol does. Other rules give None.
        """
        if self.spacing_rule is not SpacingRule.WRIST_WIDTH or self.wrist_landmarks is None:
            return None
        first, second = self.wrist_landmarks
        width_px = math.dist(xy[first], xy[second])
        if width_px <= 0 or min(confidence[first], confidence[second]) <= 0:
            return None
        mm = self.wrist_width_mm / width_px
        return (mm, mm), f"wrist width ({self.wrist_width_mm:g} mm, landmarks {first + 1} and {second + 1})"

    def mm_rule(self, on_grid: bool) -> str:
        """How this anatomy's distances become ``unit``, in words (help texts): on the model grid, as the
        reference evaluation measures them, or in original pixels."""
        if self.spacing_rule is SpacingRule.WRIST_WIDTH and self.wrist_landmarks is not None:
            first, second = self.wrist_landmarks
            where = "on the grid" if on_grid else "in original pixels"
            return f"{self.wrist_width_mm:g} mm wrist width between landmarks {first + 1} and {second + 1} {where}"
        if on_grid and self.reference_mm_per_grid_px is not None:
            return f"x{self.reference_mm_per_grid_px:g} mm/px on both axes"
        if not on_grid and self.default_spacing_mm is not None:
            x, y = self.default_spacing_mm
            return f"{x:g} mm/px per axis" if x == y else f"{x:g} x {y:g} mm/px (x, y)"
        return "grid pixels" if on_grid else "pixels"

    def geometry_problem(self, width: int, height: int) -> str | None:
        """Why a ``width`` x ``height`` image is implausible for this anatomy, or None.

        Far outside means an aspect ratio more than :data:`ASPECT_MARGIN` times beyond the training range (a
        strip, a crop of one corner, a panorama), or a short side under 1 / :data:`SHORT_SIDE_MARGIN` of the
        smallest training image's (a thumbnail: the network would see upsampled blur).
        """
        aspect = width / height
        if self.training_aspect is not None:
            low, high = self.training_aspect[0] / ASPECT_MARGIN, self.training_aspect[1] * ASPECT_MARGIN
            if not low <= aspect <= high:
                return (
                    f"aspect ratio {aspect:.2f} (width / height) is far outside the {self.name} training images' "
                    f"{self.training_aspect[0]:.2f}-{self.training_aspect[1]:.2f} (accepted {low:.2f}-{high:.2f})"
                )
        if self.training_short_side is not None and min(width, height) * SHORT_SIDE_MARGIN < self.training_short_side:
            return (
                f"{width}x{height} px is far smaller than the {self.name} training images (short side "
                f"{min(width, height)} px, under 1/{SHORT_SIDE_MARGIN:g} of their smallest, "
                f"{self.training_short_side} px)"
            )
        return None

    def landmark_name(self, index: int) -> str:
        """A readable name for landmark ``index`` (0-based); numbered when the source gives no names."""
        if self.landmark_names is not None:
            return self.landmark_names[index]
        return f"L{index + 1}"


_ISBI_2015_LANDMARKS = (
    "sella", "nasion", "orbitale", "porion", "subspinale", "supramentale", "pogonion", "menton", "gnathion",
    "gonion", "lower incisal incision", "upper incisal incision", "upper lip", "lower lip", "subnasale",
    "soft tissue pogonion", "posterior nasal spine", "anterior nasal spine", "articulare",
)  # fmt: skip

HEAD = Anatomy(
    name="head",
    aliases=("cephalometric", "ceph", "isbi2015"),
    num_landmarks=19,
    grid=(416, 512),
    landmark_names=_ISBI_2015_LANDMARKS,
    spacing_rule=SpacingRule.FIXED,
    default_spacing_mm=(0.1, 0.1),
    # 0.1 mm x 2400 / 512: the reference applies the row factor to both axes.
    reference_mm_per_grid_px=0.46875,
    paper_mre=1.54,
    training_aspect=(0.806, 0.806),  # every ISBI 2015 image is 1935 x 2400
    training_short_side=1935,
    dataset=HEAD_DATASET,
)
HAND = Anatomy(
    name="hand",
    num_landmarks=37,
    grid=(368, 512),
    spacing_rule=SpacingRule.WRIST_WIDTH,
    wrist_landmarks=(0, 4),
    wrist_width_mm=50.0,
    paper_mre=0.84,
    training_aspect=(0.500, 0.919),
    training_short_side=1050,
    dataset=HAND_DATASET,
)
CHEST = Anatomy(
    name="chest",
    num_landmarks=6,
    grid=(512, 512),
    spacing_rule=SpacingRule.PIXELS,
    unit="px",
    paper_mre=5.57,
    # The 512 x 512 training squares and the same Shenzhen frames at their original aspect (originals_aspect/).
    training_aspect=(0.855, 1.027),
    training_short_side=512,
    dataset=CHEST_DATASET,
)

ANATOMIES: dict[str, Anatomy] = {a.name: a for a in (HEAD, HAND, CHEST)}

# Index order of the reference config.yaml (`name_list: [cephalometric, hand, chest]`): the paper's model.
PAPER_ORDER: tuple[str, ...] = ("head", "hand", "chest")


class UnknownAnatomyError(ValueError):
    """Raised for a name that is neither an anatomy nor one of its aliases."""


def register_anatomy(entry: Anatomy) -> Anatomy:
    """Add ``entry`` to the registry; a name or alias already taken is refused, so a lookup stays unambiguous."""
    taken = {key for anatomy in ANATOMIES.values() for key in (anatomy.name, *anatomy.aliases)}
    clash = sorted({entry.name, *entry.aliases} & taken)
    if clash:
        raise ValueError(f"cannot register anatomy '{entry.name}': {', '.join(clash)} already registered")
    ANATOMIES[entry.name] = entry
    return entry


@contextmanager
def registered(entry: Anatomy) -> Iterator[Anatomy]:
    """``entry`` registered for the ``with`` block only (tests add an anatomy without leaking it to others)."""
    register_anatomy(entry)
    try:
        yield entry
    finally:
        del ANATOMIES[entry.name]


def get_anatomy(name: str) -> Anatomy:
    """Resolve a name or alias (case-insensitive) to its :class:`Anatomy`."""
    key = name.strip().lower()
    for anatomy in ANATOMIES.values():
        if key == anatomy.name or key in anatomy.aliases:
            return anatomy
    known = ", ".join(f"{a.name} ({'/'.join(a.aliases)})" if a.aliases else a.name for a in ANATOMIES.values())
    raise UnknownAnatomyError(f"unknown anatomy '{name}': known anatomies are {known}")


def parse_anatomy_list(text: str) -> list[Anatomy]:
    """Parse a comma-separated list such as ``chest,cephalometric,hand`` (order kept, duplicates refused)."""
    anatomies = [get_anatomy(part) for part in text.split(",") if part.strip()]
    names = [a.name for a in anatomies]
    if len(set(names)) != len(names):
        raise UnknownAnatomyError(f"anatomy list '{text}' names an anatomy twice")
    if not anatomies:
        raise UnknownAnatomyError("empty anatomy list")
    return anatomies
