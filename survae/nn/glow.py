"""Glow's coupling network (Kingma & Dhariwal 2018, "Glow", Sec. 3.3 and Appendix).

conv3×3 → actnorm → ReLU → conv1×1 → actnorm → ReLU → zero-initialised conv3×3 whose output is
multiplied by a learned per-channel ``exp(3·logs)``, so every coupling starts as the identity.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from survae.errors import check_shape
from survae.nn.build import zero_init_
from survae.nn.conv import Conv2d
from survae.registry import register

#: ActNorm2d initial scales: openai/glow's ``1/(std + eps)`` and survae's earlier ``1/√(var + eps)``
ACTNORM_INITS = ("openai", "survae")


class ActNorm2d(nn.Module):
    """Per-channel affine normalisation inside a network, ``y = (x + bias)·exp(logs)``.

    On the first forward pass in training mode ``bias`` and ``logs`` are set from the batch so
    that the output has zero mean and unit variance per channel (Glow's data-dependent
    initialisation). This is a network layer, not a transform: it has no log-determinant.
    The "initialised" state is a Python flag (no host sync per call) mirrored in a buffer so it
    survives ``state_dict`` round trips. ``logscale_factor`` (openai/glow: 3): ``logs`` stores
    the log-scale divided by it (same function and start, faster-moving under Adam).

    ``init`` picks the initial scale from the batch's per-channel (biased) variance ``v``:
    ``"openai"`` is openai/glow's ``tfops.actnorm_scale``, ``1 / (√v + eps)``; ``"survae"``
    survae's earlier ``1 / √(v + eps)``. They differ only for channels with ``√v`` near ``eps``.
    """

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-6,
        logscale_factor: float = 1.0,
        init: str = "survae",
    ):
        super().__init__()
        if init not in ACTNORM_INITS:
            raise ValueError(f"ActNorm2d: init must be one of {ACTNORM_INITS}, got {init!r}")
        self.num_channels, self.eps, self.init = num_channels, eps, init
        self.logscale_factor = float(logscale_factor)
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.logs = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._is_initialized = False

    @torch.no_grad()
    def _data_init(self, x: torch.Tensor) -> None:
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        std = var.sqrt().add(self.eps) if self.init == "openai" else var.add(self.eps).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(-std.log() / self.logscale_factor)
        self.initialized.fill_(True)
        self._is_initialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # Loading is not on the hot path; reading the buffer here is fine.
        self._is_initialized = bool(self.initialized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._is_initialized:
            self._data_init(x)
        shape = (1, self.num_channels) + (1,) * (x.dim() - 2)
        return (x + self.bias.view(shape)) * self.scale().view(shape)

    def scale(self) -> torch.Tensor:
        """The per-channel factor ``exp(logscale_factor · logs)``."""
        logs = self.logs if self.logscale_factor == 1.0 else self.logs * self.logscale_factor
        return logs.exp()


def fold_actnorm(
    conv: nn.Conv2d, norm: nn.Module
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``conv`` followed by ``norm`` (an :class:`ActNorm2d` or ``nn.Identity``) as one
    convolution: ``(weight, bias, scale)`` with ``(conv(x) + b)·s = conv(x; W·s) + b·s``.

    The per-channel affine map then costs a multiplication of the weights instead of two
    passes over the activations; autograd differentiates through the fold, so ``bias``/``logs``
    get the same gradients. ``scale`` (None for the identity) is returned for terms added
    before the norm (:class:`EdgeBias`).
    """
    if not isinstance(norm, ActNorm2d):
        return conv.weight, conv.bias, None
    scale = norm.scale()
    bias = norm.bias if conv.bias is None else conv.bias + norm.bias
    return conv.weight * scale.view(-1, 1, 1, 1), bias * scale, scale


