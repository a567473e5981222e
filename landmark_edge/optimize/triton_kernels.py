"""Triton kernels for GU2Net's two hot stages (optional: ``pip install "landmark-edge[triton]"``).

* :func:`fused_separable`: depthwise 3x3 (bias folded away) feeding the pointwise 1x1 GEMM + bias + LeakyReLU in
  one pass. Each program computes the depthwise output of a (pixels x input-channels) tile in registers and feeds
  it straight to ``tl.dot``, so the depthwise activation is never written to memory -- at full resolution that
  write and re-read is most of the separable stage's cost with cuDNN.
* :func:`dilated_conv_relu`: a dilated 3x3 convolution as an implicit GEMM (nine shifted tiles of the input
  times the tap's weights) + bias + ReLU.

Both read any memory layout through strides (NCHW or channels_last, weights in PyTorch's own layout), accumulate in
fp32 and store in the input dtype. They are registered with :func:`torch.library.triton_op`, so ``torch.compile``,
``torch.export`` and AOTInductor trace into them instead of treating them as opaque. On CUDA the launch is
autotuned; CPU tensors only run under Triton's interpreter (``TRITON_INTERPRET=1``, set before import), with one
fixed configuration -- that is how CI checks them without a GPU.
"""

from __future__ import annotations

import os

import torch

from landmark_edge.errors import LandmarkEdgeError

try:
    import triton
    import triton.language as tl
except ImportError as error:  # Triton is an optional extra
    triton = None
    IMPORTED = False
    _IMPORT_ERROR = f"Triton is not installed ({error}); pip install 'landmark-edge[triton]'"
else:
    IMPORTED = True
    _IMPORT_ERROR = ""


class TritonUnavailable(LandmarkEdgeError):
    """The Triton kernels cannot run here; the message says why."""


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason() -> str:
    """Why the kernels cannot run here, or ``""`` when they can (CUDA, or CPU tensors under the interpreter)."""
    if triton is None:
        return _IMPORT_ERROR
    if not (torch.cuda.is_available() or interpreting()):
        return "Triton kernels need a CUDA GPU (or TRITON_INTERPRET=1 for a slow CPU check)"
    return ""


def available() -> bool:
    return not unavailable_reason()


def require() -> None:
    if reason := unavailable_reason():
        raise TritonUnavailable(reason)


