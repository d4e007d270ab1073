"""Slicing: keep some channels, model the rest (multi-scale architectures, Glow's split)."""

from __future__ import annotations

import math

import torch

from survae.distributions.base import Distribution
from survae.distributions.conditional import ConditionalNormal
from survae.errors import ShapeError, check_ndim
from survae.nn.build import NetSpec
from survae.registry import register
from survae.transforms.base import Surjection
from survae.utils import sum_except_batch

LOG_2PI = math.log(2 * math.pi)


@register("layer", "slice")
class Slice(Surjection):
    """Inference surjection ``z = x[:, :num_keep]`` along dim 1 (SurVAE Flows, Nielsen et al.
    2020; RealNVP/Glow multi-scale factor-out).

    Likelihood contribution (exact): ``log p(x_dropped | z)``, with ``p`` either a standard
    normal (``decoder=None``, the RealNVP factor-out) or a learned conditional density of the
    dropped channels given the kept ones: a :class:`ConditionalNormal` (or any conditional
    :class:`Distribution`) instance, or a network spec from which a ``ConditionalNormal`` is
    built with ``num_keep`` input and ``2·(num_channels − num_keep)`` output channels (Glow's
    learned split prior; zero-initialise its last layer to start at N(0, I)).

    ``inverse`` samples the dropped channels at ``self.temperature`` (default 1).
    """

    def __init__(
        self,
        num_channels: int,
        num_keep: int,
        decoder: Distribution | NetSpec | None = None,
    ):
        super().__init__()
        if not 0 < num_keep < num_channels:
            raise ValueError(
                f"Slice: need 0 < num_keep < num_channels, got num_keep={num_keep}, "
                f"num_channels={num_channels}"
            )
        self.num_channels = int(num_channels)
        self.num_keep = int(num_keep)
        self.num_drop = self.num_channels - self.num_keep
        self.temperature = 1.0
        if decoder is None or decoder == "standard_normal":
            self.decoder = None
        elif isinstance(decoder, Distribution):
            self.decoder = decoder
        else:
            self.decoder = ConditionalNormal(decoder, self.num_keep, self.num_drop)

    def _check(self, x: torch.Tensor, channels: int, what: str) -> None:
        check_ndim(self, x, (2, 3, 4, 5), what)
        if x.shape[1] != channels:
            expected = (None, channels, *(["*"] * (x.dim() - 2)))
            raise ShapeError(
                f"Slice: expected {what} with {channels} channels along dim 1, shape "
                f"({', '.join('*' if e is None or e == '*' else str(e) for e in expected)}), "
                f"got {tuple(x.shape)}"
            )

    def forward(self, x, context=None):
        self._check(x, self.num_channels, "input")
        z, dropped = x[:, : self.num_keep], x[:, self.num_keep :]
        if self.decoder is None:
            ldj = sum_except_batch(-0.5 * (dropped**2 + LOG_2PI))
        else:
            ldj = self.decoder.log_prob(dropped, context=z)
        return z, ldj

    def inverse(self, z, context=None):
        self._check(z, self.num_keep, "latent")
        if self.decoder is None:
            shape = (z.shape[0], self.num_drop, *z.shape[2:])
            dropped = torch.randn(shape, device=z.device, dtype=z.dtype) * self.temperature
        else:
            dropped = self.decoder.sample(z.shape[0], context=z, temperature=self.temperature)
        return torch.cat([z, dropped], dim=1)
