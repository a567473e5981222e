"""``landmark-edge bench``: every backend against the eager fp32 reference, in one process, on real images.

:mod:`.runner` measures (latency, stage split, memory, drift), :mod:`.stats` holds the arithmetic,
:mod:`.results` the report's schema, :mod:`.environment` the machine header and :mod:`.report` the outputs.
"""

from landmark_edge.bench.results import BenchReport, BenchRow
from landmark_edge.bench.runner import BenchConfig, BenchSpec, parse_specs, run_bench

__all__ = ["BenchConfig", "BenchReport", "BenchRow", "BenchSpec", "parse_specs", "run_bench"]
