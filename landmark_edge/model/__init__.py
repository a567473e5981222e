"""GU2Net and its building blocks."""

from landmark_edge.model.gu2net import GU2Net, SingleAnatomy, gu2net

__all__ = ["GU2Net", "SingleAnatomy", "gu2net"]
