"""Per-image result files: one JSON file per image in an output folder, the unit a folder run resumes from
(``--skip-existing``: :meth:`ResultStore.reusable`), each written atomically, so a killed run leaves whole files
only and a resumed run rebuilds exactly the aggregate an uninterrupted one writes."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from landmark_edge.errors import LandmarkEdgeError
from landmark_edge.io.atomic import atomic_write_text
from landmark_edge.io.files import artifact_sha256, file_sha256
from landmark_edge.results.records import ImageResult

class JsonlResults:
    """The results of an earlier ``-f jsonl -o FILE`` run (an interrupted one keeps every complete line), by input
    path: what ``--skip-existing`` resumes from without ``--out-dir``. Failures and torn lines are not results."""

    def __init__(self, path: Path) -> None:
        self.results: dict[str, dict] = {}
        try:
            lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("ok") and "path" in data:
                self.results[data["path"]] = data

    def find(self, image: str | Path) -> ImageResult | None:
        data = self.results.get(str(image))
        return None if data is None else ImageResult.from_dict(data)


class ResultStore:
    """One ``<out_dir>/<relative input path>.json`` per image, named relative to the inputs' common folder.

    Naming by the path relative to the common folder keeps files from different sub-folders apart
    (``a/001.png`` and ``b/001.png``) and is the same on every run over the same inputs.
    """

    def __init__(self, out_dir: Path | None, inputs: list[Path]) -> None:
        self.out_dir = out_dir
        parents = [str(p.resolve().parent) for p in inputs]
        self.root = Path(os.path.commonpath(parents)) if parents else Path.cwd()

    def key(self, image: str | Path) -> Path:
        """The input's path relative to the common folder (the name its outputs take)."""
        return Path(image).resolve().relative_to(self.root)

    def path(self, image: str | Path, suffix: str = ".json", out_dir: Path | None = None) -> Path:
        key = self.key(image)
        return (out_dir or self.out_dir) / key.with_name(key.name + suffix)

    def has(self, image: str | Path) -> bool:
        return self.path(image).is_file()

    def load(self, image: str | Path) -> ImageResult:
        return ImageResult.from_dict(json.loads(self.path(image).read_text(encoding="utf-8")))

    def find(self, image: str | Path) -> ImageResult | None:
        """The stored result of ``image`` (None: none stored; an unreadable one raises)."""
        return self.load(image) if self.has(image) else None

    def save(self, result: ImageResult) -> None:
        atomic_write_text(self.path(result.path), json.dumps(result.to_dict(), indent=1) + "\n")



@dataclass
class Reuse:
    """What ``--skip-existing`` found: the results it reuses, and why it redoes the others it found."""

    results: dict[Path, ImageResult] = field(default_factory=dict)
    redone: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line: ``reusing N results; redoing M: 2 made by other weights, 1 unreadable`` (empty: none found)."""
        found = len(self.results) + sum(self.redone.values())
        if not found:
            return ""
        why = ", ".join(f"{count} {reason}" for reason, count in self.redone.most_common())
        return f"--skip-existing: reusing {len(self.results)} of {found} results found" + (
            f"; redoing {sum(self.redone.values())}: {why}" if why else ""
        )


def made_from(weights: Path | None, artifact: Path | None) -> tuple[str | None, str | None]:
    """The (weights, artifact) sha256 a run's results are matched on: an artifact carries its network, so an
    artifact run is matched on the artifact alone, a weights run on the weights (see ``Backend.run_info``)."""
    try:
        if artifact is not None:
            return None, artifact_sha256(artifact)
        return (None if weights is None else file_sha256(weights)), None
    except OSError as error:
        raise LandmarkEdgeError(f"{error.filename}: cannot read ({error.strerror})") from None


def reusable(
    found: ResultStore | JsonlResults, store: ResultStore, files: list[Path], anatomy: str, decode: str,
    made_from: tuple[str | None, str | None], overlay: Path | None = None,
) -> Reuse:  # fmt: skip
    """The earlier results (``found``: the ``--out-dir`` files or a JSONL output) this run may reuse: same anatomy
    and decoding, made by the same weights and artifact (``made_from``: their sha256, None for no artifact), with
    their overlay (named by ``store``) when one is asked for. A result another run made differently is redone,
    never mixed in; each is counted under its reason."""
    reuse = Reuse()
    for path in files:
        try:
            result = found.find(path)
        except (OSError, ValueError, TypeError, KeyError):  # not one of ours, or damaged: compute it again
            reuse.redone["unreadable"] += 1
            continue
        if result is None:
            continue
        reason = _stale(result, anatomy, decode, made_from)
        if reason is None and overlay is not None and not store.path(path, ".png", overlay).is_file():
            reason = "missing their overlay"
        if reason is None:
            reuse.results[path] = result
        else:
            reuse.redone[reason] += 1
    return reuse


def _stale(result: ImageResult, anatomy: str, decode: str, made_from: tuple[str | None, str | None]) -> str | None:
    """Why a stored result cannot be reused by this run (None: it can)."""
    weights, artifact = made_from
    if result.anatomy != anatomy or result.decode != decode:
        return "for another anatomy or decoding"
    if result.run is None:
        return "without a run record (made by an older landmark-edge)"
    if artifact is not None and result.run.artifact_sha256 != artifact:
        return "made by another artifact"
    if artifact is None and (result.run.artifact_sha256 is not None or result.run.weights_sha256 != weights):
        return "made by other weights"
    return None
