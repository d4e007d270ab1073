"""Fixed elementwise nonlinear bijections: (sneaky) leaky ReLU, tanh, softplus and its inverse.

They act on inputs of any shape ``[B, ...]``; log-determinants are summed over all but the
batch. Used between linear layers in fully connected flows (the official SurVAE library's
``elementwise_nonlinear`` layers) and to map onto bounded or positive supports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from survae.registry import register
from survae.transforms.base import Bijection
from survae.utils import sum_except_batch

LOG_2 = math.log(2.0)


def _check_slope(name: str, slope: float) -> float:
    if not slope > 0:
        raise ValueError(f"{name}: negative_slope must be > 0 to be invertible, got {slope}")
    return float(slope)


def _check_eps(name: str, eps: float) -> float:
    if not eps > 0:
        raise ValueError(f"{name}: eps must be > 0, got {eps}")
    return float(eps)


@register("layer", "leaky_relu")
class LeakyReLU(Bijection):
    """``z = x`` for ``x ≥ 0`` and ``z = a·x`` for ``x < 0`` (``a = negative_slope > 0``).

    Likelihood contribution: ``log a`` times the number of negative elements.
    """

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = _check_slope("LeakyReLU", negative_slope)
        self._log_slope = math.log(self.negative_slope)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.leaky_relu(x, self.negative_slope)
        return z, sum_except_batch((x < 0).to(x.dtype)) * self._log_slope

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.leaky_relu(z, 1.0 / self.negative_slope)
        return x, -sum_except_batch((z < 0).to(z.dtype)) * self._log_slope

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


@register("layer", "sneaky_relu")
class SneakyReLU(Bijection):
    """A smooth leaky ReLU (Finzi et al. 2019, Invertible Convolutional Networks):
    ``z = (x + α·(√(1 + x²) − 1)) / (1 + α)`` with ``α = (1 − a)/(1 + a)``, slope ``a`` for
    ``x → −∞`` and 1 for ``x → ∞``.

    Likelihood contribution, summed over elements: ``log(1 + α·x/√(1 + x²)) − log(1 + α)``.
    The inverse is the closed-form root of the quadratic.
    """

    def __init__(self, negative_slope: float = 0.1):
        super().__init__()
        self.negative_slope = _check_slope("SneakyReLU", negative_slope)
        if self.negative_slope == 1.0:
            raise ValueError("SneakyReLU: negative_slope=1 is the identity; use another value")
        self.alpha = (1.0 - self.negative_slope) / (1.0 + self.negative_slope)

    def _ldj(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        return sum_except_batch(torch.log1p(a * x * torch.rsqrt(1 + x**2)) - math.log1p(a))

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.alpha
        z = (x + a * (torch.sqrt(1 + x**2) - 1)) / (1 + a)
        return z, self._ldj(x)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # (1 + α) z + α = x + α √(1 + x²)  =>  (1 − α²) x² − 2 b x + b² − α² = 0, b as below
        a = self.alpha
        b = (1 + a) * z + a
        # the root with b − x = α√(1 + x²), of the sign of α (slopes above 1 give α < 0)
        x = (b - a * torch.sqrt(b**2 + 1 - a**2)) / (1 - a**2)
        return x, -self._ldj(x)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


@register("layer", "tanh")
class Tanh(Bijection):
    """``z = tanh(x)``, ℝ → (−1, 1).

    Likelihood contribution, summed over elements: ``log(1 − tanh²x)``, computed as
    ``2·(log 2 − x − softplus(−2x))`` so that it stays finite for large ``|x|`` (where
    ``tanh`` rounds to ±1).
    """

    @staticmethod
    def _log_dtanh(x: torch.Tensor) -> torch.Tensor:
        return 2.0 * (LOG_2 - x - F.softplus(-2.0 * x))

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(x), sum_except_batch(self._log_dtanh(x))

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.atanh(z)  # ±inf at z = ±1, NaN outside [-1, 1]: no density there
        return x, -sum_except_batch(self._log_dtanh(x))


@register("layer", "softplus")
class Softplus(Bijection):
    """``z = softplus(x) = log(1 + eˣ)``, ℝ → (0, ∞).

    Likelihood contribution, summed over elements: ``log sigmoid(x)``. The inverse
    ``z + log(1 − e⁻ᶻ)`` clamps ``z`` to at least ``eps`` inside the logarithm.
    """

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = _check_eps("Softplus", eps)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return F.softplus(x), sum_except_batch(F.logsigmoid(x))

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = _softplus_inverse(z, self.eps)
        return x, -sum_except_batch(F.logsigmoid(x))

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def _softplus_inverse(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``log(eˣ − 1) = x + log(1 − e⁻ˣ)``, with ``x`` clamped to at least ``eps``."""
    x = x.clamp(min=eps)
    return x + torch.log(-torch.expm1(-x))


@register("layer", "softplus_inverse")
class SoftplusInverse(Bijection):
    """``z = log(eˣ − 1)``, (0, ∞) → ℝ, the inverse of :class:`Softplus`; ``x`` is clamped to
    at least ``eps``.

    Likelihood contribution, summed over elements: ``−log(1 − e⁻ˣ)``.
    """

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = _check_eps("SoftplusInverse", eps)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        xc = x.clamp(min=self.eps)
        return _softplus_inverse(x, self.eps), -sum_except_batch(torch.log(-torch.expm1(-xc)))

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return F.softplus(z), sum_except_batch(F.logsigmoid(z))

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
