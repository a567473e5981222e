"""Inference results: one :class:`ImageResult` per image, or an :class:`ImageFailure` saying why not.

``records`` holds the two, ``formats`` the aggregate files of a run (JSON, JSONL, CSV, Parquet), ``store`` the
per-image files a folder run resumes from, ``drawing`` the overlays; each imports only what it needs.
"""

from landmark_edge.results.drawing import display_image, write_overlay
from landmark_edge.results.formats import (
    CSV_COLUMNS,
    csv_columns,
    landmark_rows,
    to_csv,
    to_json,
    to_jsonl_line,
    write_parquet,
)
from landmark_edge.results.records import ImageFailure, ImageResult, Landmark, Measurement, Outcome
from landmark_edge.results.store import JsonlResults, ResultStore, Reuse, made_from, reusable

__all__ = [
    "CSV_COLUMNS", "ImageFailure", "ImageResult", "JsonlResults", "Landmark", "Measurement", "Outcome", "ResultStore", "Reuse",
    "csv_columns", "display_image", "landmark_rows", "made_from", "reusable", "to_csv", "to_json", "to_jsonl_line",
    "write_overlay", "write_parquet",
]  # fmt: skip
