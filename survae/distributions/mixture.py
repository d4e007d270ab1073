"""Trainable Gaussian base distributions: mixtures of diagonal Gaussians, and Gaussians whose
parameters depend on a context vector (a class as one-hot, or continuous features).

* :class:`MixtureOfGaussians` — ``p(x) = Σ_k π_k N(x; μ_k, diag σ_k²)`` with learned weights,
  means and diagonal scales;
* :class:`ConditionalMixtureOfGaussians` — the same with ``(log π, μ, log σ)`` an affine
  function (or an MLP) of the context;
* :class:`ContextNormal` — ``N(x; μ(c), diag σ(c)²)`` with ``(μ, log σ)`` affine in the
  context: for a one-hot class context that is a learned mean and scale per class, Glow's
  class-conditional prior (Kingma & Dhariwal 2018, Sec. 5).

The conditional ones start independent of the context (zero-initialised context weights), so
a conditional model starts where its unconditional counterpart does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from survae.distributions.base import ConditionalDistribution, Distribution
from survae.errors import check_shape
from survae.nn.build import zero_init_
from survae.nn.mlp import MLP
from survae.registry import register
from survae.utils import sum_except_batch

LOG_2PI = math.log(2 * math.pi)


def _as_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


def _check_num_components(owner: object, num_components: int) -> None:
    """One-line ``ValueError`` naming ``owner``'s class unless there is at least one component."""
    if num_components < 1:
        raise ValueError(
            f"{type(owner).__name__}: num_components must be >= 1, got {num_components}"
        )


def _initial_means(
    num_components: int, shape: tuple[int, ...], spread: float, seed: int
) -> torch.Tensor:
    """Seeded, distinct starting means (identical means would never separate)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num_components, *shape, generator=gen) * spread


def mixture_log_prob(
    x: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """``log Σ_k softmax(logits)_k N(x; μ_k, diag exp(2 log σ_k))`` per example.

    ``x``: ``[B, *S]``; ``logits``: ``[B or 1, K]``; ``means``/``log_scales``:
    ``[B or 1, K, *S]``. Returns ``[B]``.
    """
    u = (x.unsqueeze(1) - means) * torch.exp(-log_scales)
    comp = sum_except_batch(-0.5 * (u**2 + LOG_2PI) - log_scales, num_batch_dims=2)
    return torch.logsumexp(torch.log_softmax(logits, dim=-1) + comp, dim=-1)


def mixture_sample(
    logits: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, temperature: float
) -> torch.Tensor:
    """One draw per row: a component from ``softmax(logits)`` (``[B, K]``), then
    ``μ_k + T·σ_k·ε``."""
    k = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    mu, log_sigma = means[rows, k], log_scales[rows, k]
    return mu + torch.exp(log_sigma) * torch.randn_like(mu) * temperature


@register("distribution", "mixture_of_gaussians")
class MixtureOfGaussians(Distribution):
    """Mixture of ``num_components`` diagonal Gaussians with learned weights, means and scales:
    ``log p(x) = logsumexp_k [log π_k + Σ_d log N(x_d; μ_kd, σ_kd²)]``.

    Weights start equal, scales at ``init_scale`` and means at seeded ``N(0, init_spread²)``
    draws (distinct, so the components can separate). At temperature ``T`` samples are
    ``μ_k + T·σ_k·ε`` with ``k ~ π``.
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        num_components: int = 8,
        init_spread: float = 1.0,
        init_scale: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        _check_num_components(self, num_components)
        if init_scale <= 0:
            raise ValueError(f"MixtureOfGaussians: init_scale must be positive, got {init_scale}")
        self.shape = _as_shape(shape)
        self.num_components = int(num_components)
        self.logits = nn.Parameter(torch.zeros(self.num_components))
        self.means = nn.Parameter(
            _initial_means(self.num_components, self.shape, init_spread, seed)
        )
        self.log_scales = nn.Parameter(
            torch.full((self.num_components, *self.shape), math.log(init_scale))
        )

    def log_prob(self, x, context=None):
        check_shape(self, x, (None, *self.shape))
        return mixture_log_prob(
            x, self.logits.unsqueeze(0), self.means.unsqueeze(0), self.log_scales.unsqueeze(0)
        )

    def sample(self, num_samples, context=None, temperature=1.0):
        expand = (num_samples, *([-1] * (self.means.dim())))
        return mixture_sample(
            self.logits.expand(num_samples, -1),
            self.means.unsqueeze(0).expand(*expand),
            self.log_scales.unsqueeze(0).expand(*expand),
            temperature,
        )

    def extra_repr(self) -> str:
        return f"shape={self.shape}, num_components={self.num_components}"


