"""Class-conditional Glow (Kingma & Dhariwal 2018, Sec. 5, "class-conditional"): the Glow of
:mod:`survae.architectures.glow` whose learned top prior depends on the class.

As the official code's ``--ycond``, the class enters the model only through the top prior:
its mean and log-std are the learned top prior's plus a per-channel shift that is a
zero-initialised linear function of the one-hot class (a learned mean and scale per class),
times a learned per-output scale ``exp(3·logs)`` as the official ``linear_zeros`` (``ycond``).
The model therefore starts exactly as the unconditional Glow with the same settings and
``log p(x | y)`` is a bound on the discrete class-conditional likelihood, as Glow's.
(The official code also adds a classifier loss on the top latent, ``weight_y``; not here.)

``class_embedding = E > 0`` (beyond the official code) also gives every coupling network the
class: a learned ``E``-dimensional embedding of the one-hot class (zero-initialised, one per
coupling), broadcast over the coupling's spatial positions as ``E`` extra input channels
(:class:`ClassEmbeddingContext`). It too starts as the unconditional model.
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
from survae.transforms.base import Bijection, Sequential
from survae.transforms.bijections.coupling import _Coupling
from survae.utils import sum_except_batch

LOG_2PI = 1.8378770664093453  # log(2π)


#: class embeddings of the top prior: openai/glow's ``linear_zeros`` (``--ycond``) and survae's
#: earlier zero-initialised ``nn.Linear`` (the same function without the output scale)
YCONDS = ("openai", "linear")


@register("distribution", "conditional_glow_top_prior")
class ConditionalGlowTopPrior(ConditionalDistribution):
    """Glow's class-conditional top prior ``N(μ + a(c), diag exp(log σ + b(c))²)`` on
    ``shape = (C, H, W)``: ``(μ, log σ)`` from :class:`GlowTopPrior`, ``(a, b)`` per-channel
    shifts from a zero-initialised linear map of the context ``[B, context_features]`` (the
    one-hot class). Starts as the unconditional prior; samples take their batch size from the
    context and have spread ``T·σ`` at temperature ``T``.

    ``ycond="openai"`` is openai/glow's ``prior`` with ``--ycond`` (``tfops.linear_zeros``):
    ``[a, b] = (c W + β) · exp(3 · logs)`` with ``W``, ``β`` and the per-output ``logs`` all
    zero at the start (``context_logs`` holds ``logs``); ``"linear"`` is survae's earlier
    ``[a, b] = c W + β`` (no output scale, ``2C`` parameters fewer).
    """

    def __init__(
        self,
        shape: Sequence[int],
        context_features: int,
        edge_bias: bool = True,
        ycond: str = "linear",
    ):
        super().__init__()
        self.top = GlowTopPrior(shape, edge_bias=edge_bias)
        self.shape = self.top.shape
        if context_features < 1:
            raise ValueError(
                f"ConditionalGlowTopPrior: context_features must be >= 1, got {context_features}"
            )
        if ycond not in YCONDS:
            raise ValueError(
                f"ConditionalGlowTopPrior: ycond must be one of {YCONDS}, got {ycond!r}"
            )
        self.context_features = int(context_features)
        self.ycond = ycond
        self.context_map = zero_init_(nn.Linear(context_features, 2 * self.shape[0]))
        if ycond == "openai":
            self.context_logs = nn.Parameter(torch.zeros(2 * self.shape[0]))
        else:
            self.register_parameter("context_logs", None)

    def class_shift(self, context: torch.Tensor) -> torch.Tensor:
        """``[a(c), b(c)]``, ``[B, 2C]``: the class's shift of the mean and the log-std."""
        h = self.context_map(context)
        if self.context_logs is not None:  # openai/glow's logscale_factor 3
            h = h * torch.exp(3.0 * self.context_logs)
        return h

    def mean_and_log_std(self, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``μ`` and ``log σ``, each ``[B, C, H, W]`` for a context of ``B`` rows."""
        if context is None:
            raise ValueError(
                "ConditionalGlowTopPrior is class-conditional: pass context=... (one-hot classes)"
            )
        check_shape(self, context, (None, self.context_features), "context")
        mean, log_std = self.top.mean_and_log_std()
        shift = self.class_shift(context.to(mean.dtype))[:, :, None, None]
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


@register("layer", "class_embedding_context")
class ClassEmbeddingContext(Bijection):
    """Runs a conditional image layer (a coupling built with ``context_channels=E``) on a
    class: the context ``[B, context_features]`` (one-hot) is embedded by a learned linear map
    into ``E`` features and broadcast to ``[B, E, H, W]`` at the input's spatial size.

    Likelihood contribution: that of the wrapped ``layer`` (``log|det|`` of its map given the
    embedded class). The embedding starts at zero (``zero_init=True``), so the wrapped layer
    starts by seeing an all-zero context.
    """

    def __init__(
        self,
        layer: Bijection,
        context_features: int,
        embedding_channels: int,
        zero_init: bool = True,
    ):
        super().__init__()
        if context_features < 1 or embedding_channels < 1:
            raise ValueError(
                "ClassEmbeddingContext: context_features and embedding_channels must be >= 1, "
                f"got {context_features}, {embedding_channels}"
            )
        if not isinstance(layer, Bijection):
            raise ValueError(f"ClassEmbeddingContext wraps a bijection, got {type(layer).__name__}")
        self.layer = layer
        self.context_features = int(context_features)
        self.embedding_channels = int(embedding_channels)
        self.embedding = nn.Linear(context_features, embedding_channels, bias=False)
        if zero_init:
            zero_init_(self.embedding)

    def _context(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if context is None:
            raise ValueError(
                "ClassEmbeddingContext is class-conditional: pass context=... (one-hot classes)"
            )
        check_shape(self, context, (x.shape[0], self.context_features), "context")
        e = self.embedding(context.to(x.dtype))
        return e.view(*e.shape, *([1] * (x.dim() - 2))).expand(*e.shape, *x.shape[2:])

    def forward(self, x, context=None):
        return self.layer(x, self._context(x, context))

    def inverse_with_ldj(self, z, context=None):
        return self.layer.inverse_with_ldj(z, self._context(z, context))

    def extra_repr(self) -> str:
        return (
            f"context_features={self.context_features}, "
            f"embedding_channels={self.embedding_channels}"
        )


def _embed_class_in_couplings(module: nn.Module, context_features: int, channels: int) -> int:
    """Wraps every coupling inside ``module``'s glow steps in :class:`ClassEmbeddingContext`;
    returns how many were wrapped."""
    count = 0
    for child in module.modules():
        if isinstance(child, Sequential):
            for i, t in enumerate(child.transforms):
                if isinstance(t, _Coupling):
                    child.transforms[i] = ClassEmbeddingContext(t, context_features, channels)
                    count += 1
    return count


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
    class_embedding: int = 0,
    shift_first: bool = True,
    actnorm_logscale_factor: float = 3.0,
    actnorm_init: str = "openai",
    ycond: str = "linear",
) -> MultiScaleFlow:
    """Class-conditional Glow: :func:`~survae.architectures.glow.glow` (``top_prior="learntop"``)
    with :class:`ConditionalGlowTopPrior` over ``context_features`` classes (one-hot context);
    ``class_embedding > 0``: the couplings also read a learned class embedding of that many
    channels (module docstring). ``ycond``: the prior's class embedding, ``"openai"``
    (openai/glow's ``linear_zeros``, with its output scale; the config's default) or
    ``"linear"`` (survae's earlier plain linear map, the builder's default, so checkpoints
    saved before the option load unchanged). The other arguments are Glow's."""
    if class_embedding < 0:
        raise ValueError(f"conditional_glow: class_embedding must be >= 0, got {class_embedding}")
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
        coupling_context_channels=class_embedding,
        shift_first=shift_first,
        actnorm_logscale_factor=actnorm_logscale_factor,
        actnorm_init=actnorm_init,
    )
    if class_embedding:
        _embed_class_in_couplings(flow, context_features, class_embedding)
    flow.base_dist = ConditionalGlowTopPrior(
        flow.base_dist.shape, context_features, edge_bias=edge_bias, ycond=ycond
    )
    return flow


__all__ = ["YCONDS", "ClassEmbeddingContext", "ConditionalGlowTopPrior", "conditional_glow"]
