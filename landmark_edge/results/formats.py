"""The aggregate formats of a run: JSON, JSONL, CSV (a row per landmark) and Parquet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from landmark_edge.contracts import RUN_COLUMNS
from landmark_edge.errors import LandmarkEdgeError
from landmark_edge.io.atomic import atomic_path
from landmark_edge.results.records import ImageResult, Outcome

CSV_COLUMNS = [
    "path", "anatomy", "index", "name", "x", "y", "x_mm", "y_mm", "confidence", "grid_x", "grid_y", "flags",
]  # fmt: skip


def to_json(outcomes: list[Outcome]) -> str:
    return json.dumps([o.to_dict() for o in outcomes], indent=2) + "\n"


def to_jsonl_line(outcome: Outcome) -> str:
    return json.dumps(outcome.to_dict()) + "\n"


def csv_columns(outcomes: list[Outcome]) -> list[str]:
    """:data:`CSV_COLUMNS`, plus ``<NAME>`` and ``<NAME>_class`` per measurement when the results carry them, then
    the run record's ``run_*`` columns (:class:`~landmark_edge.contracts.RunInfo`) when they carry one: new columns
    go last, so a reader of the older columns by name or position still reads them."""
    results = [o for o in outcomes if isinstance(o, ImageResult)]
    names = next(([m.name for m in r.measurements] for r in results if r.measurements), [])
    run = RUN_COLUMNS if any(r.run is not None for r in results) else []
    return CSV_COLUMNS + [column for name in names for column in (name, f"{name}_class")] + run


def landmark_rows(outcomes: list[Outcome]) -> Iterator[dict]:
    """One row per landmark of every successful image; failures have no rows.

    With measurements, each image's rows also carry ``<NAME>`` (value, None when undefined) and ``<NAME>_class``
    columns, and with a run record its ``run_*`` columns, repeated on its landmark rows as ``path`` and ``flags``
    are. None is an empty CSV cell and a Parquet null.
    """
    for outcome in outcomes:
        if not isinstance(outcome, ImageResult):
            continue
        measured = {}
        for m in outcome.measurements or []:
            measured |= {m.name: m.value, f"{m.name}_class": m.class_}
        run = {} if outcome.run is None else outcome.run.columns()
        flags = "; ".join(outcome.flags)
        for landmark in outcome.landmarks:
            row = {k: v for k, v in asdict(landmark).items() if k in CSV_COLUMNS}
            yield {"path": outcome.path, "anatomy": outcome.anatomy, **row, "flags": flags, **measured, **run}


def to_csv(outcomes: list[Outcome]) -> str:
    """One row per landmark of every successful image (failures are reported on stderr, not here)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(outcomes), lineterminator="\n")
    writer.writeheader()
    writer.writerows(landmark_rows(outcomes))
    return buffer.getvalue()


def write_parquet(outcomes: list[Outcome], path: Path) -> None:
    """The CSV's rows and columns (measurements and run record included) as a Parquet table (pyarrow, which the
    ``ray`` extra brings), written atomically."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LandmarkEdgeError('--format parquet needs pyarrow: pip install "landmark-edge[ray]"') from None
    table = pa.Table.from_pylist(list(landmark_rows(outcomes)), schema=_parquet_schema(pa, csv_columns(outcomes)))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _parquet_schema(pa, columns: list[str]):
    """Each CSV column's type: text, integers (landmark index, measurement classes, record version), else float."""
    text = {"path", "anatomy", "name", "flags", *RUN_COLUMNS} - {"run_format_version"}
    integers = {"index", "run_format_version"} | {c for c in columns if c.endswith("_class")}
    return pa.schema([
        (column, pa.string() if column in text else pa.int32() if column in integers else pa.float64())
        for column in columns
    ])  # fmt: skip

