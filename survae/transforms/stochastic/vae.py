"""The VAE as a stochastic layer of a SurVAE flow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import survae.distributions.conditional  # noqa: F401  (registers the conditional distributions)
from survae.distributions.base import Distribution
from survae.registry import build_from_spec, register
from survae.transforms.base import StochasticTransform


def _as_distribution(spec: Distribution | str | Mapping[str, Any], role: str) -> Distribution:
    if isinstance(spec, Distribution):
        return spec
    if isinstance(spec, (str, Mapping)):
        return build_from_spec("distribution", spec)
    raise TypeError(
        f"VAE: {role} must be a conditional distribution or a distribution spec, "
        f"got {type(spec).__name__}"
    )


@register("layer", "vae")
class VAE(StochasticTransform):
    """Stochastic layer ``x → z`` with an encoder ``q(z | x)`` and a decoder ``p(x | z)``
    (Kingma & Welling 2014; as a SurVAE layer, Nielsen et al. 2020).

    ``forward`` draws ``z ~ q(z | x)`` (reparameterised when the encoder supports it, e.g.
    ``ConditionalNormal``); the likelihood contribution ``log p(x | z) − log q(z | x)`` is a
    single-sample lower bound (the ELBO once the prior on ``z`` is added by the next layers).
    ``inverse`` samples ``x ~ p(x | z)`` at ``self.temperature``, or returns the decoder's mean
    when ``sample_mean=True`` (needs a decoder with ``mean(context)``).

    ``encoder``/``decoder``: conditional distribution instances or registry specs such as
    ``{"name": "conditional_normal", "net": "mlp", "context_channels": 2, "event_channels": 4}``.
    """

    def __init__(
        self,
        encoder: Distribution | str | Mapping[str, Any],
        decoder: Distribution | str | Mapping[str, Any],
        sample_mean: bool = False,
    ):
        super().__init__()
        self.encoder = _as_distribution(encoder, "encoder")
        self.decoder = _as_distribution(decoder, "decoder")
        self.sample_mean = sample_mean
        self.temperature = 1.0

    def forward(self, x, context=None):
        z, log_q = self.encoder.sample_with_log_prob(x.shape[0], context=x)
        log_p = self.decoder.log_prob(x, context=z)
        return z, log_p - log_q

    def inverse(self, z, context=None):
        if self.sample_mean:
            return self.decoder.mean(z)
        return self.decoder.sample(z.shape[0], context=z, temperature=self.temperature)
