"""The transform contract shared by every layer.

A transform maps data to latent with ``forward(x, context=None) -> (z, ldj)`` and latent to
data with ``inverse(z, context=None) -> x``. ``ldj`` has shape ``[batch]`` and is the layer's
likelihood contribution, so that ``log p(x) = log p(z) + sum(ldj)`` over a stack of layers:

* bijections: ``log |det dz/dx|`` (exact);
* inference surjections (deterministic forward: slice, abs, max-pool, sort):
  ``log p(dropped | kept)`` (exact);
* generative surjections and stochastic layers (stochastic forward: dequantization,
  augmentation, VAE): ``log p(x | z) - log q(z | x)``, a single-sample lower bound.

``exact`` says which of the two cases a transform is in; a flow is exact when all its layers
are. Every transform accepts an optional ``context`` and ignores it unless it is conditional.
"""

from __future__ import annotations

import torch
from torch import nn


class Transform(nn.Module):
    """Base class of all layers. See the module docstring for the contract."""

    #: whether ``forward``'s ``ldj`` is the exact log-likelihood contribution
    exact: bool = True
    #: whether ``inverse(forward(x)) == x`` holds deterministically
    invertible: bool = True

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class Bijection(Transform):
    """Invertible, differentiable map; ``ldj = log |det dz/dx|``.

    Subclasses implement ``forward`` and ``inverse_with_ldj(z, context) -> (x, log|det dx/dz|)``;
    ``inverse`` drops the log-determinant. Exact sampling with log-likelihood
    (``Flow.sample_with_log_prob``) relies on ``inverse_with_ldj``.
    """

    exact = True
    invertible = True

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.inverse_with_ldj(z, context)[0]


class Surjection(Transform):
    """Many-to-one map. Inference surjections have a deterministic forward and an exact
    contribution ``log p(dropped | kept)``; generative surjections have a stochastic forward
    and a lower-bound contribution ``log p(x|z) - log q(z|x)``."""

    #: True for generative surjections (dequantization, augmentation)
    stochastic_forward: bool = False
    invertible = False

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return not self.stochastic_forward


class StochasticTransform(Transform):
    """Stochastic layer (e.g. a VAE): contribution ``log p(x|z) - log q(z|x)``, a bound."""

    exact = False
    invertible = False


class InverseBijection(Bijection):
    """Runs a bijection backwards: ``forward`` is the wrapped ``inverse_with_ldj`` and vice versa.

    Used for IAF (a MAF run in the sampling direction) and for flows defined generatively.
    """

    def __init__(self, bijection: Bijection):
        super().__init__()
        self.bijection = bijection

    def forward(self, x, context=None):
        # the wrapped inverse_with_ldj already reports log|det| of the map it applies
        return self.bijection.inverse_with_ldj(x, context)

    def inverse_with_ldj(self, z, context=None):
        return self.bijection(z, context)


class Sequential(Transform):
    """A stack of transforms applied in order; contributions add up."""

    def __init__(self, transforms: list[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return all(t.exact for t in self.transforms)

    @property
    def invertible(self) -> bool:  # type: ignore[override]
        return all(t.invertible for t in self.transforms)

    def forward(self, x, context=None):
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ldj = t(x, context)
            total = total + ldj
        return x, total

    def inverse(self, z, context=None):
        for t in reversed(self.transforms):
            z = t.inverse(z, context)
        return z
