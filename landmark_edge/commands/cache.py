"""``landmark-edge cache``: what the cache folder holds (each entry verified), and clearing it out."""

from __future__ import annotations

from typing import Annotated

import typer

from landmark_edge.commands.options import fail, out_console
from landmark_edge.io.cache import CacheEntry, cache_dir, list_entries, remove_entry

ACTIONS = ("list", "prune", "clear")


def cache(
    action: Annotated[
        str,
        typer.Argument(
            help="list: every entry with its size and state (ok, damaged, unrecorded, other-version, temporary); "
            "prune: remove all but the verified entries of this version; clear: remove every entry."
        ),
    ] = "list",
) -> None:
    """The cache of graphs exported from weights (and compiled-model blobs): $LANDMARK_EDGE_CACHE, else
    $XDG_CACHE_HOME/landmark-edge, else ~/.cache/landmark-edge. Every entry is checked against its recorded
    sha256 before a run uses it; a damaged one is rebuilt on its own, so pruning is housekeeping, never a fix."""
    if action not in ACTIONS:
        fail(f"cache: unknown action '{action}' (choose from {', '.join(ACTIONS)})")
    entries = list_entries()
    if action == "list":
        _show(entries)
        return
    chosen = [entry for entry in entries if action == "clear" or entry.prunable]
    for entry in chosen:
        remove_entry(entry)
    freed = sum(entry.size for entry in chosen)
    typer.echo(f"removed {len(chosen)} of {len(entries)} entries from {cache_dir()} ({freed / 2**20:.1f} MiB)")


def _show(entries: list[CacheEntry]) -> None:
    console = out_console()
    root = cache_dir()
    for entry in entries:
        console.print(f"{entry.status:<13} {entry.size / 2**20:8.1f} MiB  {entry.path.relative_to(root)}",
                      soft_wrap=True, markup=False)  # fmt: skip
    total = sum(entry.size for entry in entries)
    console.print(f"{len(entries)} entries, {total / 2**20:.1f} MiB in {root}", soft_wrap=True, markup=False)
