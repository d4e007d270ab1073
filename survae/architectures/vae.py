"""Variational autoencoders as SurVAE flows: a VAE with a diagonal Gaussian posterior
(Kingma & Welling 2014) and one with an inverse autoregressive flow posterior (IAF; Kingma et
al. 2016), for discrete images such as 8-bit MNIST.

Likelihood of the 8-bit data (our choice, documented here): an image of integers in
``{0, …, num_bins − 1}`` is uniformly dequantized to ``x = (pixel + u) / num_bins`` in
``[0, 1)``, flattened, and modelled by a VAE whose decoder ``p(x | z)`` is a diagonal Gaussian
on those continuous values (mean and log-std per pixel from an MLP of ``z``). The
dequantization contributes ``−D · log(num_bins)``, the VAE layer ``log p(x | z) − log q(z | x)``
and the base ``log N(z; 0, I)``, so ``log_prob`` is a single-sample lower bound on the discrete
log-likelihood ``log P(pixels)`` and bits/dim come out in the papers' units. (A categorical
decoder with 256 logits per pixel would need an MLP with ``784 · 256`` outputs; a Gaussian on
dequantized values keeps the decoder small and cannot collapse, since the noise spreads each
pixel over its bin of width ``1 / num_bins``.) Test values use the importance-weighted bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from survae.architectures.autoregressive import Flatten
from survae.distributions import ConditionalNormal, StandardNormal
from survae.distributions.base import ConditionalDistribution
from survae.errors import ShapeError
from survae.flows import Flow
from survae.nn.build import NetSpec, build_network
from survae.registry import register
from survae.transforms import Transform
from survae.transforms.bijections.autoregressive import InverseAutoregressive
from survae.transforms.stochastic.vae import VAE
from survae.transforms.surjections.dequantization import UniformDequantization
from survae.utils import sum_except_batch

LOG_2PI = math.log(2 * math.pi)


@register("distribution", "iaf_posterior")
class IAFPosterior(ConditionalDistribution):
    """Posterior ``q(z | x)`` with inverse autoregressive flow (Kingma et al. 2016, Sec. 4).

    A network of ``x`` gives ``[μ, log σ, h]``; ``z_0 = μ + σ ⊙ ε`` with ``ε ~ N(0, I)``, then
    ``num_steps`` IAF layers ``z_t = (z_{t−1} − m_t) ⊙ exp(−α_t)``, whose shift and log-scale
    come from a MADE of ``z_{t−1}`` and the context ``h`` (the autoregressive order reverses
    from one step to the next). ``log q(z_T | x) = log N(z_0; μ, σ²) − Σ_t log|det dz_t/dz_{t−1}|``.

    ``sample_with_log_prob`` (what a VAE layer calls) is one network pass plus one MADE pass per
    step; ``log_prob`` inverts the IAF steps, ``latent_features`` sequential passes each.
    """

    def __init__(
        self,
        latent_features: int,
        net: NetSpec,
        context_channels: int | None = None,
        num_steps: int = 2,
        hidden: Sequence[int] = (320, 320),
        context_features: int = 64,
        activation_name: str = "relu",
        log_scale_bound: float | None = 5.0,
    ):
        super().__init__()
        if latent_features < 1 or context_features < 1 or num_steps < 0:
            raise ValueError(
                "IAFPosterior: latent_features and context_features must be >= 1 and "
                f"num_steps >= 0, got {latent_features}, {context_features}, {num_steps}"
            )
        self.latent_features = int(latent_features)
        self.context_features = int(context_features)
        out = 2 * self.latent_features + self.context_features
        if isinstance(net, nn.Module):
            self.net = net
        elif context_channels is None:
            raise ValueError("IAFPosterior: building net from a spec needs context_channels")
        else:
            self.net = build_network(net, int(context_channels), out)
        self.steps = nn.ModuleList(
            InverseAutoregressive(
                self.latent_features,
                hidden=tuple(hidden),
                context_features=self.context_features,
                reverse_order=t % 2 == 1,
                activation_name=activation_name,
                log_scale_bound=log_scale_bound,
            )
            for t in range(num_steps)
        )

    def _encode(self, context: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        if context is None:
            raise ValueError("IAFPosterior is conditional: pass context=x")
        params = self.net(context)
        L, H = self.latent_features, self.context_features
        if params.dim() != 2 or params.shape[1] != 2 * L + H:
            raise ShapeError(
                f"IAFPosterior: the network must output (batch, {2 * L + H}) = [mean, log_std, "
                f"context], got {tuple(params.shape)}"
            )
        return params.split([L, L, H], dim=1)

    def sample_with_log_prob(self, num_samples, context=None, temperature=1.0):
        mean, log_std, h = self._encode(context)
        eps = torch.randn_like(mean) * temperature
        z = mean + torch.exp(log_std) * eps
        log_q = sum_except_batch(-0.5 * (eps**2 + LOG_2PI) - log_std)
        for step in self.steps:
            z, ldj = step.inverse_with_ldj(z, h)  # the fast (sampling) direction of an IAF
            log_q = log_q - ldj
        return z, log_q

    def sample(self, num_samples, context=None, temperature=1.0):
        return self.sample_with_log_prob(num_samples, context, temperature)[0]

    def log_prob(self, x, context=None):
        mean, log_std, h = self._encode(context)
        if x.shape != mean.shape:
            raise ShapeError(
                f"IAFPosterior: expected z of shape {tuple(mean.shape)}, got {tuple(x.shape)}"
            )
        z, log_det = x, x.new_zeros(x.shape[0])
        for step in reversed(self.steps):
            z, ldj = step(z, h)  # z_t -> z_{t-1}, ldj = log|det dz_{t-1}/dz_t|
            log_det = log_det + ldj
        u = (z - mean) * torch.exp(-log_std)
        return sum_except_batch(-0.5 * (u**2 + LOG_2PI) - log_std) + log_det


def _layers_before_vae(
    data_shape: Sequence[int], num_bins: int | None
) -> tuple[list[Transform], int]:
    """Dequantization (discrete data) and flattening (more than one axis), and the number of
    features the VAE then sees."""
    layers: list[Transform] = []
    if num_bins is not None:
        layers.append(UniformDequantization(num_bins))
    if len(data_shape) > 1:
        layers.append(Flatten(data_shape))
    return layers, math.prod(int(s) for s in data_shape)


def _mlp(hidden: Sequence[int], activation: str) -> dict:
    return {"name": "mlp", "hidden": list(hidden), "activation_name": activation}


def _decoder(latent_features: int, D: int, hidden: Sequence[int], activation: str):
    return ConditionalNormal(
        net=_mlp(hidden, activation), context_channels=latent_features, event_channels=D
    )


@register("architecture", "vae")
def vae(
    data_shape: Sequence[int],
    num_bins: int | None = None,
    latent_features: int = 32,
    hidden: Sequence[int] = (512, 512),
    activation: str = "relu",
) -> Flow:
    """VAE with MLP encoder ``q(z | x) = N(μ(x), diag σ(x)²)``, MLP Gaussian decoder and a
    standard normal prior on ``z`` (``latent_features``); a lower bound (``exact`` False).
    Discrete images (``num_bins``) are dequantized first (see the module docstring)."""
    layers, D = _layers_before_vae(data_shape, num_bins)
    encoder = ConditionalNormal(
        net=_mlp(hidden, activation), context_channels=D, event_channels=latent_features
    )
    layers.append(VAE(encoder, _decoder(latent_features, D, hidden, activation)))
    return Flow(StandardNormal((latent_features,)), layers)


@register("architecture", "iaf_vae")
def iaf_vae(
    data_shape: Sequence[int],
    num_bins: int | None = None,
    latent_features: int = 32,
    hidden: Sequence[int] = (512, 512),
    activation: str = "relu",
    num_iaf_steps: int = 2,
    iaf_hidden: Sequence[int] = (320, 320),
    iaf_context_features: int = 64,
) -> Flow:
    """The :func:`vae` with an IAF posterior (:class:`IAFPosterior`: ``num_iaf_steps`` IAF
    layers with MADEs of ``iaf_hidden`` units, conditioned on an ``iaf_context_features``-dim
    encoder output); a lower bound (``exact`` False)."""
    layers, D = _layers_before_vae(data_shape, num_bins)
    encoder = IAFPosterior(
        latent_features,
        net=_mlp(hidden, activation),
        context_channels=D,
        num_steps=num_iaf_steps,
        hidden=iaf_hidden,
        context_features=iaf_context_features,
        activation_name=activation,
    )
    layers.append(VAE(encoder, _decoder(latent_features, D, hidden, activation)))
    return Flow(StandardNormal((latent_features,)), layers)


__all__ = ["IAFPosterior", "iaf_vae", "vae"]
