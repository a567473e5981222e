"""Datasets (head/ISBI 2015, hand, chest) in the raw or packed layout, reference splits and heatmap targets."""

from landmark_edge.data.augment import Augmentation
from landmark_edge.data.dataset import Batch, GridDataset, grid_label, read_framed, subpixel_grid_label
from landmark_edge.data.heatmaps import SIGMA, gaussian_mask, render_heatmaps
from landmark_edge.data.packed import is_packed, load_split, pack
from landmark_edge.data.sources import SPLITS, DatasetError, Sample, SplitData, load_raw_split

__all__ = [
    "SIGMA", "SPLITS", "Augmentation", "Batch", "DatasetError", "GridDataset", "Sample", "SplitData", "gaussian_mask",
    "grid_label", "is_packed", "load_raw_split", "load_split", "pack", "read_framed", "render_heatmaps",
    "subpixel_grid_label",
]  # fmt: skip