class _ContextNet(nn.Module):
    """Context ``[B, context_features]`` → parameters ``[B, n]``: affine (``hidden`` empty;
    for a one-hot class that is a learned table per class) or an MLP. The context's weights
    start at zero, so the output starts at ``bias``."""

    def __init__(self, context_features: int, n: int, hidden: Sequence[int], bias: torch.Tensor):
        super().__init__()
        if context_features < 1:
            raise ValueError(f"context_features must be >= 1, got {context_features}")
        self.context_features = int(context_features)
        if hidden:
            self.net: nn.Module = MLP(context_features, n, hidden=list(hidden))
        else:
            self.net = zero_init_(nn.Linear(context_features, n, bias=False))
        self.bias = nn.Parameter(bias.reshape(-1).clone())

    def forward(self, context: torch.Tensor | None, owner: object) -> torch.Tensor:
        if context is None:
            raise ValueError(
                f"{type(owner).__name__} is conditional (context_features="
                f"{self.context_features}): pass context=..."
            )
        check_shape(owner, context, (None, self.context_features), "context")
        return self.net(context.to(self.bias.dtype)) + self.bias


@register("distribution", "conditional_mixture_of_gaussians")
class ConditionalMixtureOfGaussians(ConditionalDistribution):
    """Mixture of diagonal Gaussians whose weights, means and log-scales are an affine function
    (``hidden=()``) or an MLP of the context ``[B, context_features]``:
    ``log p(x | c) = logsumexp_k [log π_k(c) + Σ_d log N(x_d; μ_kd(c), σ_kd(c)²)]``.

    Starts independent of the context, as :class:`MixtureOfGaussians` with the same
    settings. Sampling takes the batch size from ``context`` (``num_samples`` is ignored).
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        context_features: int,
        num_components: int = 8,
        hidden: Sequence[int] = (),
        init_spread: float = 1.0,
        init_scale: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        _check_num_components(self, num_components)
        self.shape = _as_shape(shape)
        self.num_components = K = int(num_components)
        self.context_features = int(context_features)
        means = _initial_means(K, self.shape, init_spread, seed)
        bias = torch.cat(
            [
                torch.zeros(K),
                means.reshape(-1),
                torch.full((means.numel(),), math.log(init_scale)),
            ]
        )
        self.params = _ContextNet(context_features, bias.numel(), hidden, bias)

    def _parameters_for(
        self, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.params(context, self)
        K, D = self.num_components, math.prod(self.shape)
        logits, means, log_scales = p.split([K, K * D, K * D], dim=1)
        view = (p.shape[0], K, *self.shape)
        return logits, means.reshape(view), log_scales.reshape(view)

    def log_prob(self, x, context=None):
        logits, means, log_scales = self._parameters_for(context)
        check_shape(self, x, (logits.shape[0], *self.shape))
        return mixture_log_prob(x, logits, means, log_scales)

    def sample(self, num_samples, context=None, temperature=1.0):
        return mixture_sample(*self._parameters_for(context), temperature)

    def extra_repr(self) -> str:
        return (
            f"shape={self.shape}, context_features={self.context_features}, "
            f"num_components={self.num_components}"
        )


@register("distribution", "context_normal")
class ContextNormal(ConditionalDistribution):
    """Diagonal Gaussian ``N(x; μ(c), diag σ(c)²)`` with ``(μ, log σ)`` affine in the context
    ``[B, context_features]`` (``hidden=()``) or an MLP of it. For one-hot classes it is a
    learned mean and scale per class: Glow's class-conditional prior. Starts at ``N(0, I)`` for
    every context. At temperature ``T`` samples are ``μ + T·σ·ε``; the batch size comes from
    ``context``.
    """

    def __init__(
        self, shape: int | Sequence[int], context_features: int, hidden: Sequence[int] = ()
    ):
        super().__init__()
        self.shape = _as_shape(shape)
        self.context_features = int(context_features)
        D = math.prod(self.shape)
        self.params = _ContextNet(context_features, 2 * D, hidden, torch.zeros(2 * D))

    def mean_and_log_scale(self, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params(context, self)
        mean, log_scale = p.chunk(2, dim=1)
        view = (p.shape[0], *self.shape)
        return mean.reshape(view), log_scale.reshape(view)

    def log_prob(self, x, context=None):
        mean, log_scale = self.mean_and_log_scale(context)
        check_shape(self, x, tuple(mean.shape))
        u = (x - mean) * torch.exp(-log_scale)
        return sum_except_batch(-0.5 * (u**2 + LOG_2PI) - log_scale)

    def sample(self, num_samples, context=None, temperature=1.0):
        mean, log_scale = self.mean_and_log_scale(context)
        return mean + torch.exp(log_scale) * torch.randn_like(mean) * temperature

    def extra_repr(self) -> str:
        return f"shape={self.shape}, context_features={self.context_features}"


__all__ = [
    "ConditionalMixtureOfGaussians",
    "ContextNormal",
    "MixtureOfGaussians",
    "mixture_log_prob",
    "mixture_sample",
]
