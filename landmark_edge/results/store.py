"""Per-image result files: one JSON file per image in an output folder, the unit a folder run resumes from
(``--skip-existing``: :meth:`ResultStore.reusable`), each written atomically, so a killed run leaves whole files
only and a resumed run rebuilds exactly the aggregate an uninterrupted one writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from landmark_edge.io.atomic import atomic_write_text
from landmark_edge.results.records import ImageResult

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

    def save(self, result: ImageResult) -> None:
        atomic_write_text(self.path(result.path), json.dumps(result.to_dict(), indent=1) + "\n")

    def reusable(
        self, files: list[Path], anatomy: str, decode: str, overlay: Path | None = None
    ) -> dict[Path, ImageResult]:
        """Results already in the folder for the same anatomy and decoding (with their overlay in ``overlay``,
        when one is asked): what a resumed run takes instead of computing again."""
        done = {}
        for path in files:
            if not self.has(path) or (overlay is not None and not self.path(path, ".png", overlay).is_file()):
                continue
            try:
                result = self.load(path)
            except (ValueError, TypeError, KeyError):  # not one of ours: compute it again
                continue
            if result.anatomy == anatomy and result.decode == decode:
                done[path] = result
        return done
