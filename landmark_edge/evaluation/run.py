"""``evaluate``'s job: weights measured on a split, one anatomy after another, as one report.

Each anatomy gets its backend from :func:`~landmark_edge.backends.open_backend` (an anatomy the weights mark
unfit is opened too: measuring it is how it is found fit or unfit), its split read, and either the protocols
(:func:`~landmark_edge.evaluation.evaluate_split`) or every framing condition of a shift family
(:func:`~landmark_edge.evaluation.evaluate_shift`) computed. The command only checks its options and prints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from landmark_edge.anatomy import Anatomy
from landmark_edge.backends import BackendChoice, open_backend
from landmark_edge.data import load_split
from landmark_edge.evaluation.evaluate import PROTOCOLS, evaluate_split, write_overlays
from landmark_edge.evaluation.shifts import SHIFTS, evaluate_shift

__all__ = ["evaluate_weights"]


def evaluate_weights(
    data: Path,
    weights: Path,
    anatomies: list[Anatomy],
    choice: BackendChoice,
    split: str = "test",
    *,
    batch_size: int = 8,
    workers: int = 2,
    limit: int | None = None,
    shift: str = "none",
    overlays: Path | None = None,
    worst: int = 5,
    log: Callable[[str, str], None] = lambda label, message: print(label, message),
) -> tuple[dict, int]:
    """The report (``evaluate --out``'s JSON) and how many images could not be evaluated; ``log(label,
    message)`` hears each skipped image (``skipped:``) and each empty split (``note:``) as it is found."""
    report = {"weights": str(weights), "split": split, "data": str(data), "backend": choice.backend,
              "precision": choice.precision, "limit": limit, "anatomies": {}}  # fmt: skip
    if shift == "none":
        report["protocols"] = PROTOCOLS
    else:
        report["shift"] = {"family": shift, "conditions": {c.name: c.description for c in SHIFTS[shift]}}
    failed = 0
    for anatomy in anatomies:
        runner = open_backend(choice, weights, anatomy, max_batch_size=batch_size, require_fit=False)
        try:
            loaded = load_split(data, anatomy, split)
            loaded.samples = loaded.samples[:limit]
            if shift != "none":
                conditions = {c.name: evaluate_shift(runner, loaded, anatomy, c, batch_size, workers)
                              for c in SHIFTS[shift]}  # fmt: skip
                report["anatomies"][anatomy.name] = conditions
                failed += _log_failures(next(iter(conditions.values()))["failures"], log)
                continue
            evaluation = evaluate_split(runner, loaded, anatomy, batch_size, workers)
        finally:
            runner.close()
        failed += _log_failures(evaluation.failures, log)
        report["anatomies"][anatomy.name] = evaluation.report()
        if not evaluation.samples:
            log("note:", f"{anatomy.name}: the {split} split has no images under {data}")
        if overlays is not None:
            write_overlays(evaluation, overlays, worst)
    return report, failed


def _log_failures(lines: list[str], log: Callable[[str, str], None]) -> int:
    for line in lines:
        log("skipped:", line)
    return len(lines)
