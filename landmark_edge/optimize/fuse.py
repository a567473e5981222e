"""The inference-graph rewrite: one anatomy, every BatchNorm folded, each separable pair fused into one module.

GU2Net's local branch is 18 (depthwise 3x3 -> pointwise 1x1 -> BN -> LeakyReLU) stages and its global branch five
(dilated 3x3 -> BN -> ReLU) stages. At inference BN is an affine map, so each stage collapses to

* :class:`FusedSeparableConv`: ``leaky_relu(pw'(dw'(x)) + b')``. The depthwise bias is constant over the image
  (zero padding applies to ``x``, not to the depthwise output), so it passes through the pointwise weights into
  the pointwise bias, ``b_pw + W_pw @ b_dw``; BN then scales the pointwise rows and shifts the bias. What is left
  is a bias-free depthwise conv feeding one GEMM + bias + activation, the shape the fused Triton kernel computes
  without writing the depthwise output to memory.
* :class:`FusedConvReLU`: ``relu(conv'(x) + b')`` with BN folded into the dilated conv.

The fused modules are drop-in replacements inside a single-anatomy :class:`GU2Net`, so the network's forward
(skips, up-sampling, the global branch's sub-sampling) stays the one in :mod:`landmark_edge.model.gu2net`.
Folding is done in float64 and rounded once, so the fp32 rewrite matches the eager model to float tolerance.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from landmark_edge.model.gu2net import DilatedConvBNReLU, GU2Net, SeparableDoubleConv, SingleAnatomy
from landmark_edge.optimize import triton_kernels


class Kernels(str, Enum):
    """Which implementation the fused modules run: cuDNN (two convs, any device) or the fused Triton kernels."""

    AUTO = "auto"  # Triton on CUDA tensors when Triton is installed, else cuDNN
    TRITON = "triton"
    CUDNN = "cudnn"


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``bn(conv(x))`` as one conv: scale the output rows of ``weight`` and shift ``bias`` (float64 in and out)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    folded_weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    folded_bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
    return folded_weight, folded_bias


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` computing ``bn(conv(x))`` in eval mode, folded in float64 and rounded once.

    The one BatchNorm folding of the package: the ONNX export (:func:`landmark_edge.export.onnx.fold_batchnorm`)
    and the fused inference modules below share its numerics.
    """
    with torch.no_grad():
        weight = conv.weight.double()
        bias = conv.bias.double() if conv.bias is not None else weight.new_zeros(weight.shape[0])
        weight, bias = _fold_bn(weight, bias, bn)
    folded = copy.deepcopy(conv).eval()
    folded.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    folded.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    return folded


def _frozen(tensor: torch.Tensor, like: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor.to(like.dtype).contiguous(), requires_grad=False)


def _use_triton(kernels: Kernels, x: torch.Tensor) -> bool:
    if kernels is Kernels.CUDNN:
        return False
    if kernels is Kernels.TRITON:
        return True
    return x.is_cuda and triton_kernels.IMPORTED  # decided per tensor, so one rewrite serves CPU and CUDA


