"""Inference optimisation: the graph rewrite (BN folding, fused separable and dilated stages) and Triton kernels."""

from landmark_edge.optimize.fuse import (
    FusedConvReLU,
    FusedDoubleConv,
    FusedSeparableConv,
    GraphSummary,
    InferenceGU2Net,
    Kernels,
    rewrite_for_inference,
    select_anatomy,
    summarize,
)

# Inductor's documented switches for what it prints while autotuning (the AUTOTUNE tables, the choice statistics);
# shared by the compiled backend and the .pt2 export.
QUIET_INDUCTOR = {"autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}

__all__ = [
    "QUIET_INDUCTOR",
    "FusedConvReLU",
    "FusedDoubleConv",
    "FusedSeparableConv",
    "GraphSummary",
    "InferenceGU2Net",
    "Kernels",
    "rewrite_for_inference",
    "select_anatomy",
    "summarize",
]
