"""A model = a base distribution plus a stack of transforms.

``log p(x) = log p_base(z_K) + Σ_k ldj_k`` where ``z_0 = x`` and ``(z_k, ldj_k) =
transform_k(z_{k-1})``. The value is exact when every transform is exact (bijections and
inference surjections) and a lower bound otherwise (generative surjections, stochastic layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from survae.distributions.base import Distribution
from survae.transforms.base import Transform


class Flow(nn.Module):
    """A (SurVAE) flow: ``Flow(base_dist, transforms)``; ``context`` goes to every layer."""

    def __init__(self, base_dist: Distribution, transforms: Sequence[Transform]):
        super().__init__()
        self.base_dist = base_dist
        self.transforms = nn.ModuleList(transforms)

    @property
    def exact(self) -> bool:
        """True when ``log_prob`` is the exact log-likelihood, False when it is a bound."""
        return all(t.exact for t in self.transforms)

    @property
    def invertible(self) -> bool:
        return all(t.invertible for t in self.transforms)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.log_prob(x, context)

    def transform_to_latent(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Push ``x`` through every transform; returns ``(z, summed likelihood contributions)``."""
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        for t in self.forward_plan():
            x, ldj = t(x, context)
            total = total + ldj
        return x, total

    def forward_plan(self) -> Sequence[Transform]:
        """The layers :meth:`transform_to_latent` runs, in order: ``transforms`` itself unless
        an equivalent regrouping of them was installed as the plain attribute ``_forward_plan``
        (:func:`survae.runtime.speed.enable_memory_saving` groups runs of bijections into
        memory-saving blocks). The regrouping is not registered as submodules, so parameters,
        ``state_dict`` keys and every other method are unaffected."""
        plan = self.__dict__.get("_forward_plan")
        return self.transforms if plan is None else plan

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Log-likelihood per example, in nats, shape ``[batch]`` (a bound when not ``exact``).

        ``−inf`` (density 0, as in ``torch.distributions``) where ``x`` lies outside the model's
        support: layers and bases with bounded support report it (e.g. ``Logit`` outside
        (0, 1), ``StandardUniform``). NaN only comes from a NaN input or a bug.

        ``z = 2x`` under a standard normal base makes ``x`` normal with standard deviation 1/2:

        >>> import torch
        >>> from survae.distributions import StandardNormal
        >>> from survae.transforms import Scale
        >>> flow = Flow(StandardNormal([1]), [Scale(2.0)])
        >>> x = torch.tensor([[0.0], [0.5]])
        >>> flow.log_prob(x)
        tensor([-0.2258, -0.7258])
        >>> torch.distributions.Normal(0.0, 0.5).log_prob(x[:, 0])
        tensor([-0.2258, -0.7258])
        """
        z, total = self.transform_to_latent(x, context)
        return total + self.base_dist.log_prob(z, context)

    def latent_to_data(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for t in reversed(self.transforms):
            z = t.inverse(z, context)
        return z

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        temperature: float = 1.0,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw samples; ``temperature`` scales the spread of the base distribution and of every
        layer that samples on the way back (splits, max-pool, VAE decoders), as in Glow."""
        layers = [m for m in self.modules() if m is not self and hasattr(m, "temperature")]
        saved = [m.temperature for m in layers]
        try:
            for m in layers:
                m.temperature = temperature
            z = self.base_dist.sample(num_samples, context=context, temperature=temperature)
            return self.latent_to_data(z, context)
        finally:
            for m, t in zip(layers, saved):
                m.temperature = t

    def sample_with_log_prob(
        self,
        num_samples: int,
        temperature: float = 1.0,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their exact log-likelihood, for flows of bijections only."""
        missing = [type(t).__name__ for t in self.transforms if not hasattr(t, "inverse_with_ldj")]
        if missing:
            raise TypeError(
                "sample_with_log_prob needs every layer to report its inverse log-determinant; "
                f"these do not: {', '.join(missing)}. Use sample() then log_prob() instead."
            )
        z, log_prob = self.base_dist.sample_with_log_prob(
            num_samples, context=context, temperature=temperature
        )
        for t in reversed(self.transforms):
            z, ldj = t.inverse_with_ldj(z, context)
            log_prob = log_prob - ldj
        return z, log_prob

    @torch.no_grad()
    def first_nonfinite_layer(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> str | None:
        """Name of the first layer whose output or contribution is NaN/inf on ``x`` (diagnostics
        after a non-finite loss; syncs with the device, so never call it in the hot path)."""
        if not torch.isfinite(x).all():
            return "input"
        for i, t in enumerate(self.transforms):
            x, ldj = t(x, context)
            if not (torch.isfinite(x).all() and torch.isfinite(ldj).all()):
                return f"transforms.{i} ({type(t).__name__})"
        if not torch.isfinite(self.base_dist.log_prob(x, context)).all():
            return f"base_dist ({type(self.base_dist).__name__})"
        return None
