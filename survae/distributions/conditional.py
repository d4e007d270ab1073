"""Conditional densities ``p(x | context)`` whose parameters come from a network of the context.

They serve as VAE encoders/decoders, as learned priors for sliced-off channels (Glow's split),
as VFlow's augmentation posterior, and as the parameters of a dequantization flow. Each takes a
``net`` (a registered network name, a ``{"name": ..., **hparams}`` spec, or a ready module) and,
when ``net`` is a spec, the sizes to build it with: ``context_channels`` (the network input) and
``event_channels`` (channels of ``x``). Networks map ``[B, context_channels, ...]`` to
``[B, k·event_channels, ...]``; the output is split along dim 1 (channels or features), so the
same classes work for vectors ``[B, D]`` and images ``[B, C, H, W]``.

``log_prob(x, context) -> [B]`` sums over all non-batch dimensions. ``sample(num_samples,
context, temperature)`` takes the batch size and shape from ``context`` (``num_samples`` is
ignored); ``context`` is required. An integer context (e.g. binarized pixels fed to a VAE
encoder) reaches the network as floats of its weights' dtype.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from survae.distributions.base import ConditionalDistribution
from survae.errors import ShapeError, check_shape
from survae.nn.build import NetSpec, build_network
from survae.registry import register
from survae.utils import sum_except_batch

LOG_2PI = math.log(2 * math.pi)


def _build(
    owner: str,
    net: NetSpec,
    context_channels: int | None,
    event_channels: int | None,
    multiplier: int,
) -> torch.nn.Module:
    if isinstance(net, torch.nn.Module):
        return net
    if context_channels is None or event_channels is None:
        raise ValueError(
            f"{owner}: building the network from the spec {net!r} needs context_channels and "
            "event_channels (or pass a ready nn.Module as net)"
        )
    return build_network(net, int(context_channels), multiplier * int(event_channels))


class _NetConditional(ConditionalDistribution):
    """Shared plumbing: the network, the context requirement and the output split."""

    #: the network outputs ``_multiplier · event_channels`` channels
    _multiplier = 1

    def __init__(
        self,
        net: NetSpec,
        context_channels: int | None = None,
        event_channels: int | None = None,
        _multiplier: int | None = None,
    ):
        super().__init__()
        mult = self._multiplier if _multiplier is None else _multiplier
        self.net = _build(type(self).__name__, net, context_channels, event_channels, mult)
        self.context_channels = context_channels
        self.event_channels = event_channels

    def _params(self, context: torch.Tensor | None) -> torch.Tensor:
        if context is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass context=...")
        if not context.is_floating_point():  # integer data (binary pixels) as a VAE's input
            weight = next(self.net.parameters(), None)
            context = context.to(torch.get_default_dtype() if weight is None else weight.dtype)
        return self.net(context)

    def _check_event(self, x: torch.Tensor, like: torch.Tensor) -> None:
        check_shape(self, x, tuple(like.shape), what="x (shape implied by the context)")


@register("distribution", "conditional_normal")
class ConditionalNormal(_NetConditional):
    """Diagonal Gaussian ``N(x; μ(c), diag σ(c)²)``.

    ``net(context)`` has ``2·event_channels`` channels along dim 1: the first half is the mean,
    the second half ``log σ``. Sampling is reparameterised (differentiable in the network
    parameters), and at temperature ``T`` draws ``μ + T·σ·ε``.
    """

    _multiplier = 2

    def mean_and_log_std(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self._params(context)
        if params.shape[1] % 2:
            raise ShapeError(
                f"ConditionalNormal: the network output needs an even size along dim 1 "
                f"(mean and log-std halves), got shape {tuple(params.shape)}"
            )
        mean, log_std = params.chunk(2, dim=1)
        return mean, log_std

    def log_prob(self, x, context=None):
        mean, log_std = self.mean_and_log_std(context)
        self._check_event(x, mean)
        u = (x - mean) * torch.exp(-log_std)
        return sum_except_batch(-0.5 * (u**2 + LOG_2PI) - log_std)

    def sample(self, num_samples, context=None, temperature=1.0):
        return self.sample_with_log_prob(num_samples, context, temperature)[0]

    def sample_with_log_prob(self, num_samples, context=None, temperature=1.0):
        mean, log_std = self.mean_and_log_std(context)
        u = torch.randn_like(mean) * temperature
        x = mean + torch.exp(log_std) * u
        return x, sum_except_batch(-0.5 * (u**2 + LOG_2PI) - log_std)

    def mean(self, context: torch.Tensor) -> torch.Tensor:
        return self.mean_and_log_std(context)[0]

    def mode(self, context: torch.Tensor) -> torch.Tensor:
        return self.mean(context)


@register("distribution", "conditional_bernoulli")
class ConditionalBernoulli(_NetConditional):
    """Independent Bernoulli variables in {0, 1} with logits ``net(context)`` (same shape as x).

    At temperature ``T`` sampling uses logits ``/ T``. Samples are float 0/1 tensors; they are
    not differentiable in the parameters (not reparameterisable)."""

    def logits(self, context: torch.Tensor) -> torch.Tensor:
        return self._params(context)

    def log_prob(self, x, context=None):
        logits = self.logits(context)
        self._check_event(x, logits)
        x = x.to(logits.dtype)
        return -sum_except_batch(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))

    def sample(self, num_samples, context=None, temperature=1.0):
        probs = torch.sigmoid(self.logits(context) / temperature)
        return (torch.rand_like(probs) < probs).to(probs.dtype)

    def mean(self, context: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(context))

    def mode(self, context: torch.Tensor) -> torch.Tensor:
        return (self.logits(context) > 0).to(torch.get_default_dtype())


@register("distribution", "conditional_categorical")
class ConditionalCategorical(_NetConditional):
    """Independent categorical variables in ``{0, …, num_categories − 1}`` per element, e.g.
    8-bit pixels (``num_categories = 256``).

    Logits layout (``logits_layout``):

    * ``"flat"`` (default): ``net(context)`` is ``[B, C·K, *S]`` with channel ``c``'s ``K``
      logits at indices ``c·K … c·K + K − 1`` (so a conv net with ``C·K`` output channels, or an
      MLP with ``D·K`` outputs for vectors ``[B, D]``);
    * ``"split"``: ``net(context)`` is already ``[B, C, K, *S]``.

    ``x`` holds integer values (long, uint8 or float; values outside ``[0, K − 1]`` are
    clamped into it rather than checked, which would sync with the device). Samples and modes
    are ``torch.long``; ``mean`` is the float expectation ``Σ_k k·p_k``. Temperature ``T``
    divides the logits.
    """

    def __init__(
        self,
        net: NetSpec,
        num_categories: int,
        context_channels: int | None = None,
        event_channels: int | None = None,
        logits_layout: Literal["flat", "split"] = "flat",
    ):
        if logits_layout not in ("flat", "split"):
            raise ValueError(f"logits_layout must be 'flat' or 'split', got {logits_layout!r}")
        if num_categories < 2:
            raise ValueError(f"num_categories must be at least 2, got {num_categories}")
        super().__init__(net, context_channels, event_channels, _multiplier=int(num_categories))
        self.num_categories = int(num_categories)
        self.logits_layout = logits_layout

    def logits(self, context: torch.Tensor) -> torch.Tensor:
        """Logits as ``[B, C, K, *S]``."""
        out = self._params(context)
        K = self.num_categories
        if self.logits_layout == "split":
            if out.dim() < 3 or out.shape[2] != K:
                raise ShapeError(
                    f"ConditionalCategorical: 'split' logits need shape (B, C, {K}, ...), "
                    f"got {tuple(out.shape)}"
                )
            return out
        if out.dim() < 2 or out.shape[1] % K:
            raise ShapeError(
                f"ConditionalCategorical: 'flat' logits need dim 1 to be a multiple of "
                f"num_categories={K}, got shape {tuple(out.shape)}"
            )
        return out.reshape(out.shape[0], out.shape[1] // K, K, *out.shape[2:])

    def log_prob(self, x, context=None):
        logits = self.logits(context)
        expected = (logits.shape[0], logits.shape[1], *logits.shape[3:])
        check_shape(self, x, expected, what="x (shape implied by the context)")
        log_p = torch.log_softmax(logits, dim=2)
        idx = x.long().clamp(0, self.num_categories - 1).unsqueeze(2)
        return sum_except_batch(log_p.gather(2, idx).squeeze(2))

    def sample(self, num_samples, context=None, temperature=1.0):
        logits = self.logits(context) / temperature
        # Gumbel-max: argmax(logits + Gumbel noise) is a categorical draw; no host sync.
        u = torch.rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny, max=1.0)
        return (logits - torch.log(-torch.log(u))).argmax(dim=2)

    def probs(self, context: torch.Tensor) -> torch.Tensor:
        """Probabilities as ``[B, C, K, *S]``."""
        return torch.softmax(self.logits(context), dim=2)

    def mean(self, context: torch.Tensor) -> torch.Tensor:
        p = self.probs(context)
        k = torch.arange(self.num_categories, device=p.device, dtype=p.dtype)
        return (p * k.view(1, 1, -1, *([1] * (p.dim() - 3)))).sum(2)

    def mode(self, context: torch.Tensor) -> torch.Tensor:
        return self.logits(context).argmax(dim=2)