if triton is not None:
    # Inputs (N, C, H, W) are addressed through strides; weights keep PyTorch's conv layout and strides.
    # Both kernels run one program per (pixel tile, output-channel tile, image): the two helpers below are
    # where they start and end (inlined by Triton, so they cost nothing).

    @triton.jit
    def _tile(C_out, H, W, BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr):
        """This program's pixels and output channels, their masks, the pixels' rows and columns, the image."""
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        co = tl.program_id(1) * BLOCK_CO + tl.arange(0, BLOCK_CO)
        return p, co, p < H * W, co < C_out, p // W, p % W, tl.program_id(2).to(tl.int64)

    @triton.jit
    def _store_tile(y_n, acc, h, w, co, p_ok, co_ok, syc, syh, syw):
        """Write the fp32 accumulator tile into image ``y_n`` of the output, in the output's dtype."""
        tl.store(
            y_n + h[:, None] * syh + w[:, None] * syw + co[None, :] * syc,
            acc.to(y_n.dtype.element_ty), mask=p_ok[:, None] & co_ok[None, :],
        )  # fmt: skip

    @triton.jit
    def _separable_kernel(
        x_ptr, dw_ptr, pw_ptr, b_ptr, y_ptr,
        C_in, C_out, H, W,
        sxn, sxc, sxh, sxw,
        sdc, sdh, sdw,
        spo, spi,
        syn, syc, syh, syw,
        negative_slope,
        BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, IEEE: tl.constexpr,
    ):  # fmt: skip
        p, co, p_ok, co_ok, h, w, n = _tile(C_out, H, W, BLOCK_P, BLOCK_CO)
        x_n = x_ptr + n * sxn
        acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        for ci0 in range(0, C_in, BLOCK_CI):
            ci = ci0 + tl.arange(0, BLOCK_CI)
            ci_ok = ci < C_in
            depthwise = tl.zeros((BLOCK_P, BLOCK_CI), dtype=tl.float32)
            for tap in tl.static_range(9):
                hh, ww = h + (tap // 3 - 1), w + (tap % 3 - 1)
                inside = p_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                xv = tl.load(
                    x_n + hh[:, None] * sxh + ww[:, None] * sxw + ci[None, :] * sxc,
                    mask=inside[:, None] & ci_ok[None, :], other=0.0,
                )  # fmt: skip
                wv = tl.load(dw_ptr + ci * sdc + (tap // 3) * sdh + (tap % 3) * sdw, mask=ci_ok, other=0.0)
                depthwise += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
            pw = tl.load(
                pw_ptr + co[None, :] * spo + ci[:, None] * spi, mask=ci_ok[:, None] & co_ok[None, :], other=0.0
            )
            if IEEE:
                acc = tl.dot(depthwise.to(pw.dtype), pw, acc, input_precision="ieee")
            else:
                acc = tl.dot(depthwise.to(pw.dtype), pw, acc)
        acc += tl.load(b_ptr + co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
        acc = tl.where(acc >= 0, acc, acc * negative_slope)
        _store_tile(y_ptr + n * syn, acc, h, w, co, p_ok, co_ok, syc, syh, syw)

    @triton.jit
    def _dilated_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr,
        C_in, C_out, H, W,
        sxn, sxc, sxh, sxw,
        swo, swi, swh, sww,
        syn, syc, syh, syw,
        DILATION: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, IEEE: tl.constexpr,
    ):  # fmt: skip
        p, co, p_ok, co_ok, h, w, n = _tile(C_out, H, W, BLOCK_P, BLOCK_CO)
        x_n = x_ptr + n * sxn
        acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        for tap in tl.static_range(9):
            hh, ww = h + (tap // 3 - 1) * DILATION, w + (tap % 3 - 1) * DILATION
            inside = p_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            for ci0 in range(0, C_in, BLOCK_CI):
                ci = ci0 + tl.arange(0, BLOCK_CI)
                ci_ok = ci < C_in
                xv = tl.load(
                    x_n + hh[:, None] * sxh + ww[:, None] * sxw + ci[None, :] * sxc,
                    mask=inside[:, None] & ci_ok[None, :], other=0.0,
                )  # fmt: skip
                wv = tl.load(
                    w_ptr + co[None, :] * swo + ci[:, None] * swi + (tap // 3) * swh + (tap % 3) * sww,
                    mask=ci_ok[:, None] & co_ok[None, :], other=0.0,
                )  # fmt: skip
                if IEEE:
                    acc = tl.dot(xv, wv, acc, input_precision="ieee")
                else:
                    acc = tl.dot(xv, wv, acc)
        acc += tl.load(b_ptr + co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
        acc = tl.maximum(acc, 0.0)
        _store_tile(y_ptr + n * syn, acc, h, w, co, p_ok, co_ok, syc, syh, syw)

    def _configs() -> list[triton.Config]:
        """A small search space: pixel tiles of 64/128, output-channel tiles of 32-128, 4 or 8 warps."""
        return [
            triton.Config({"BLOCK_P": p, "BLOCK_CO": co, "BLOCK_CI": ci}, num_warps=warps, num_stages=stages)
            for p, co, ci, warps, stages in [
                (64, 32, 16, 4, 2), (64, 64, 32, 4, 3), (128, 32, 16, 4, 2), (128, 64, 32, 4, 3),
                (128, 64, 32, 8, 3), (128, 128, 32, 8, 3), (64, 128, 32, 4, 3), (256, 64, 16, 8, 2),
            ]
        ]  # fmt: skip

    _AUTOTUNE_KEY = ["C_in", "C_out", "H", "W"]
    _separable_tuned = triton.autotune(configs=_configs(), key=_AUTOTUNE_KEY)(_separable_kernel)
    _dilated_tuned = triton.autotune(configs=_configs(), key=_AUTOTUNE_KEY)(_dilated_kernel)
    _INTERPRETER_CONFIG = {"BLOCK_P": 16, "BLOCK_CO": 16, "BLOCK_CI": 16}  # small tiles: cheap to interpret

    def _empty_like_format(x: torch.Tensor, channels: int) -> torch.Tensor:
        """The output tensor, channels_last when the input is (a 1-channel input is both layouts: NCHW)."""
        n, c, h, w = x.shape
        channels_last = c > 1 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return torch.empty((n, channels, h, w), device=x.device, dtype=x.dtype, memory_format=fmt)

    def _ieee(x: torch.Tensor) -> bool:
        """Exact fp32 products unless cuDNN itself may use TF32 (PyTorch's default), so both paths agree."""
        return x.dtype == torch.float32 and not (x.is_cuda and torch.backends.cudnn.allow_tf32)

    def _run(kernel, tuned, args: tuple, pixels: int, c_out: int, batch: int, ieee: bool) -> None:
        """Launch over (pixel tiles, output-channel tiles, batch): autotuned on CUDA, one small tile interpreted."""
        if args[0].is_cuda:
            grid = lambda meta: (triton.cdiv(pixels, meta["BLOCK_P"]), triton.cdiv(c_out, meta["BLOCK_CO"]), batch)  # noqa: E731
            torch.library.wrap_triton(tuned)[grid](*args, IEEE=ieee)
        else:
            cfg = _INTERPRETER_CONFIG
            grid = (triton.cdiv(pixels, cfg["BLOCK_P"]), triton.cdiv(c_out, cfg["BLOCK_CO"]), batch)
            torch.library.wrap_triton(kernel)[grid](*args, IEEE=ieee, **cfg)

    @torch.library.triton_op("landmark_edge::fused_separable", mutates_args=())
    def _fused_separable_op(
        x: torch.Tensor, depthwise: torch.Tensor, pointwise: torch.Tensor, bias: torch.Tensor, negative_slope: float
    ) -> torch.Tensor:
        n, c_in, h, w = x.shape
        c_out = pointwise.shape[0]
        y = _empty_like_format(x, c_out)
        args = (
            x, depthwise, pointwise, bias, y, c_in, c_out, h, w,
            *x.stride(), depthwise.stride(0), depthwise.stride(2), depthwise.stride(3),
            pointwise.stride(0), pointwise.stride(1), *y.stride(), negative_slope,
        )  # fmt: skip
        _run(_separable_kernel, _separable_tuned, args, h * w, c_out, n, _ieee(x))
        return y

    @torch.library.triton_op("landmark_edge::dilated_conv_relu", mutates_args=())
    def _dilated_conv_relu_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dilation: int) -> torch.Tensor:
        n, c_in, h, w = x.shape
        c_out = weight.shape[0]
        y = _empty_like_format(x, c_out)
        args = (x, weight, bias, y, c_in, c_out, h, w, *x.stride(), *weight.stride(), *y.stride(), dilation)
        _run(_dilated_kernel, _dilated_tuned, args, h * w, c_out, n, _ieee(x))
        return y


def fused_separable(
    x: torch.Tensor, depthwise: torch.Tensor, pointwise: torch.Tensor, bias: torch.Tensor, negative_slope: float
) -> torch.Tensor:
    """``leaky_relu(conv1x1(conv3x3_depthwise(x), pointwise) + bias)`` in one kernel; x is (N, C_in, H, W)."""
    return torch.ops.landmark_edge.fused_separable(x, depthwise, pointwise, bias, negative_slope)


def dilated_conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dilation: int) -> torch.Tensor:
    """``relu(conv3x3(x, weight, dilation, padding=dilation) + bias)`` in one kernel."""
    return torch.ops.landmark_edge.dilated_conv_relu(x, weight, bias, dilation)
