"""Unconditional densities over a fixed event shape."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from survae.distributions.base import Distribution
from survae.errors import check_shape
from survae.registry import register
from survae.utils import sum_except_batch

LOG_2PI = math.log(2 * math.pi)


def _as_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


class _FixedShape(Distribution):
    def __init__(self, shape: int | Sequence[int]):
        super().__init__()
        self.shape = _as_shape(shape)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def _check(self, x: torch.Tensor) -> None:
        check_shape(self, x, (None, *self.shape))


@register("distribution", "standard_normal")
class StandardNormal(_FixedShape):
    """N(0, I). Sampling at temperature T draws from N(0, T² I) (Glow's reduced temperature)."""

    def log_prob(self, x, context=None):
        self._check(x)
        return sum_except_batch(-0.5 * (x**2 + LOG_2PI))

    def sample(self, num_samples, context=None, temperature=1.0):
        eps = torch.randn(num_samples, *self.shape, device=self._anchor.device)
        return eps * temperature


@register("distribution", "diagonal_normal")
class DiagonalNormal(_FixedShape):
    """N(μ, diag σ²) with learned μ and log σ per element (zero-initialised: starts at N(0, I)).

    Also Glow's learned top prior."""

    def __init__(self, shape: int | Sequence[int]):
        super().__init__(shape)
        self.loc = nn.Parameter(torch.zeros(self.shape))
        self.log_scale = nn.Parameter(torch.zeros(self.shape))

    def log_prob(self, x, context=None):
        self._check(x)
        u = (x - self.loc) * torch.exp(-self.log_scale)
        return sum_except_batch(-0.5 * (u**2 + LOG_2PI) - self.log_scale)

    def sample(self, num_samples, context=None, temperature=1.0):
        eps = torch.randn(num_samples, *self.shape, device=self.loc.device)
        return self.loc + torch.exp(self.log_scale) * eps * temperature


@register("distribution", "standard_uniform")
class StandardUniform(_FixedShape):
    """Uniform on [0, 1)^d: log-density 0 inside, -inf outside."""

    def log_prob(self, x, context=None):
        self._check(x)
        flat = x.reshape(x.shape[0], -1)
        outside = ((flat < 0) | (flat >= 1)).any(-1)
        lp = x.new_zeros(x.shape[0]).masked_fill(outside, -math.inf)
        return lp.masked_fill(torch.isnan(flat).any(-1), math.nan)  # NaN means a bug: keep it

    def sample(self, num_samples, context=None, temperature=1.0):
        return torch.rand(num_samples, *self.shape, device=self._anchor.device)


@register("distribution", "standard_half_normal")
class StandardHalfNormal(_FixedShape):
    """Half-normal on [0, ∞) with unit scale: density 2·N(x; 0, 1) for x ≥ 0."""

    def log_prob(self, x, context=None):
        self._check(x)
        lp = math.log(2.0) - 0.5 * (x**2 + LOG_2PI)
        lp = torch.where(x < 0, torch.full_like(lp, -math.inf), lp)  # NaN stays NaN
        return sum_except_batch(lp)

    def sample(self, num_samples, context=None, temperature=1.0):
        return torch.randn(num_samples, *self.shape, device=self._anchor.device).abs() * temperature
