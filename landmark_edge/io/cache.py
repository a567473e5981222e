"""The user's cache folder: artefacts derived from a weights file (exported ONNX graphs, compiled-model blobs),
reused across runs, and verified before every use.

An entry's name carries everything it was made from (weights sha256, anatomy, decoding, precision, ...), so a
different weights file or option is a different entry and nothing is ever invalidated in place. Each entry has a
*record* beside it, ``<entry>.record.json``, written after the entry and holding the sha256 of its bytes (of each
of its files, for a folder entry). Using an entry checks it against its record first (hashing an 11 MB graph
costs a few milliseconds, and no torch or ONNX import): an entry that is damaged (a truncated copy, flipped
bytes), unreadable or unrecorded (a killed writer, a hand copy) is discarded and rebuilt, with one warning line
naming the file, so a full disk or a killed copy costs one export, never a wrong or failing run.

Writers take a lock per entry (``<entry>.lock``, ``flock``), so N processes starting together on an empty cache
(a job array) export once: the first builds, the others wait and then reuse its verified entry. Under the lock
the writer also removes the temporary files a killed writer of that entry left. Where the folder cannot be
written (read-only home), the artefact is built and used uncached.

Two shapes of entry:

* :func:`cached_bytes` - one file whose bytes the caller makes (an ONNX graph);
* :func:`cached_folder` - a folder a library fills itself (OpenVINO's ``CACHE_DIR`` of compiled-model blobs):
  ``with cached_folder("openvino/KEY") as folder: core.compile_model(..., {"CACHE_DIR": str(folder)})``
  verifies every file before the block (damaged or unrecorded ones are removed) and records them after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from landmark_edge import __version__
from landmark_edge.io.atomic import atomic_path, atomic_write_text
from landmark_edge.io.files import file_sha256

CACHE_ENV = "LANDMARK_EDGE_CACHE"  # overrides the folder (tests, shared machines, read-only homes)
RECORD_SUFFIX = ".record.json"
LOCK_SUFFIX = ".lock"
RECORD_FORMAT = 1


def cache_dir() -> Path:
    """``$LANDMARK_EDGE_CACHE``, else ``$XDG_CACHE_HOME/landmark-edge``, else ``~/.cache/landmark-edge``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "landmark-edge"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder_digests(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (the record of a folder entry)."""
    return {
        path.relative_to(folder).as_posix(): file_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not _is_temporary(path)
    }


def record_path(entry: Path) -> Path:
    return entry.with_name(entry.name + RECORD_SUFFIX)


def _warn(message: str) -> None:
    """One warning line on stderr (this layer has no console; a cache problem never fails the run)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _read_record(entry: Path) -> dict | None:
    try:
        record = json.loads(record_path(entry).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(entry: Path, **fields: object) -> None:
    record = {"format": RECORD_FORMAT, "landmark_edge_version": __version__, **fields}
    atomic_write_text(record_path(entry), json.dumps(record, indent=1, sort_keys=True) + "\n")


def _verified_bytes(entry: Path) -> tuple[bytes | None, str | None]:
    """The entry's bytes when its record vouches for them, else None and why not (None, None: no entry)."""
    if not entry.exists():
        return None, None
    record = _read_record(entry)
    if record is None or "sha256" not in record:
        return None, "not recorded (left by a killed or older writer)"
    try:
        data = entry.read_bytes()
    except OSError as error:
        return None, f"unreadable ({error.strerror or error})"
    if sha256_bytes(data) != record["sha256"]:
        return None, f"damaged (sha256 differs from its record; {len(data)} bytes, {record.get('size')} recorded)"
    return data, None


def _discard(entry: Path, reason: str) -> None:
    _warn(f"cache entry {entry}: {reason}; discarded and rebuilt")
    for path in (entry, record_path(entry)):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _is_temporary(path: Path) -> bool:
    """A temp file of :func:`landmark_edge.io.atomic.atomic_path` (``.<name>.<random>.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def remove_leftovers(entry: Path) -> int:
    """Delete the temp files a killed writer of ``entry`` (or of its record) left; call under the entry's lock."""
    removed = 0
    for path in entry.parent.glob(f".{entry.name}.*.tmp"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


@contextmanager
def entry_lock(entry: Path) -> Iterator[bool]:
    """Hold ``<entry>.lock`` exclusively (waiting for another process that holds it); yields False, unlocked, where
    the lock file cannot be made (read-only cache: the caller then builds without storing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the atomic writes still leave whole entries
        yield True
        return
    lock = entry.with_name(entry.name + LOCK_SUFFIX)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a+b")
    except OSError:
        yield False
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def cached_bytes(name: str, make: Callable[[], bytes]) -> bytes:
    """The cache entry ``name`` (a relative path), verified against its record; made by ``make()`` and stored (with
    its record) when it is missing, damaged or unrecorded. A verified hit takes no lock."""
    entry = cache_dir() / name
    data, _ = _verified_bytes(entry)
    if data is not None:
        return data
    with entry_lock(entry) as writable:
        data, problem = _verified_bytes(entry)  # another process may have made it while we waited
        if data is not None:
            return data
        if problem is not None:
            _discard(entry, problem)
        data = make()
        if writable:
            _store(entry, data)
    return data


def _store(entry: Path, data: bytes) -> None:
    """Write the entry, then its record (the record's presence marks the entry complete)."""
    try:
        remove_leftovers(entry)
        with atomic_path(entry) as tmp:
            tmp.write_bytes(data)
        _write_record(entry, kind="file", sha256=sha256_bytes(data), size=len(data))
    except OSError:
        pass  # an unwritable or full cache costs time on the next run, never this run's result


def verify_folder(folder: Path) -> list[str]:
    """Check a folder entry's files against its record; remove each damaged or unrecorded file (one warning line
    each, naming it) and a killed writer's temp files, and return the names removed. A missing record discards
    the whole folder's files. Call under the entry's lock (:func:`cached_folder` does)."""
    if not folder.is_dir():
        return []
    recorded = (_read_record(folder) or {}).get("files", {})
    for leftover in [path for path in folder.rglob(".*.tmp") if path.is_file()]:  # a killed writer's
        leftover.unlink(missing_ok=True)
    removed = []
    for relative, digest in folder_digests(folder).items():
        if recorded.get(relative) == digest:
            continue
        reason = "not recorded" if relative not in recorded else "damaged (sha256 differs from its record)"
        _warn(f"cache entry {folder / relative}: {reason}; discarded and rebuilt")
        (folder / relative).unlink(missing_ok=True)
        removed.append(relative)
    return removed


@contextmanager
def cached_folder(name: str) -> Iterator[Path]:
    """A verified folder entry for a library that fills it itself, held locked for the block.

    Before the block every file is checked against the record (damaged or unrecorded files removed, with a
    warning each); the library then reuses what is left and writes what is missing; after the block every file is
    recorded. Processes that start together wait for the first, which fills the folder once. A read-only cache
    yields a fresh temporary folder, removed afterwards (the run compiles uncached).
    """
    folder = cache_dir() / name
    with entry_lock(folder) as writable:
        if not writable or not _makedirs(folder):
            yield from _scratch_folder()
            return
        verify_folder(folder)
        remove_leftovers(folder)
        yield folder
        try:
            _write_record(folder, kind="folder", files=folder_digests(folder))
        except OSError:
            pass  # unrecorded files are discarded and rebuilt next time


def _makedirs(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _scratch_folder() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="landmark-edge-cache-") as scratch:
        yield Path(scratch)


@dataclass
class CacheEntry:
    """One entry as ``landmark-edge cache list`` shows it."""

    path: Path
    size: int
    status: str  # ok | damaged | unrecorded | other-version | temporary

    @property
    def prunable(self) -> bool:
        """Everything but a verified entry of this version (those are what runs reuse)."""
        return self.status != "ok"


def list_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every entry under the cache folder with its state (hashing each: what ``cache list`` and ``prune`` need)."""
    root = root or cache_dir()
    if not root.is_dir():
        return []
    entries = []
    for path in sorted(root.rglob("*")):
        if path.name.endswith((RECORD_SUFFIX, LOCK_SUFFIX)) or _inside_folder_entry(path, root):
            continue
        if _is_temporary(path):
            entries.append(CacheEntry(path, path.stat().st_size, "temporary"))
        elif path.is_file() or (path.is_dir() and record_path(path).is_file()):
            entries.append(CacheEntry(path, _size(path), _status(path)))
    return entries


def _inside_folder_entry(path: Path, root: Path) -> bool:
    return any(record_path(parent).is_file() for parent in path.parents if parent != root and root in parent.parents)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _status(path: Path) -> str:
    record = _read_record(path)
    if record is None:
        return "unrecorded"
    if record.get("landmark_edge_version") != __version__:
        return "other-version"  # made by another landmark-edge: never used by this one (names carry the version)
    if path.is_dir():
        return "ok" if folder_digests(path) == record.get("files") else "damaged"
    try:
        return "ok" if file_sha256(path) == record.get("sha256") else "damaged"
    except OSError:
        return "damaged"


def remove_entry(entry: CacheEntry) -> None:
    """Delete an entry and its record (a folder entry's files too); its lock file stays (another process may
    hold it; an empty lock file costs nothing)."""
    if entry.path.is_dir():
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        entry.path.unlink(missing_ok=True)
    record_path(entry.path).unlink(missing_ok=True)
