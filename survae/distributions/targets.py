"""Unnormalised target densities for training a flow by reverse KL or an alpha-divergence
(variational inference, Boltzmann generators), registered as ``target``.

A target has ``dim`` (the event size), ``log_prob(x) [B, dim] -> [B]`` (an unnormalised
log-density ``log p̃(x) = log p(x) + log Z``) and ``log_normalizer``: ``log Z`` where it is
known (analytic or by quadrature), else ``None``. Data configs name one under
``data.target`` (``data=target``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from survae.errors import check_shape
from survae.registry import register


class Target(nn.Module):
    """Base class: an unnormalised log-density on ``R^dim`` (see the module docstring)."""

    dim: int = 2
    #: ``log Z = log ∫ p̃`` when known
    log_normalizer: float | None = None

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(self, x, (None, self.dim))
        return self.log_prob(x)


@register("target", "two_moons_energy")
class TwoMoonsEnergy(Target):
    """normflows' ``TwoMoons`` target: ``log p̃(x) = -½((‖x‖ - 2)/0.2)² - ½((|x₁| - 2)/0.3)² +
    log(1 + exp(-4|x₁|/0.09))``, two crescents at ``x₁ = ±2``; ``log Z`` unknown."""

    dim = 2

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        a = x[:, 0].abs()
        return (
            -0.5 * ((x.norm(dim=1) - 2.0) / 0.2) ** 2
            - 0.5 * ((a - 2.0) / 0.3) ** 2
            + F.softplus(-4.0 * a / 0.09)
        )


@register("target", "ring")
class RingEnergy(Target):
    """A ring: ``log p̃(x) = -½((‖x‖ - radius)/width)²`` in 2-D, with ``log Z = log ∫ 2π r
    exp(-½((r - radius)/width)²) dr`` computed by quadrature."""

    dim = 2

    def __init__(self, radius: float = 2.0, width: float = 0.25):
        super().__init__()
        if radius <= 0 or width <= 0:
            raise ValueError(f"ring: radius and width must be > 0, got {radius}, {width}")
        self.radius, self.width = float(radius), float(width)
        r = torch.linspace(0.0, radius + 12 * width, 200_001, dtype=torch.float64)
        density = 2 * math.pi * r * torch.exp(-0.5 * ((r - radius) / width) ** 2)
        self.log_normalizer = math.log(torch.trapezoid(density, r).item())

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x.norm(dim=1) - self.radius) / self.width) ** 2


@register("target", "gaussian_mixture")
class GaussianMixtureTarget(Target):
    """``num_modes`` equal-weight isotropic Gaussians (std ``std``) with means on a circle of
    radius ``radius`` in the first two coordinates of ``R^dim``, scaled by ``exp(log_scale)``:
    ``log p̃ = log Σ_k N(x; μ_k, std² I)/K + log_scale``, so ``log Z = log_scale`` exactly."""

    def __init__(
        self,
        num_modes: int = 8,
        radius: float = 3.0,
        std: float = 0.5,
        dim: int = 2,
        log_scale: float = 1.5,
    ):
        super().__init__()
        if num_modes < 1 or std <= 0 or dim < 2:
            raise ValueError("gaussian_mixture: needs num_modes >= 1, std > 0 and dim >= 2")
        self.dim, self.std, self.log_normalizer = int(dim), float(std), float(log_scale)
        angles = 2 * math.pi * torch.arange(num_modes, dtype=torch.float64) / num_modes
        means = torch.zeros(num_modes, self.dim, dtype=torch.float64)
        means[:, 0], means[:, 1] = radius * angles.cos(), radius * angles.sin()
        self.register_buffer("means", means)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        d2 = ((x.unsqueeze(1) - self.means.to(x.dtype)) ** 2).sum(-1)
        log_norm = -0.5 * self.dim * math.log(2 * math.pi * self.std**2)
        log_k = math.log(self.means.shape[0])
        comp = -0.5 * d2 / self.std**2 + log_norm
        return torch.logsumexp(comp, dim=1) - log_k + self.log_normalizer


@register("target", "double_well")
class DoubleWell(Target):
    """Boltzmann generators' double well (Noé et al. 2019) in ``dim`` dimensions:
    ``log p̃(x) = -(a x₁⁴ - b x₁² + c x₁) - ½ Σ_{i>1} x_i²``; ``log Z`` by quadrature in ``x₁``
    plus ``(dim - 1)/2 · log 2π`` (the paper's ``a, b, c = 1, 6, 1``)."""

    def __init__(self, dim: int = 2, a: float = 1.0, b: float = 6.0, c: float = 1.0):
        super().__init__()
        if dim < 1 or a <= 0:
            raise ValueError(f"double_well: needs dim >= 1 and a > 0, got {dim}, {a}")
        self.dim, self.a, self.b, self.c = int(dim), float(a), float(b), float(c)
        t = torch.linspace(-8.0, 8.0, 400_001, dtype=torch.float64)
        log_f = -(self.a * t**4 - self.b * t**2 + self.c * t)
        peak = log_f.max()
        log_z1 = peak.item() + math.log(torch.trapezoid((log_f - peak).exp(), t).item())
        self.log_normalizer = log_z1 + 0.5 * (self.dim - 1) * math.log(2 * math.pi)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x1 = x[:, 0]
        energy = self.a * x1**4 - self.b * x1**2 + self.c * x1
        return -energy - 0.5 * (x[:, 1:] ** 2).sum(dim=1)


__all__ = ["DoubleWell", "GaussianMixtureTarget", "RingEnergy", "Target", "TwoMoonsEnergy"]
