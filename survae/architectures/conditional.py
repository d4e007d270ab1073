"""Class-conditional Glow (Kingma & Dhariwal 2018, Sec. 5, "class-conditional"): the Glow of
:mod:`survae.architectures.glow` whose learned top prior depends on the class.

As the official code's ``--ycond``, the class enters the model only through the top prior:
its mean and log-std are the learned top prior's plus a per-channel shift that is a
zero-initialised linear function of the one-hot class (a learned mean and scale per class).
The model therefore starts exactly as the unconditional Glow with the same settings and
``log p(x | y)`` is a bound on the discrete class-conditional likelihood, as Glow's.
(The official code also adds a classifier loss on the top latent, ``weight_y``; not here.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from survae.architectures.glow import GlowTopPrior, MultiScaleFlow, glow
from survae.distributions.base import ConditionalDistribution
from survae.errors import check_shape
from survae.nn.build import zero_init_
from survae.registry import register
from survae.utils import sum_except_batch

LOG_2PI = 1.8378770664093453  # log(2π)


@register("distribution", "conditional_glow_top_prior")
class ConditionalGlowTopPrior(ConditionalDistribution):
    """Glow's class-conditional top prior ``N(μ + a(c), diag exp(log σ + b(c))²)`` on
    ``shape = (C, H, W)``: ``(μ, log σ)`` from :class:`GlowTopPrior`, ``(a, b)`` per-channel
    shifts from a zero-initialised linear map of the context ``[B, context_features]`` (the
    one-hot class). Starts as the unconditional prior; samples take their batch size from the
    context and have spread ``T·σ`` at temperature ``T``."""

    def __init__(self, shape: Sequence[int], context_features: int, edge_bias: bool = True):
        super().__init__()
        self.top = GlowTopPrior(shape, edge_bias=edge_bias)
        self.shape = self.top.shape
        if context_features < 1:
            raise ValueError(
                f"ConditionalGlowTopPrior: context_features must be >= 1, got {context_features}"
            )
        self.context_features = int(context_features)
        self.context_map = zero_init_(nn.Linear(context_features, 2 * self.shape[0]))

    def mean_and_log_std(self, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``μ`` and ``log σ``, each ``[B, C, H, W]`` for a context of ``B`` rows."""
        if context is None:
            raise ValueError(
                "ConditionalGlowTopPrior is class-conditional: pass context=... (one-hot classes)"
            )
        check_shape(self, context, (None, self.context_features), "context")
        mean, log_std = self.top.mean_and_log_std()
        shift = self.context_map(context.to(mean.dtype))[:, :, None, None]
        d_mean, d_log_std = shift.chunk(2, dim=1)
        return mean + d_mean, log_std + d_log_std

    def log_prob(self, x, context=None):
        mean, log_std = self.mean_and_log_std(context)
        check_shape(self, x, (mean.shape[0], *self.shape))
        u = (x - mean) * torch.exp(-log_std)
        return sum_except_batch(-0.5 * (u**2 + LOG_2PI) - log_std)

    def sample(self, num_samples, context=None, temperature=1.0):
        mean, log_std = self.mean_and_log_std(context)
        return mean + torch.exp(log_std) * torch.randn_like(mean) * temperature


@register("architecture", "conditional_glow")
def conditional_glow(
    data_shape: Sequence[int] = (3, 32, 32),
    num_bins: int | None = 256,
    context_features: int = 10,
    num_levels: int = 3,
    num_steps: int = 32,
    hidden_channels: int = 512,
    permutation: str = "conv1x1",
    coupling: str = "affine",
    scale_fn: str = "sigmoid",
    learn_split_prior: bool = True,
    edge_bias: bool = True,
) -> MultiScaleFlow:
    """Class-conditional Glow: :func:`~survae.architectures.glow.glow` (``top_prior="learntop"``)
    with :class:`ConditionalGlowTopPrior` over ``context_features`` classes (one-hot context).
    The other arguments are Glow's."""
    flow = glow(
        data_shape,
        num_bins,
        num_levels=num_levels,
        num_steps=num_steps,
        hidden_channels=hidden_channels,
        permutation=permutation,
        coupling=coupling,
        scale_fn=scale_fn,
        learn_split_prior=learn_split_prior,
        top_prior="learntop",
        edge_bias=edge_bias,
    )
    flow.base_dist = ConditionalGlowTopPrior(
        flow.base_dist.shape, context_features, edge_bias=edge_bias
    )
    return flow


__all__ = ["ConditionalGlowTopPrior", "conditional_glow"]
