"""The project's weights file: a safetensors file whose header carries the model's contract.

Like torchvision's weight enums, a weights file says what it is for: the anatomies in the model's order with
their landmark counts and grids, the model hyper-parameters, the preprocessing, where it came from, evaluation
figures when known, and a format version. safetensors is used (not a pickle) so loading a file cannot run code.

Reading a header, checking it and hashing the file need no torch (ONNX Runtime runs a cached graph of these
weights without it); torch and the model are imported only to load or save tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from landmark_edge import __version__
from landmark_edge.anatomy import get_anatomy
from landmark_edge.errors import NoDefaultWeightsError, WeightsError, first_line
from landmark_edge.io.atomic import atomic_path
from landmark_edge.io.files import file_sha256  # noqa: F401 - re-exported: weights callers hash files here

if TYPE_CHECKING:
    import torch

    from landmark_edge.model import GU2Net

FORMAT = "landmark-edge-weights"
FORMAT_VERSION = 1
PREPROCESSING = "PIL resize to grid (bicubic), first channel, per-image z-score (reference §6.1)"
DEFAULT_WEIGHTS = Path(__file__).with_name("gu2net_default.safetensors")
# The shipped file's checksum, checked on every load of it: a truncated or altered install fails in one line.
DEFAULT_WEIGHTS_SHA256 = "96b5e65d7c164803d75a08362addda0ce5c1a511f0a247749e18d58c04228fbc"


class AnatomyEntry(BaseModel):
    """One anatomy head of the model; ``fit_for_use`` is None where nobody assessed it (older files, imports)."""

    name: str
    num_landmarks: int
    grid: tuple[int, int]
    fit_for_use: bool | None = None
    assessment: str = ""  # one sentence: the test figures behind ``fit_for_use``
    test_metrics: dict[str, Any] = {}


class WeightsInfo(BaseModel):
    """The header of a weights file."""

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    anatomies: list[AnatomyEntry]
    architecture: dict[str, Any]  # GU2Net constructor arguments
    preprocessing: str = PREPROCESSING
    source: str = ""
    landmark_edge_version: str = __version__
    metrics: dict[str, Any] = {}
    sha256: str = ""  # of the file, filled in on load

    @property
    def anatomy_names(self) -> list[str]:
        return [a.name for a in self.anatomies]

    def entry(self, anatomy: str) -> AnatomyEntry:
        return next(a for a in self.anatomies if a.name == get_anatomy(anatomy).name)


def save_weights(
    model: GU2Net,
    path: str | Path,
    *,
    source: str = "",
    metrics: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    assessments: dict[str, dict[str, Any]] | None = None,
) -> WeightsInfo:
    """Write ``model`` atomically, float32 unless ``dtype`` says otherwise (``torch.float16`` halves the file, BN
    statistics included).

    ``assessments`` maps an anatomy to its :class:`AnatomyEntry` readiness fields (``fit_for_use``,
    ``assessment``, ``test_metrics``), as measured on its test split.
    """
    import torch
    from safetensors.torch import save_file

    dtype = dtype or torch.float32

    assessments = assessments or {}
    info = WeightsInfo(
        anatomies=[
            AnatomyEntry(name=n, num_landmarks=c, grid=get_anatomy(n).grid, **assessments.get(n, {}))
            for n, c in model.num_landmarks.items()
        ],
        architecture=model.config,
        source=source,
        metrics=metrics or {},
    )
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    header = info.model_dump(exclude={"sha256"})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"landmark_edge": json.dumps(header)})
    return info


def read_info(path: str | Path) -> WeightsInfo:
    """Read only the header of a weights file (cheap: no tensors are loaded)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="numpy") as handle:  # the header only: no tensor, no torch
            metadata = handle.metadata() or {}
        info = WeightsInfo.model_validate(json.loads(metadata["landmark_edge"]))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError for bad headers
        raise WeightsError(f"{path}: not a landmark-edge weights file ({first_line(error)})") from None
    if info.format != FORMAT or info.format_version > FORMAT_VERSION:
        raise WeightsError(f"{path}: unsupported weights format {info.format} v{info.format_version}")
    return info


def check_anatomy(info: WeightsInfo, path: str | Path, anatomy: str, *, require_fit: bool = True) -> None:
    """Refuse an anatomy the file has no head for, or (``require_fit``) one its header marks unfit for use.

    Evaluation passes ``require_fit=False``: measuring an unfit head is how one learns that it is unfit.
    """
    name = get_anatomy(anatomy).name
    if name not in info.anatomy_names:
        raise WeightsError(f"{path}: weights are for {', '.join(info.anatomy_names)}, not {name}")
    entry = info.entry(name)
    if require_fit and entry.fit_for_use is False:
        raise WeightsError(
            f"{path}: these weights are marked unfit for {name} ({entry.assessment or 'no reason recorded'}); "
            f"pass weights trained for {name} with --weights FILE"
        )


def load_weights(
    path: str | Path, anatomy: str | None = None, *, require_fit: bool = True
) -> tuple[GU2Net, WeightsInfo]:
    """Build the model a weights file describes and load it (float32, eval mode).

    With ``anatomy``, refuse a file that has no head for it (naming the anatomies it does have) or whose header
    marks that head unfit for use (see :func:`check_anatomy`). The shipped default file is checked against its
    recorded sha256 first.
    """
    from safetensors.torch import load_file

    from landmark_edge.model import GU2Net

    info = read_info(path)
    info.sha256 = checked_sha256(path)
    if anatomy is not None:
        check_anatomy(info, path, anatomy, require_fit=require_fit)
    model = GU2Net(**info.architecture)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise WeightsError(f"{path}: tensors do not match the header ({first_line(error)})") from None
    return model.eval(), info


def checked_sha256(path: str | Path) -> str:
    """The file's sha256; the shipped default file is refused when it is not the one recorded (truncated or
    altered install). Every user of the weights goes through here: loading them, or finding their cached graph."""
    sha256 = file_sha256(path)
    if _is_default(path) and DEFAULT_WEIGHTS_SHA256 and sha256 != DEFAULT_WEIGHTS_SHA256:
        raise WeightsError(
            f"{path}: the shipped default weights are damaged (sha256 {sha256[:12]}..., expected "
            f"{DEFAULT_WEIGHTS_SHA256[:12]}...): reinstall landmark-edge"
        )
    return sha256


def _is_default(path: str | Path) -> bool:
    return Path(path).resolve() == DEFAULT_WEIGHTS.resolve()


def resolve_weights(path: str | Path | None) -> Path:
    """The weights to use: the given path, else the weights shipped in the package."""
    if path is not None:
        return Path(path)
    if DEFAULT_WEIGHTS.is_file():
        return DEFAULT_WEIGHTS
    raise NoDefaultWeightsError(
        "no --weights given and this install ships no default weights yet: "
        "pass --weights FILE (train one with `landmark-edge train`, or `landmark-edge import-checkpoint`)"
    )
