"""Augmentation: add noise channels to the data (ANF, VFlow)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from survae.distributions.conditional import ConditionalNormal
from survae.errors import ShapeError, check_ndim, check_shape
from survae.registry import available, build_from_spec, register
from survae.transforms.base import Surjection
from survae.utils import sum_except_batch

LOG_2PI = math.log(2 * math.pi)

#: a conditional distribution, a distribution spec or a network spec (see :class:`Augment`);
#: not annotated ``NetSpec``, so that config checks do not take a distribution spec for a
#: network (a network spec is checked when the ``ConditionalNormal`` builds it)
EncoderSpec = Any


@register("layer", "augment")
class Augment(Surjection):
    """Generative surjection (the inverse of slicing): ``z = concat(x, e)`` along dim 1 with
    ``e ~ q(e | x)`` of ``aug_channels`` channels (Huang et al. 2020, ANF; Chen et al. 2020,
    VFlow; Nielsen et al. 2020).

    Likelihood contribution: ``−log q(e | x)``, a single-sample lower bound.

    ``encoder``:

    * ``None`` or ``"standard_normal"`` (default): ``q = N(0, I)``, independent of ``x`` (ANF);
    * any object with ``sample_with_log_prob(num_samples, context=x)`` — a conditional
      distribution such as :class:`ConditionalNormal`, or a conditional :class:`Flow` (VFlow);
    * a spec ``{"name": D, **kwargs}`` naming a registered *distribution* (e.g.
      ``{"name": "standard_uniform", "shape": [3, 32, 32]}``, the official CIFAR-10 augmented
      flow's uniform noise): that distribution, built from the spec;
    * otherwise a network spec/module: a ``ConditionalNormal`` with ``in_channels`` input and
      ``2·aug_channels`` output channels is built from it.

    ``inverse`` drops the augmented channels: ``x = z[:, :in_channels]``.

    ``dim=k`` augments along dimension ``k`` instead of 1 (the channel counts then count
    entries along it); the encoder is then the standard normal or a ready conditional
    distribution whose samples have the input's shape with ``aug_channels`` along ``dim``.
    """

    stochastic_forward = True

    def __init__(
        self, in_channels: int, aug_channels: int, encoder: EncoderSpec = None, dim: int = 1
    ):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"Augment: dim must be an integer >= 1 (0 is the batch), got {dim!r}")
        self.dim = dim
        if in_channels < 1 or aug_channels < 1:
            raise ValueError(
                f"Augment: in_channels and aug_channels must be >= 1, got {in_channels}, "
                f"{aug_channels}"
            )
        self.in_channels = int(in_channels)
        self.aug_channels = int(aug_channels)
        if encoder is None or encoder == "standard_normal":
            self.encoder = None
        elif callable(getattr(encoder, "sample_with_log_prob", None)):
            self.encoder = encoder
        elif isinstance(encoder, Mapping) and encoder.get("name") in available("distribution"):
            self.encoder = build_from_spec("distribution", encoder)
        elif dim != 1:
            raise ValueError(
                f"Augment: along dim={dim} the encoder must be None or a conditional "
                "distribution (a network spec builds a channel-wise ConditionalNormal, which "
                "needs dim=1)"
            )
        else:
            self.encoder = ConditionalNormal(encoder, self.in_channels, self.aug_channels)

    def _check_channels(self, x: torch.Tensor, channels: int, what: str) -> None:
        check_ndim(self, x, tuple(n for n in (2, 3, 4, 5) if n > self.dim), what)
        if x.shape[self.dim] != channels:
            expected = ["*"] * x.dim()
            expected[self.dim] = str(channels)
            raise ShapeError(
                f"Augment: expected {what} of shape ({', '.join(expected)}), got {tuple(x.shape)}"
            )

    def forward(self, x, context=None):
        self._check_channels(x, self.in_channels, "input")
        expected = list(x.shape)
        expected[self.dim] = self.aug_channels
        expected = tuple(expected)
        if self.encoder is None:
            e = torch.randn(expected, device=x.device, dtype=x.dtype)
            log_q = sum_except_batch(-0.5 * (e**2 + LOG_2PI))
        else:
            e, log_q = self.encoder.sample_with_log_prob(x.shape[0], context=x)
            check_shape(self, e, expected, what="augmentation noise (encoder sample)")
        return torch.cat([x, e], dim=self.dim), -log_q

    def inverse(self, z, context=None):
        self._check_channels(z, self.in_channels + self.aug_channels, "latent")
        return z.narrow(self.dim, 0, self.in_channels)
