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

__all__ = [
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
