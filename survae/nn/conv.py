"""Same-padded convolutions with few input or few output channels, computed on the CPU in a
form whose cost follows the channels that are there.

Coupling networks map a few channels in (``C``, half an image's) to many hidden ones and many
hidden ones back to a few out (shift and scale for ``C`` channels). The CPU convolution kernels
work on blocks of 8–16 channels, so a 3×3 convolution with 4 output channels costs about what
one with 16 does, and its backward pass more (measured on the issue's small Glow: 128 → 4
channels on 32×128×14×14, forward + backward 12.8 ms, of which the 58 MFLOP of arithmetic would
take 1.8 ms at the core's peak). Two exact rewrites of the same sum avoid the padded blocks:

* **few outputs** (``out·k² ≤ 36``): ``Z = W′·x`` is one matrix product over the input channels
  with ``W′`` the ``out·k²`` flipped taps as rows, and the output is ``col2im(Z)`` (``F.fold``):
  each position adds the taps of its neighbours. The backward pass is the same two steps
  transposed (``im2col`` of the output gradient, then matrix products).
* **few inputs** (``in·k² ≤ 36``): the forward pass is the library convolution (already fast
  here); the gradient of the input, a convolution with few *output* channels, is
  ``col2im(Wᵀ·∂y)``, and the weight gradient is the library's.

Both compute ``Σ_c Σ_taps w·x`` in another order, so results agree to float rounding (tested
against ``F.conv2d`` in float64, with gradients and second derivatives). Everything else (other
devices, strides, dilation, groups, other padding, channels-last inputs, 1×1 kernels) goes to
``F.conv2d`` unchanged. :class:`Conv2d` is ``nn.Conv2d`` with this forward: same parameters,
same state-dict keys, same initialisation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: the largest ``out_channels · k²`` computed as matrix product + col2im
FEW_OUTPUTS = 36
#: the largest ``in_channels · k²`` whose input gradient is computed as col2im
FEW_INPUTS = 36


class _FewInputConv2d(torch.autograd.Function):
    """Same-padded stride-1 convolution whose input gradient is ``col2im(Wᵀ·∂y)``."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):  # noqa: D102
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight = ctx.saved_tensors
        B, _, H, W = x.shape
        out, _, kh, kw = weight.shape
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            cols = torch.einsum("ok,bol->bkl", weight.reshape(out, -1), grad.reshape(B, out, H * W))
            grad_x = F.fold(cols, (H, W), (kh, kw), padding=ctx.padding)
        want_w = ctx.needs_input_grad[1]
        want_b = ctx.has_bias and ctx.needs_input_grad[2]
        if want_w or want_b:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [out] if ctx.has_bias else None,
                [1, 1], list(ctx.padding), [1, 1], False, [0, 0], 1, [False, want_w, want_b],
            )  # fmt: skip
        return grad_x, grad_w, grad_b, None


def _taps(weight: torch.Tensor) -> torch.Tensor:
    """``[out·k_h·k_w, in]``: row ``(o, i, j)`` is the tap that carries ``x[p]`` to
    ``y[p − (i, j) + padding]``, the order ``F.fold`` sums its columns in."""
    out, cin, kh, kw = weight.shape
    return weight.flip(2, 3).permute(0, 2, 3, 1).reshape(out * kh * kw, cin)


class _FewOutputConv2d(torch.autograd.Function):
    """Same-padded stride-1 convolution as ``col2im(W′·x)``; the backward pass is
    ``∂x = W′ᵀ·im2col(∂y)`` and ``∂W′ = Σ_b im2col(∂y)·xᵀ`` (differentiable, so second
    derivatives work)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):  # noqa: D102
        B, C, H, W = x.shape
        kh, kw = weight.shape[2:]
        cols = torch.matmul(_taps(weight), x.reshape(B, C, H * W))
        y = F.fold(cols, (H, W), (kh, kw), padding=padding)
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return y if bias is None else y + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight = ctx.saved_tensors
        B, C, H, W = x.shape
        out, _, kh, kw = weight.shape
        grad_cols = F.unfold(grad, (kh, kw), padding=ctx.padding)  # [B, out·k², H·W]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.matmul(_taps(weight).t(), grad_cols).view(B, C, H, W)
        if ctx.needs_input_grad[1]:
            grad_taps = torch.matmul(grad_cols, x.reshape(B, C, H * W).transpose(1, 2)).sum(0)
            grad_w = grad_taps.view(out, kh, kw, C).permute(0, 3, 1, 2).flip(2, 3)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def conv2d_same(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=k // 2)`` for an odd ``k × k`` kernel, in the
    faster form (module docstring) where a CPU input has few channels on either side."""
    padding = (weight.shape[2] // 2, weight.shape[3] // 2)
    if _rewritable(x, weight):
        out, cin, kh, kw = weight.shape
        if out * kh * kw <= FEW_OUTPUTS:
            return _FewOutputConv2d.apply(x, weight, bias, padding)
        if cin * kh * kw <= FEW_INPUTS:
            return _FewInputConv2d.apply(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding)


def _rewritable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    kh, kw = weight.shape[2:]
    return (
        x.device.type == "cpu"
        and x.dim() == 4
        and kh * kw > 1
        and kh % 2 == 1
        and kw % 2 == 1
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")  # autocast would run F.conv2d in bfloat16
        and not (x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
    )


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose same-padded stride-1 form runs as :func:`conv2d_same` (same
    parameters and state-dict keys; any other configuration is ``nn.Conv2d`` unchanged)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k = self.kernel_size
        self._same = (
            self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and self.padding == (k[0] // 2, k[1] // 2)
        )

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if self._same:
            return conv2d_same(input, weight, bias)
        return super()._conv_forward(input, weight, bias)
