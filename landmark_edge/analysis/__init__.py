"""Clinical analysis of detected landmarks: the ISBI 2015 cephalometric measurements and their classes."""

from landmark_edge.analysis.cephalometry import MEASUREMENTS, Bands, Definition, measure, measure_points, supports
from landmark_edge.analysis.render import measurement_drawer, measurement_table

__all__ = [
    "MEASUREMENTS", "Bands", "Definition", "measure", "measure_points", "supports", "measurement_drawer",
    "measurement_table",
]  # fmt: skip
