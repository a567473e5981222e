"""``python -m landmark_edge``: the CLI without the console script (e.g. from a source tree on PYTHONPATH)."""

from landmark_edge.cli import run

run()
