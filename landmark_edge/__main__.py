"""``python -m landmark_edge``: the CLI without the console script (e.g. from a source tree on PYTHONPATH)."""

from landmark_edge.cli import app

app(prog_name="landmark-edge")