class EdgeBias(nn.Module):
    """The border channel of openai/glow's 3×3 convolutions (``edge_bias=True`` in its
    ``tfops.conv2d``/``conv2d_zeros``): the input is zero-padded and one more input channel, 1 on
    the padding ring and 0 inside, is appended, so the convolution can tell border positions
    apart. That channel's weights ``[out, 1, k, k]`` act as a per-position map ``[1, out, H, W]``
    (non-zero only within ``k // 2`` of a border) added to the convolution of the input; with
    them a ``C → out`` convolution has the official ``k²·(C + 1)·out`` weights."""

    def __init__(self, out_channels: int, kernel_size: int = 3, std: float = 0.0):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.zeros(out_channels, 1, kernel_size, kernel_size))
        if std:
            nn.init.normal_(self.weight, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The border term for inputs of ``x``'s spatial size, ``[1, out, H, W]``."""
        p = self.kernel_size // 2
        ring = F.pad(x.new_zeros(1, 1, *x.shape[-2:]), (p, p, p, p), value=1.0)
        return F.conv2d(ring, self.weight.to(x.dtype))


class ZeroConv2d(nn.Module):
    """Glow's zero-initialised output convolution: ``conv(x) · exp(logscale_factor · logs)``.

    Weight, bias and the per-channel ``logs`` start at zero, so the output is zero at
    initialisation; the learned scale (``logscale_factor`` = 3 in Glow) lets the output grow
    quickly once training starts. ``edge_bias=True`` adds the official border channel
    (:class:`EdgeBias`, zero-initialised) to a convolution larger than 1×1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        logscale_factor: float = 3.0,
        zero_init: bool = True,
        edge_bias: bool = False,
    ):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if zero_init:
            zero_init_(self.conv)
        self.edge = EdgeBias(out_channels, kernel_size) if edge_bias and kernel_size > 1 else None
        self.logs = nn.Parameter(torch.zeros(out_channels))
        self.logscale_factor = logscale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the output scale folded into the convolution: conv(x; W·s) + b·s (one pass less)
        scale = (self.logscale_factor * self.logs).exp()
        weight = self.conv.weight * scale.view(-1, 1, 1, 1)
        bias = self.conv.bias * scale if self.conv.bias is not None else None
        h = self.conv._conv_forward(x, weight, bias)
        if self.edge is not None:
            h = h + self.edge(x) * scale.view(1, -1, 1, 1)
        return h


@register("network", "glow_net")
class GlowNet(nn.Module):
    """Glow coupling network ``[B, in, H, W] → [B, out, H, W]``.

    conv3×3(in→hidden) – ReLU – conv1×1(hidden→hidden) – ReLU – :class:`ZeroConv2d`(hidden→out).
    With ``actnorm=True`` (Glow's choice) the two hidden convolutions have no bias and are
    followed by :class:`ActNorm2d`; with ``actnorm=False`` they are plain biased convolutions.
    ``edge_bias=True`` gives both 3×3 convolutions openai/glow's border channel
    (:class:`EdgeBias`; ``conv1_edge`` and ``out.edge``), as its ``f`` builds them;
    ``actnorm_logscale_factor=3`` its ActNorms' ``logscale_factor``; ``actnorm_init`` their
    initial scale (:class:`ActNorm2d`'s ``init``: ``"openai"`` or ``"survae"``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 512,
        actnorm: bool = True,
        zero_init_output: bool = True,
        edge_bias: bool = False,
        actnorm_logscale_factor: float = 1.0,
        actnorm_init: str = "survae",
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        h = hidden_channels
        f = actnorm_logscale_factor
        self.conv1 = Conv2d(in_channels, h, 3, padding=1, bias=not actnorm)
        self.norm1 = (
            ActNorm2d(h, logscale_factor=f, init=actnorm_init) if actnorm else nn.Identity()
        )
        self.conv2 = nn.Conv2d(h, h, 1, bias=not actnorm)
        self.norm2 = (
            ActNorm2d(h, logscale_factor=f, init=actnorm_init) if actnorm else nn.Identity()
        )
        self.out = ZeroConv2d(h, out_channels, 3, zero_init=zero_init_output, edge_bias=edge_bias)
        if actnorm:  # Glow initialises hidden convolutions with N(0, 0.05²)
            nn.init.normal_(self.conv1.weight, std=0.05)
            nn.init.normal_(self.conv2.weight, std=0.05)
        self.conv1_edge = EdgeBias(h, 3, std=0.05) if edge_bias else None

    def _foldable(self) -> bool:
        """Whether the inner ActNorms can be folded into the convolutions (not while one
        still waits for its data-dependent initialisation, which needs the raw outputs)."""
        if not self.training:
            return True
        return all(n._is_initialized for n in (self.norm1, self.norm2) if isinstance(n, ActNorm2d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(self, x, (None, self.in_channels, None, None))
        if not self._foldable():
            h = self.conv1(x)
            if self.conv1_edge is not None:
                h = h + self.conv1_edge(x)
            h = F.relu(self.norm1(h))
            h = F.relu(self.norm2(self.conv2(h)))
            return self.out(h)
        # ActNorm folded into the convolution before it (fold_actnorm): same function
        weight, bias, scale = fold_actnorm(self.conv1, self.norm1)
        h = self.conv1._conv_forward(x, weight, bias)
        if self.conv1_edge is not None:
            edge = self.conv1_edge(x)
            h = h + (edge if scale is None else edge * scale.view(1, -1, 1, 1))
        h = F.relu(h)
        weight, bias, _ = fold_actnorm(self.conv2, self.norm2)
        h = F.relu(self.conv2._conv_forward(h, weight, bias))
        return self.out(h)
