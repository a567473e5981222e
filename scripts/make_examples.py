"""Copy one test-split image per anatomy into ``landmark_edge/examples/`` with its annotation.

    PYTHONPATH=. python scripts/make_examples.py [DATA_DIR]

The images are from each anatomy's *test* split (reference §6), so a model trained on the reference splits has
never seen them; ``labels.json`` holds their landmarks in original pixels as the dataset code reads them (head:
mean of the senior and junior annotations), for the shipped-weights sanity test.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from landmark_edge.data.sources import load_raw_split
from landmark_edge.io.atomic import atomic_write_text

EXAMPLES = Path(__file__).resolve().parents[1] / "landmark_edge" / "examples"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHOSEN = {"head": "151", "hand": "7081", "chest": "CHNCXR_0282_0"}  # the first test id of each split


def example_labels(data: Path) -> dict[str, dict]:
    """{anatomy: {file, id, landmarks}} for the chosen test images, read through the dataset code."""
    entries = {}
    for anatomy, sample_id in CHOSEN.items():
        sample = next(s for s in load_raw_split(data, anatomy, "test").samples if s.id == sample_id)
        entries[anatomy] = {
            "file": f"{anatomy}_{sample_id}{sample.image.suffix}",
            "id": sample_id,
            "landmarks": sample.landmarks.round(3).tolist(),
            "source": str(sample.image.relative_to(data)),
        }
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    data = parser.parse_args().data
    entries = example_labels(data)
    for entry in entries.values():
        shutil.copyfile(data / entry["source"], EXAMPLES / entry["file"])
    atomic_write_text(EXAMPLES / "labels.json", json.dumps(entries, indent=1) + "\n")
    print(f"wrote {len(entries)} examples to {EXAMPLES}")


if __name__ == "__main__":
    main()
