"""Space-to-channel reshapes (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018).

Ordering (channels-first, as in the SurVAE and common PyTorch Glow implementations): with
factor ``f``, output channel ``c · f² + i · f + j`` at position ``(h, w)`` holds input channel
``c`` at position ``(h · f + i, w · f + j)``. So the ``f²`` channels coming from one input
channel are adjacent, and a channel-halving coupling after a squeeze splits the original
channels rather than sub-pixel positions.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from survae.errors import ShapeError, check_ndim
from survae.registry import register
from survae.transforms.base import Bijection


def squeeze2d(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``[B, C, H, W] → [B, C·f², H/f, W/f]`` in the ordering of the module docstring."""
    B, C, H, W = x.shape
    f = factor
    x = x.reshape(B, C, H // f, f, W // f, f)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(B, C * f * f, H // f, W // f)


def unsqueeze2d(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``[B, C·f², H, W] → [B, C, H·f, W·f]``, the inverse of :func:`squeeze2d`."""
    B, C, H, W = x.shape
    f = factor
    x = x.reshape(B, C // (f * f), f, f, H, W)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(B, C // (f * f), H * f, W * f)


def _check_factor(name: str, factor: int) -> int:
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"{name}: factor must be a positive int, got {factor!r}")
    return factor


def _check_spatial(layer: object, x: torch.Tensor, factor: int, what: str) -> None:
    check_ndim(layer, x, 4, what)
    H, W = x.shape[2], x.shape[3]
    if H % factor or W % factor:
        raise ShapeError(
            f"{type(layer).__name__}: H and W must be divisible by the factor {factor}, "
            f"got {what} of shape {tuple(x.shape)}"
        )


def _check_channels(layer: object, x: torch.Tensor, factor: int, what: str) -> None:
    check_ndim(layer, x, 4, what)
    if x.shape[1] % (factor * factor):
        raise ShapeError(
            f"{type(layer).__name__}: the channel count must be divisible by "
            f"factor² = {factor * factor}, got {what} of shape {tuple(x.shape)}"
        )


def _squeeze(
    layer: object, x: torch.Tensor, factor: int, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_spatial(layer, x, factor, what)
    return squeeze2d(x, factor), x.new_zeros(x.shape[0])


def _unsqueeze(
    layer: object, x: torch.Tensor, factor: int, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_channels(layer, x, factor, what)
    return unsqueeze2d(x, factor), x.new_zeros(x.shape[0])


class _Reshape2d(Bijection):
    """The body shared by :class:`Squeeze2d` and :class:`Unsqueeze2d`, one the inverse of the
    other: ``forward_squeezes`` says which of the two reshapes ``forward`` is."""

    forward_squeezes: ClassVar[bool]

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = _check_factor(type(self).__name__, factor)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (_squeeze if self.forward_squeezes else _unsqueeze)(self, x, self.factor, "input")

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (_unsqueeze if self.forward_squeezes else _squeeze)(self, z, self.factor, "latent")

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


@register("layer", "squeeze")
class Squeeze2d(_Reshape2d):
    """``[B, C, H, W] → [B, C·f², H/f, W/f]`` (default ``f = 2``), a permutation of the
    elements. Likelihood contribution: 0."""

    forward_squeezes = True


@register("layer", "unsqueeze")
class Unsqueeze2d(_Reshape2d):
    """``[B, C·f², H, W] → [B, C, H·f, W·f]``, the inverse of :class:`Squeeze2d`.
    Likelihood contribution: 0."""

    forward_squeezes = False
