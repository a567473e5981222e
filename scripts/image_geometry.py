"""Print the size and aspect range of each anatomy's images in the shared data: the measurement behind the
registry's ``training_aspect`` and ``training_short_side`` (``landmark_edge/anatomy.py``).

    python scripts/image_geometry.py [DATA_DIR]

Only image headers are read. Each anatomy's images are the ones its registry entry's dataset spec lists, so a
new anatomy is measured without touching this script. Chest: the training PNGs are 512 x 512 squares (the
source resized the Shenzhen frames), so ``originals_aspect/`` (the same frames at their original aspect) is
measured too: it stands for the inputs users have.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from landmark_edge.anatomy import ANATOMIES, Anatomy
from landmark_edge.data.sources import spec_of

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXTRA_FOLDERS = {"chest": ["chest/originals_aspect"]}  # measured beside the dataset's own images (see above)


def image_paths(data: Path, anatomy: Anatomy) -> list[Path]:
    """The anatomy's dataset images (as its spec lists them) and those of its extra folders."""
    spec = spec_of(anatomy)
    images = list(spec.list_ids(data / spec.folder)[1].values())
    extra = [sorted((data / folder).iterdir()) for folder in EXTRA_FOLDERS.get(anatomy.name, [])]
    return images + [path for paths in extra for path in paths]


def geometry(paths: list[Path]) -> dict[str, float]:
    """(width / height) and short-side range over the image files ``paths``."""
    sizes = []
    for path in paths:
        with Image.open(path) as image:
            sizes.append(image.size)
    aspects = [w / h for w, h in sizes]
    return {"images": len(sizes), "aspect_min": min(aspects), "aspect_max": max(aspects),
            "short_side_min": min(min(s) for s in sizes), "short_side_max": max(min(s) for s in sizes)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    data = parser.parse_args().data
    for name, anatomy in ANATOMIES.items():
        stats = geometry(image_paths(data, anatomy))
        print(name, ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
