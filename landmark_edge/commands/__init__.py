"""One module per CLI subcommand; :mod:`landmark_edge.cli` registers them on the Typer app."""