class FusedSeparableConv(nn.Module):
    """``leaky_relu(pointwise(depthwise3x3(x)) + bias)``: a separable stage with its BN and biases folded in."""

    def __init__(
        self,
        depthwise_weight: torch.Tensor,
        pointwise_weight: torch.Tensor,
        bias: torch.Tensor,
        negative_slope: float,
        kernels: Kernels = Kernels.CUDNN,
    ) -> None:
        super().__init__()
        self.depthwise_weight = nn.Parameter(depthwise_weight, requires_grad=False)  # (C_in, 1, 3, 3)
        self.pointwise_weight = nn.Parameter(pointwise_weight, requires_grad=False)  # (C_out, C_in, 1, 1)
        self.bias = nn.Parameter(bias, requires_grad=False)  # (C_out,)
        self.negative_slope = negative_slope
        self.kernels = kernels

    @classmethod
    def from_eager(
        cls, depthwise: nn.Conv2d, pointwise: nn.Conv2d, bn: nn.BatchNorm2d, negative_slope: float
    ) -> FusedSeparableConv:
        pw = pointwise.weight.double()
        bias = pointwise.bias.double() + pw[:, :, 0, 0] @ depthwise.bias.double()
        pw, bias = _fold_bn(pw, bias, bn)
        ref = pointwise.weight
        return cls(_frozen(depthwise.weight, ref), _frozen(pw, ref), _frozen(bias, ref), negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_triton(self.kernels, x):
            return triton_kernels.fused_separable(
                x, self.depthwise_weight, self.pointwise_weight, self.bias, self.negative_slope
            )
        y = F.conv2d(x, self.depthwise_weight, None, padding=1, groups=x.shape[1])
        return F.leaky_relu(F.conv2d(y, self.pointwise_weight, self.bias), self.negative_slope)


class FusedDoubleConv(nn.Module):
    """Two fused separable stages; ``forward(x, anatomy)`` so it drops into :class:`UniversalUNet` unchanged."""

    def __init__(self, stage1: FusedSeparableConv, stage2: FusedSeparableConv) -> None:
        super().__init__()
        self.stage1 = stage1
        self.stage2 = stage2

    @classmethod
    def from_eager(cls, block: SeparableDoubleConv, anatomy: str) -> FusedDoubleConv:
        slope = block.negative_slope
        return cls(
            FusedSeparableConv.from_eager(block.depthwise1[anatomy], block.pointwise1, block.norm1[anatomy], slope),
            FusedSeparableConv.from_eager(block.depthwise2[anatomy], block.pointwise2, block.norm2[anatomy], slope),
        )

    def forward(self, x: torch.Tensor, anatomy: str | None = None) -> torch.Tensor:  # anatomy: already bound
        return self.stage2(self.stage1(x))


class FusedConvReLU(nn.Module):
    """``relu(conv3x3_dilated(x) + bias)``: a global-branch stage with its BN folded in."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, dilation: int, kernels: Kernels = Kernels.CUDNN):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # (C_out, C_in, 3, 3)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.dilation = dilation
        self.kernels = kernels

    @classmethod
    def from_eager(cls, stage: DilatedConvBNReLU) -> FusedConvReLU:
        weight, bias = _fold_bn(stage.conv.weight.double(), stage.conv.bias.double(), stage.bn)
        ref = stage.conv.weight
        return cls(_frozen(weight, ref), _frozen(bias, ref), stage.conv.dilation[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_triton(self.kernels, x):
            return triton_kernels.dilated_conv_relu(x, self.weight, self.bias, self.dilation)
        return F.relu(F.conv2d(x, self.weight, self.bias, padding=self.dilation, dilation=self.dilation))


class InferenceGU2Net(SingleAnatomy):
    """A rewritten single-anatomy GU2Net: ``forward(x)`` takes float32 (B, 1, H, W), returns float32 heatmaps.

    The cast to the compute dtype and memory format happens inside, so callers (backends, the ``.pt2``
    artefact) always feed and receive float32 whatever precision the network runs at.
    """

    def __init__(self, model: GU2Net, anatomy: str, dtype: torch.dtype, channels_last: bool) -> None:
        super().__init__(model, anatomy)
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype).contiguous(memory_format=self.memory_format)
        return super().forward(x).float().contiguous()

    def set_kernels(self, kernels: Kernels | str) -> None:
        """Switch every fused module between the Triton kernels and cuDNN (Triton: only where it can run)."""
        if Kernels(kernels) is Kernels.TRITON:
            triton_kernels.require()
        for module in self.modules():
            if isinstance(module, FusedSeparableConv | FusedConvReLU):
                module.kernels = Kernels(kernels)


def select_anatomy(model: GU2Net, anatomy: str) -> GU2Net:
    """A GU2Net holding only ``anatomy``'s head and the shared weights (same parameter names, so a plain copy)."""
    if anatomy not in model.num_landmarks:
        raise KeyError(f"this GU2Net has no '{anatomy}' head (it has: {', '.join(model.num_landmarks)})")
    config = {**model.config, "num_landmarks": {anatomy: model.num_landmarks[anatomy]}}
    single = GU2Net(**config)
    full = model.state_dict()
    single.load_state_dict({key: full[key] for key in single.state_dict()})
    return single.to(next(model.parameters()).device).eval()


def rewrite_for_inference(
    model: GU2Net,
    anatomy: str,
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    kernels: Kernels | str = Kernels.CUDNN,
) -> InferenceGU2Net:
    """Fold, fuse and keep one anatomy; cast to ``dtype`` and ``channels_last`` when asked. ``model`` is untouched."""
    single = select_anatomy(model, anatomy)
    with torch.no_grad():
        for parent in list(single.modules()):
            for name, child in parent.named_children():
                if isinstance(child, SeparableDoubleConv):
                    setattr(parent, name, FusedDoubleConv.from_eager(child, anatomy))
                elif isinstance(child, DilatedConvBNReLU):
                    setattr(parent, name, FusedConvReLU.from_eager(child))
    rewritten = InferenceGU2Net(single, anatomy, dtype, channels_last).eval()
    rewritten.set_kernels(kernels)
    return rewritten.to(dtype=dtype, memory_format=rewritten.memory_format)


class _OpCounter(TorchDispatchMode):
    """Counts the ATen operators a forward executes (after autograd and composite decomposition)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@dataclass
class GraphSummary:
    """Parameters and executed operators of one forward: what the rewrite removed is visible at a glance."""

    parameters: int
    modules: dict[str, int] = field(default_factory=dict)  # leaf module class -> count
    aten_ops: dict[str, int] = field(default_factory=dict)  # ATen operator -> calls per forward


@torch.inference_mode()
def summarize(module: nn.Module, example: torch.Tensor, *args) -> GraphSummary:
    """Count parameters, leaf modules and the ATen operators one forward of ``module(example, *args)`` runs."""
    leaves = Counter(type(m).__name__ for m in module.modules() if not list(m.children()))
    with _OpCounter() as counter:
        module(example, *args)
    return GraphSummary(
        parameters=sum(p.numel() for p in module.parameters()),
        modules=dict(sorted(leaves.items())),
        aten_ops=dict(sorted(counter.counts.items())),
    )
