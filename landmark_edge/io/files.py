"""Reading input files that may be hostile or moving: one consistent snapshot of a regular file, or one reason.

An input path can be anything the file system holds: a symbolic link that loops or points nowhere, a FIFO (whose
``open`` for reading blocks until a writer appears), a device (``/dev/zero`` never ends), a file deleted after
the folder was listed or still being written, a name too long for the kernel. Each becomes an
:class:`~landmark_edge.errors.InputError` naming the path and the problem, so a run reports it and goes on:

* the path is ``stat``-ed first and anything but a regular file is refused *without opening it*;
* it is opened non-blocking (a FIFO swapped in after the ``stat`` cannot block) and the open descriptor is
  checked again, so the bytes read are those of the regular file that was checked;
* the whole file is read once, and a size or modification time that changed during the read refuses it: the
  decoders then parse one consistent snapshot instead of a file growing under them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from landmark_edge.errors import InputError

# Far above any radiograph (an 80 Mpx float32 DICOM is 320 MB); a guard against reading a huge file into memory.
MAX_FILE_BYTES = 1 << 30

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a ``stat`` mode is, in words ("a named pipe (FIFO)"), for a refusal message."""
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def stat_problem(path: Path, error: OSError) -> str:
    """Why ``stat`` failed on ``path``, told apart for links (a loop, a dangling target) and over-long names."""
    if error.errno == errno.ELOOP:
        return "symbolic link loop (the links never reach a file)"
    if error.errno == errno.ENAMETOOLONG:
        return f"file name or path too long for the file system ({len(os.fsencode(path))} bytes in all)"
    if error.errno == errno.ENOENT and os.path.islink(path):
        return f"broken symbolic link, file not found (points to {os.readlink(path)})"
    if error.errno == errno.ENOENT:
        return "file not found"
    if error.errno == errno.EACCES:
        return "cannot read file (permission denied)"
    return f"cannot read file ({error.strerror or type(error).__name__})"


def regular_file_problem(path: Path) -> str | None:
    """None for an existing regular file; else why the path cannot be read as one (nothing is opened)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        return stat_problem(path, error)
    return None if stat.S_ISREG(mode) else f"not a file: {file_kind(mode)}"


def open_regular(path: Path) -> int:
    """A read-only descriptor on the regular file at ``path``; :class:`InputError` for anything else.

    FIFOs and devices are refused from ``stat`` without being opened; ``O_NONBLOCK`` keeps a FIFO swapped in
    between ``stat`` and ``open`` from blocking, and ``fstat`` on the descriptor refuses it then.
    """
    problem = regular_file_problem(path)
    if problem is not None:
        raise InputError(f"{path}: {problem}")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise InputError(f"{path}: {stat_problem(path, error)}") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise InputError(f"{path}: not a file: {file_kind(mode)}")
    return descriptor


def read_head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of a regular file; empty for anything that is not one (never blocks)."""
    try:
        descriptor = open_regular(path)
    except InputError:
        return b""
    try:
        return os.read(descriptor, size)
    except OSError:
        return b""
    finally:
        os.close(descriptor)


def read_snapshot(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """All bytes of a regular file, as one consistent snapshot; :class:`InputError` names the problem."""
    descriptor = open_regular(path)
    try:
        before = os.fstat(descriptor)
        if before.st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
        if before.st_size > limit:
            raise InputError(f"{path}: file is {before.st_size / 2**20:.0f} MiB, over the {limit >> 20} MiB limit")
        with os.fdopen(os.dup(descriptor), "rb") as handle:
            data = handle.read(limit + 1)  # bounded: a file growing while read cannot exhaust memory
        after = os.fstat(descriptor)
    except OSError as error:
        raise InputError(f"{path}: cannot read file ({error.strerror or type(error).__name__})") from None
    finally:
        os.close(descriptor)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or len(data) != after.st_size:
        raise InputError(f"{path}: file changed while it was read (still being written?); run again when complete")
    return data


def file_sha256(path: str | os.PathLike) -> str:
    """A file's sha256, read in 1 MiB chunks (weights, engines and IR weights files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_sha256(path: str | os.PathLike) -> str:
    """One sha256 for an artifact, however many files it is: a file's own sha256 (what ``sha256sum`` prints); for
    a folder, or an OpenVINO IR ``.xml`` with its ``.bin`` beside it, the sha256 of the ``<sha256>  <name>`` lines
    of its files in name order (``sha256sum`` format, so the record can be checked by hand)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        names = [p.relative_to(path).as_posix() for p in files]
    elif path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        files, names = [path, path.with_suffix(".bin")], [path.name, path.with_suffix(".bin").name]
    else:
        return file_sha256(path)
    lines = "".join(f"{file_sha256(file)}  {name}\n" for file, name in zip(files, names, strict=True))
    return hashlib.sha256(lines.encode("utf-8", "surrogateescape")).hexdigest()
