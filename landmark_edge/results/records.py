"""What one image gives: :class:`ImageResult` (landmarks, spacing, flags, measurements) or :class:`ImageFailure`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from landmark_edge.contracts import RunInfo


@dataclass
class Landmark:
    index: int  # 1-based, as landmark tables are numbered in the literature
    name: str
    x: float  # original-image pixels
    y: float
    x_mm: float | None
    y_mm: float | None
    confidence: float  # heatmap peak value in (0, 1)
    grid_x: float  # model-grid pixels
    grid_y: float


@dataclass
class Measurement:
    """One clinical measurement from a result's landmarks (``landmark_edge.analysis``): a value, or why none.

    ``value`` is None exactly when ``reason`` says why (so JSON never holds a NaN); ``class_`` is the source's
    class number (1 = normal) and is written as ``class``.
    """

    name: str
    value: float | None
    unit: str
    class_: int | None
    class_label: str | None
    landmarks: list[str]
    low_confidence: bool = False  # a landmark it uses is below --min-confidence: read the value with care
    weak_landmarks: list[str] = field(default_factory=list)
    reason: str | None = None

    def to_dict(self) -> dict:
        return {("class" if key == "class_" else key): value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Measurement:
        return cls(**{("class_" if key == "class" else key): value for key, value in data.items()})


@dataclass
class ImageResult:
    path: str
    anatomy: str
    width: int
    height: int
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    decode: str
    landmarks: list[Landmark] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # weak peaks, implausible layout or geometry (landmark_edge.plausibility)
    ok: bool = True
    measurements: list[Measurement] | None = None  # only when asked for (infer --measurements)
    run: RunInfo | None = None  # what made it (the session stamps its backend's record)

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.measurements is None:
            del data["measurements"]
        else:
            data["measurements"] = [m.to_dict() for m in self.measurements]
        if self.run is None:
            del data["run"]
        else:
            data["run"] = self.run.model_dump()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ImageResult:
        """Inverse of :meth:`to_dict` (JSON turns tuples into lists; they are restored)."""
        values = dict(data)
        values["landmarks"] = [Landmark(**lm) for lm in values["landmarks"]]
        if values.get("measurements") is not None:
            values["measurements"] = [Measurement.from_dict(m) for m in values["measurements"]]
        if values.get("run") is not None:
            values["run"] = RunInfo.model_validate(values["run"])
        if values["spacing_mm"] is not None:
            values["spacing_mm"] = tuple(values["spacing_mm"])
        return cls(**values)


@dataclass
class ImageFailure:
    path: str
    error: str
    ok: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


Outcome = ImageResult | ImageFailure
