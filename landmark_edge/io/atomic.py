"""Atomic file writes: a killed process leaves either the old file or the new one, never half of one; a write that
fails (disk full, read-only folder) is one :class:`~landmark_edge.errors.OutputError` naming the file, and the old
file stays as it was."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from landmark_edge.errors import OutputError


@contextmanager
def atomic_path(path: str | os.PathLike, keep_partial: tuple[type[BaseException], ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    Writers that only take a path (torch.save, safetensors, onnx.save, matplotlib) write to the yielded path. An
    ``OSError`` on the way (ENOSPC, EACCES, EROFS) becomes an :class:`OutputError` naming ``path``. A stream
    stopped by one of ``keep_partial`` (a run interrupted between two JSONL lines) is renamed into place as it
    is, so what it holds survives; any other error leaves ``path`` untouched.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise _output_error(target, error) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _commit(tmp, target)
    except keep_partial:
        _commit(tmp, target)
        raise
    except OutputError:
        raise
    except OSError as error:
        raise _output_error(target, error) from None
    finally:
        tmp.unlink(missing_ok=True)


def _commit(tmp: Path, target: Path) -> None:
    # mkstemp (and writers that replace the file themselves) leave 0600: give what open() would give
    os.chmod(tmp, 0o666 & ~_umask())
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def _output_error(target: Path, error: OSError) -> OutputError:
    reason = error.strerror or str(error) or type(error).__name__
    output_error = OutputError(f"{target}: cannot write ({reason}); earlier files are unchanged")
    output_error.errno = error.errno
    return output_error


@contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", keep_partial: tuple[type[BaseException], ...] = (), **kwargs
) -> Iterator[IO]:
    """``open`` for writing, made atomic through :func:`atomic_path` (``keep_partial``: see there)."""
    with atomic_path(path, keep_partial) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically; a file name's undecodable bytes (surrogate escapes) are written back as the
    bytes they were, so a CSV or table names a non-UTF-8 file exactly as the file system does."""
    with atomic_open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write(text)
