"""Expanding command-line inputs (files, folders searched recursively, glob patterns) into image paths.

A folder contributes its image and DICOM files (by suffix, or extension-less files with the DICOM preamble, the
way PACS exports name them), in sorted order, skipping hidden entries (our own atomic temp files among them).
A path given explicitly is always kept, whatever its name: the reader then says what is wrong with its content.
Problems found while expanding (an unreadable folder, a pattern that matches nothing, a path that is not a regular
file: a link loop, a dangling link, a FIFO, a device) become failures of the run, reported in one line each like
an unreadable image.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from landmark_edge.io.dicom import DICOM_SUFFIXES, has_dicom_magic
from landmark_edge.io.files import regular_file_problem
from landmark_edge.io.xray import IMAGE_SUFFIXES
from landmark_edge.results import ImageFailure

_GLOB_CHARACTERS = frozenset("*?[")


@dataclass
class Inputs:
    """The files to process, the inputs that could not be expanded, and how many folder entries were not images."""

    files: list[Path] = field(default_factory=list)
    failures: list[ImageFailure] = field(default_factory=list)
    skipped: int = 0


def expand_inputs(arguments: Iterable[str | os.PathLike]) -> Inputs:
    """Files, folders (recursive) and glob patterns -> image paths in order, each file once.

    Nothing here raises for what the file system holds: a link loop, a dangling link, a FIFO or device, an
    over-long name each become a failure naming the path (see :mod:`landmark_edge.io.files`), never a traceback.
    """
    inputs = Inputs()
    seen: set[str] = set()

    def add(path: Path) -> None:
        problem = regular_file_problem(path)
        if problem is not None:
            inputs.failures.append(ImageFailure(str(path), f"{path}: {problem}"))
            return
        key = _identity(path)
        if key not in seen:
            seen.add(key)
            inputs.files.append(path)

    for argument in arguments:
        path = Path(argument)
        if _is_folder(path):
            _add_folder(path, inputs, add)
        elif not os.path.lexists(path) and _GLOB_CHARACTERS & set(str(argument)):
            matches = sorted(glob.glob(str(argument), recursive=True))
            if not matches:
                inputs.failures.append(ImageFailure(str(argument), f"{argument}: no files match this pattern"))
            for match in map(Path, matches):
                if _is_folder(match):
                    _add_folder(match, inputs, add)
                else:
                    add(match)
        else:
            add(path)
    return inputs


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:  # a loop, a dangling link, a name too long: add() reports it
        return False


def _identity(path: Path) -> str:
    """The file a path names, so a file given twice (or through a link) is read once; a path that cannot be
    resolved (it changed since it was checked) stands for itself."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on Python < 3.13
        return os.path.abspath(path)


def _add_folder(folder: Path, inputs: Inputs, add) -> None:
    """Add a folder's images in path order (as ``find | sort`` lists them); unreadable sub-folders are failures.

    Entries that could be inputs (an image or DICOM suffix, or none) but are not regular files - links that
    loop or dangle, FIFOs, devices - go to ``add`` too, which reports them; they are never opened.
    """
    found: list[Path] = []
    errors: list[OSError] = []
    for root, dirs, names in os.walk(folder, onerror=errors.append):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for path in (Path(root) / name for name in names if not name.startswith(".")):
            if is_image_file(path) or (not path.suffix and regular_file_problem(path) is not None):
                found.append(path)
            else:
                inputs.skipped += 1
    for path in sorted(found, key=lambda p: p.parts):
        add(path)
    for error in errors:
        reason = error.strerror or type(error).__name__
        inputs.failures.append(ImageFailure(str(error.filename), f"{error.filename}: cannot read folder ({reason})"))
    if not found and not errors:
        inputs.failures.append(ImageFailure(str(folder), f"{folder}: folder holds no image or DICOM files"))


def is_image_file(path: Path) -> bool:
    """Whether a file found in a folder is an input: a known suffix, or no suffix and the DICOM preamble."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix in DICOM_SUFFIXES:
        return True
    return suffix == "" and has_dicom_magic(path)
