"""Print the size and aspect range of each anatomy's images in the shared data: the measurement behind the
registry's ``training_aspect`` and ``training_short_side`` (``landmark_edge/anatomy.py``).

    python scripts/image_geometry.py [DATA_DIR]

Only image headers are read. Chest: the training PNGs are 512 x 512 squares (the source resized the Shenzhen
frames), so ``originals_aspect/`` (the same frames at their original aspect) stands for the inputs users have.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FOLDERS = {"head": ["ISBI2015_ceph/raw"], "hand": ["hand/jpg"], "chest": ["chest/pngs", "chest/originals_aspect"]}


def geometry(folders: list[Path]) -> dict[str, float]:
    """(width / height) and short-side range over every image file in ``folders``."""
    sizes = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            with Image.open(path) as image:
                sizes.append(image.size)
    aspects = [w / h for w, h in sizes]
    return {"images": len(sizes), "aspect_min": min(aspects), "aspect_max": max(aspects),
            "short_side_min": min(min(s) for s in sizes), "short_side_max": max(min(s) for s in sizes)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    data = parser.parse_args().data
    for name, folders in FOLDERS.items():
        stats = geometry([data / folder for folder in folders])
        print(name, ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
