"""Write ``landmark_edge/layouts.json``: each anatomy's typical landmark layout, from the shared label files.

    python scripts/make_layouts.py [DATA_DIR] [-o landmark_edge/layouts.json]

Head: mean of the senior and junior ISBI 2015 annotations (pixels); hand: ``all.csv`` (pixels); chest: the
normalised label files. The affine fit makes the frame irrelevant (pixels or fractions of the image size).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from landmark_edge.anatomy import ANATOMIES
from landmark_edge.data.sources import all_labels
from landmark_edge.io.atomic import atomic_write_text
from landmark_edge.flag_thresholds import CALIBRATED_FIELDS
from landmark_edge.plausibility import LAYOUTS_FILE, fit_layout

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def label_shapes(data: Path) -> dict[str, np.ndarray]:
    """(N, C, 2) label arrays per anatomy: every hand-label row, images present or not."""
    return {name: all_labels(data, name) for name in ANATOMIES}


def layouts_document(data: Path) -> dict:
    anatomies = {}
    for name, shapes in label_shapes(data).items():
        layout = fit_layout(shapes)
        anatomies[name] = {
            "mean": np.round(layout.mean, 5).tolist(),
            "threshold": round(layout.threshold, 4),
            "labels": len(shapes),
        }
    return {"source": "scripts/make_layouts.py over the shared data labels", "anatomies": anatomies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("-o", "--out", type=Path, default=LAYOUTS_FILE)
    args = parser.parse_args()
    document = layouts_document(args.data)
    if args.out.is_file():  # keep the thresholds fitted on trained weights (flag_thresholds)
        for name, entry in json.loads(args.out.read_text())["anatomies"].items():
            if "calibrated" in entry and name in document["anatomies"]:
                document["anatomies"][name] |= {k: entry[k] for k in CALIBRATED_FIELDS}
    atomic_write_text(args.out, json.dumps(document, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
