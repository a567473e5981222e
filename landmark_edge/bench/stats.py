"""The arithmetic of a benchmark row, kept apart so it is tested with known inputs."""

from __future__ import annotations

import numpy as np

from landmark_edge.bench.results import Drift, LatencyStats


def latency_stats(samples_ms: list[float] | np.ndarray) -> LatencyStats:
    """p50/p90/p99/mean of per-batch latencies; percentiles interpolate linearly between order statistics."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return LatencyStats(p50=float(p50), p90=float(p90), p99=float(p99), mean=float(values.mean()))


def throughput(batch_size: int, samples_ms: list[float] | np.ndarray) -> float:
    """Images per second over all timed batches (total images / total time, not a mean of rates)."""
    return batch_size * len(samples_ms) / (float(np.sum(samples_ms)) / 1e3)


def landmark_drift(
    reference_xy: np.ndarray,
    candidate_xy: np.ndarray,
    spacing_mm: np.ndarray | None = None,
    max_heatmap_diff: float | None = None,
) -> Drift:
    """How far a backend's landmarks (N, C, 2) moved from the reference's, in original pixels and millimetres.

    ``spacing_mm`` is (N, 2) mm per original pixel (x, y), or None where the images have no physical spacing.
    ``max_heatmap_diff`` comes from :func:`heatmap_difference`, image by image as the backend returns them.
    """
    delta = np.asarray(candidate_xy, np.float64) - np.asarray(reference_xy, np.float64)
    shift_px = np.linalg.norm(delta, axis=-1)
    shift_mm = None if spacing_mm is None else np.linalg.norm(delta * np.asarray(spacing_mm)[:, None, :], axis=-1)
    return Drift(
        images=int(delta.shape[0]),
        max_px=float(shift_px.max()),
        mean_px=float(shift_px.mean()),
        max_mm=None if shift_mm is None else float(shift_mm.max()),
        mean_mm=None if shift_mm is None else float(shift_mm.mean()),
        max_heatmap_diff=max_heatmap_diff,
    )


def heatmap_difference(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The largest absolute difference of any heatmap value (probabilities in [0, 1]) of one image. Taken per image
    so that no candidate's heatmaps are kept: 250 head images' are 4 GB, and a stack of both plus a float64
    difference ran a 24 GiB machine out of memory."""
    return float(np.abs(np.asarray(candidate, np.float32) - reference).max())
