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
    2020; RealNVP/Glow multi-scale factor-out); ``dim=k`` slices dimension ``k`` instead
    (``num_channels`` and ``num_keep`` then count entries along it).

    Likelihood contribution (exact): ``log p(x_dropped | z)``, with ``p`` either a standard
    normal (``decoder=None``, the RealNVP factor-out) or a learned conditional density of the
    dropped channels given the kept ones: a :class:`ConditionalNormal` (or any conditional
    :class:`Distribution`) instance, or a network spec from which a ``ConditionalNormal`` is
    built with ``num_keep`` input and ``2·(num_channels − num_keep)`` output channels (Glow's
    learned split prior; zero-initialise its last layer to start at N(0, I)).

    ``inverse`` samples the dropped channels at ``self.temperature`` (default 1). Along another
    dimension than 1 the decoder is the standard normal or a ready :class:`Distribution`.
    """

    def __init__(
        self,
        num_channels: int,
        num_keep: int,
        decoder: Distribution | NetSpec | None = None,
        dim: int = 1,
    ):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"Slice: dim must be an integer >= 1 (0 is the batch), got {dim!r}")
        self.dim = dim
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
        elif dim != 1:
            raise ValueError(
                f"Slice: along dim={dim} the decoder must be None or a Distribution (a network "
                "spec builds a channel-wise ConditionalNormal, which needs dim=1)"
            )
        else:
            self.decoder = ConditionalNormal(decoder, self.num_keep, self.num_drop)

    def _check(self, x: torch.Tensor, channels: int, what: str) -> None:
        check_ndim(self, x, tuple(n for n in (2, 3, 4, 5) if n > self.dim), what)
        if x.shape[self.dim] != channels:
            expected = ["*"] * x.dim()
            expected[self.dim] = str(channels)
            raise ShapeError(
                f"Slice: expected {what} with {channels} channels along dim {self.dim}, shape "
                f"({', '.join(expected)}), got {tuple(x.shape)}"
            )

    def forward(self, x, context=None):
        self._check(x, self.num_channels, "input")
        z, dropped = x.split((self.num_keep, self.num_drop), dim=self.dim)
        if self.decoder is None:
            ldj = sum_except_batch(-0.5 * (dropped**2 + LOG_2PI))
        else:
            ldj = self.decoder.log_prob(dropped, context=z)
        return z, ldj

    def inverse(self, z, context=None):
        self._check(z, self.num_keep, "latent")
        if self.decoder is None:
            shape = list(z.shape)
            shape[self.dim] = self.num_drop
            dropped = torch.randn(shape, device=z.device, dtype=z.dtype) * self.temperature
        else:
            dropped = self.decoder.sample(z.shape[0], context=z, temperature=self.temperature)
        return torch.cat([z, dropped], dim=self.dim)
