"""Training checkpoints stored as parts of bounded size, committed by an atomically written manifest.

A run moves between machines in chunks (a remote GPU may only take files up to 16 MiB), so a checkpoint is
always written as ``checkpoint-<iteration>.pt.NNN`` parts plus ``checkpoint.json`` naming them with their sizes
and sha256. The manifest is written last and atomically, so a kill at any moment leaves the previous complete
checkpoint in force; parts of older generations are deleted only after the new manifest is in place. Loading
re-joins and verifies the parts. The payload is a plain ``torch.save`` dict loaded with ``weights_only=True``
(RNG states are stored as tensors and lists), so reading a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from landmark_edge.errors import LandmarkEdgeError
from landmark_edge.io.atomic import atomic_open, atomic_write_text

MANIFEST = "checkpoint.json"
DEFAULT_PART_MIB = 16


class CheckpointError(LandmarkEdgeError):
    """A run directory holds no usable checkpoint; the message names the file and the problem."""


def split_bytes(payload: bytes, part_bytes: int) -> list[bytes]:
    """Cut ``payload`` into pieces of at most ``part_bytes`` (at least one piece, even when empty)."""
    if part_bytes <= 0:
        raise ValueError("part size must be positive")
    return [payload[i : i + part_bytes] for i in range(0, max(len(payload), 1), part_bytes)]


def save_checkpoint(run_dir: Path, state: dict[str, Any], part_mib: float = DEFAULT_PART_MIB) -> Path:
    """Write ``state`` as parts and commit it; returns the manifest path."""
    run_dir = Path(run_dir)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    stem = f"checkpoint-{int(state.get('iteration', 0)):08d}.pt"
    parts = []
    for number, piece in enumerate(split_bytes(payload, int(part_mib * 2**20))):
        name = f"{stem}.{number:03d}"
        with atomic_open(run_dir / name, "wb") as handle:
            handle.write(piece)
        parts.append({"file": name, "bytes": len(piece), "sha256": hashlib.sha256(piece).hexdigest()})
    manifest = {"format": "landmark-edge-checkpoint", "version": 1, "bytes": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(), "parts": parts}
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    keep = {p["file"] for p in parts}
    for stale in run_dir.glob("checkpoint-*.pt.*"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return run_dir / MANIFEST


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / MANIFEST).is_file()


def read_checkpoint_bytes(run_dir: Path) -> bytes:
    """Join and verify the committed parts."""
    path = Path(run_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        parts = manifest["parts"]
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: no readable checkpoint manifest ({error})") from None
    chunks = []
    for part in parts:
        part_path = path.parent / part["file"]
        try:
            piece = part_path.read_bytes()
        except OSError:
            raise CheckpointError(f"{part_path}: checkpoint part missing") from None
        if hashlib.sha256(piece).hexdigest() != part["sha256"]:
            raise CheckpointError(f"{part_path}: checkpoint part corrupt (sha256 mismatch)")
        chunks.append(piece)
    payload = b"".join(chunks)
    if hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
        raise CheckpointError(f"{path}: joined checkpoint does not match its sha256")
    return payload


def load_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    payload = read_checkpoint_bytes(run_dir)
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
