"""GU2Net and its building blocks."""

from landmark_edge.model.gu2net import SHARED, GU2Net, SingleAnatomy, gu2net, tensor_owners

__all__ = ["SHARED", "GU2Net", "SingleAnatomy", "gu2net", "tensor_owners"]
