"""Conditional Gaussians whose network predicts the mean only (the official SurVAE library's
``ConditionalMeanNormal`` and ``ConditionalMeanStdNormal``): a fixed or a learned, context-free
standard deviation. Used as VAE decoders of real-valued data and as augmentation encoders.

As for :mod:`survae.distributions.conditional`, ``net`` maps the context to a tensor of the
event's shape (``event_channels`` channels along dimension 1), and ``log_prob`` sums over all
non-batch dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Normal

from survae.distributions.conditional import _NetConditional
from survae.nn.build import NetSpec
from survae.registry import register
from survae.utils import sum_except_batch


class _MeanNormal(_NetConditional):
    """``N(x; net(c), σ²)`` with ``σ`` from :meth:`scale`."""

    def scale(self, mean: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cond_dist(self, context: torch.Tensor | None) -> Normal:
        """The Gaussian ``N(net(c), σ²)`` of ``torch.distributions``."""
        mean = self._params(context)
        return Normal(mean, self.scale(mean).expand_as(mean))

    def log_prob(self, x, context=None):
        dist = self.cond_dist(context)
        self._check_event(x, dist.loc)
        return sum_except_batch(dist.log_prob(x))

    def sample(self, num_samples, context=None, temperature=1.0):
        return self.sample_with_log_prob(num_samples, context, temperature)[0]

    def sample_with_log_prob(self, num_samples, context=None, temperature=1.0):
        """A reparameterised draw at ``temperature`` (std ``T·σ``) and its log-density under
        the untempered distribution."""
        dist = self.cond_dist(context)
        x = dist.loc + temperature * dist.scale * torch.randn_like(dist.loc)
        return x, sum_except_batch(dist.log_prob(x))

    def mean(self, context: torch.Tensor) -> torch.Tensor:
        return self._params(context)

    def mode(self, context: torch.Tensor) -> torch.Tensor:
        return self.mean(context)


@register("distribution", "conditional_mean_normal")
class ConditionalMeanNormal(_MeanNormal):
    """``N(x; μ(c), σ² I)`` with the mean from ``net(context)`` and a fixed ``σ = scale``."""

    def __init__(
        self,
        net: NetSpec,
        scale: float = 1.0,
        context_channels: int | None = None,
        event_channels: int | None = None,
    ):
        if not scale > 0:
            raise ValueError(f"ConditionalMeanNormal: scale must be > 0, got {scale}")
        super().__init__(net, context_channels, event_channels)
        self.fixed_scale = float(scale)

    def scale(self, mean: torch.Tensor) -> torch.Tensor:
        return mean.new_tensor(self.fixed_scale)


@register("distribution", "conditional_mean_std_normal")
class ConditionalMeanStdNormal(_MeanNormal):
    """``N(x; μ(c), diag σ²)`` with the mean from ``net(context)`` and a learned ``log σ`` that
    does not depend on the context (zero-initialised: ``σ = 1`` at the start).

    ``scale_shape=None`` learns one ``σ`` per channel (dimension 1; needs ``event_channels``);
    a shape, e.g. ``(C, H, W)`` or ``(1,)``, learns a ``log σ`` of that shape, broadcast against
    the trailing dimensions of the event.
    """

    def __init__(
        self,
        net: NetSpec,
        scale_shape: Sequence[int] | None = None,
        context_channels: int | None = None,
        event_channels: int | None = None,
    ):
        super().__init__(net, context_channels, event_channels)
        self._per_channel = scale_shape is None
        if self._per_channel:
            if event_channels is None:
                raise ValueError(
                    "ConditionalMeanStdNormal: a per-channel scale needs event_channels "
                    "(or give scale_shape)"
                )
            scale_shape = (int(event_channels),)
        self.log_scale = nn.Parameter(torch.zeros(tuple(int(s) for s in scale_shape)))

    def scale(self, mean: torch.Tensor) -> torch.Tensor:
        log_scale = self.log_scale
        if self._per_channel:
            log_scale = log_scale.reshape(-1, *([1] * (mean.dim() - 2)))
        return log_scale.exp()
