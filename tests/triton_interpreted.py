"""Run by tests/test_optimize.py in a subprocess with TRITON_INTERPRET=1 (it must be set before Triton is
imported): the Triton kernels on CPU tensors vs the cuDNN-path modules. Prints one JSON object of max errors."""

import json
import sys

import torch
import torch.nn.functional as F

from landmark_edge.model import gu2net
from landmark_edge.optimize import Kernels, rewrite_for_inference
from landmark_edge.optimize import triton_kernels as tk

# (batch, C_in, C_out, H, W): odd sizes, batch 1, channel counts that are not multiples of the 16-wide tiles
SHAPES = [(1, 3, 5, 7, 9), (2, 20, 33, 5, 6), (1, 1, 17, 4, 3)]


def main() -> dict:
    torch.manual_seed(0)
    errors = {}
    for n, c_in, c_out, h, w in SHAPES:
        x = torch.randn(n, c_in, h, w)
        dw, pw, bias = torch.randn(c_in, 1, 3, 3), torch.randn(c_out, c_in, 1, 1), torch.randn(c_out)
        ref = F.leaky_relu(F.conv2d(F.conv2d(x, dw, None, padding=1, groups=c_in), pw, bias), 0.01)
        for layout in ("nchw", "nhwc"):
            xin = x.contiguous(memory_format=torch.channels_last) if layout == "nhwc" else x
            out = tk.fused_separable(xin, dw, pw, bias, 0.01)
            errors[f"separable {n}x{c_in}->{c_out}x{h}x{w} {layout}"] = _relative(out, ref)
        for dilation in (1, 2, 5):
            weight = torch.randn(c_out, c_in, 3, 3)
            ref = F.relu(F.conv2d(x, weight, bias, padding=dilation, dilation=dilation))
            errors[f"dilated d{dilation} {n}x{c_in}->{c_out}x{h}x{w}"] = _relative(
                tk.dilated_conv_relu(x, weight, bias, dilation), ref
            )
    model = gu2net(["chest"], local_widths=(4, 4, 8, 8, 8), global_width=8).eval()
    net = rewrite_for_inference(model, "chest")
    x = torch.randn(1, 1, 32, 48)
    with torch.inference_mode():
        cudnn = net(x)
        net.set_kernels(Kernels.TRITON)
        errors["rewritten network triton vs cudnn"] = float((net(x) - cudnn).abs().max())
    return errors


def _relative(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6))


if __name__ == "__main__":
    json.dump(main(), sys.stdout)
