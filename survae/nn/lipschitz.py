"""Lipschitz-constrained networks for residual flows (i-ResNet, Behrmann et al. 2019; Residual
Flows, Chen et al. 2019).

A residual block ``x + g(x)`` is invertible when ``Lip(g) < 1``. ``g`` is built from linear
maps (dense or convolutional) whose induced 2-norm is bounded by a coefficient ``c < 1`` and
1-Lipschitz activations, so ``Lip(g) ≤ c^L``.

* :class:`SpectralNormCoeff`: the papers' coefficient-scaled spectral normalisation
  ``W ← W / max(1, σ̂(W) / c)``, with ``σ̂`` the induced 2-norm of the *operator* (for a
  convolution, of the convolution on images of the given size, not of the reshaped kernel)
  from power iteration. ``torch.nn.utils.parametrizations.spectral_norm`` divides by ``σ``
  always (Lipschitz exactly 1, no coefficient) and treats a kernel as a matrix, so it does
  not fit; this one is registered through ``torch.nn.utils.parametrize`` the same way.
* :class:`LipSwish`: ``x · sigmoid(β x) / 1.1`` (Residual Flows), 1-Lipschitz for every β > 0.
* :func:`lipschitz_mlp` and :func:`lipschitz_convnet`: the papers' ``g`` (pre-activation,
  LipSwish between normalised layers; convolutions with kernels 3-1-3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class SpectralNormCoeff(nn.Module):
    """Parametrization ``W ↦ W / max(1, σ̂(W) / coeff)`` of a dense or convolutional weight.

    ``σ̂ = uᵀ A(v)`` is the power-iteration estimate of the induced 2-norm of the linear
    operator ``A`` the weight applies (``A(v) = W v`` for a dense layer; the stride-1, ``same``
    padded convolution of a ``[C_in, *image_size]`` input for a conv layer). In training mode
    every evaluation first refines ``u, v`` (buffers, saved with the model): ``n_iterations``
    steps, or when ``n_iterations`` is None until both move by at most ``tol`` per entry
    (root mean square, with the same relative tolerance; the official ``atol = rtol =
    --sn-tol``), at most ``max_iterations`` (the papers' ``--n-lipschitz-iters`` and
    ``--sn-tol``). The gradient flows through ``σ̂`` as in ``torch``'s spectral norm.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        coeff: float = 0.98,
        image_size: Sequence[int] | None = None,
        padding: int = 0,
        n_iterations: int | None = None,
        tol: float = 1e-3,
        max_iterations: int = 100,
    ):
        super().__init__()
        if not 0.0 < coeff:
            raise ValueError(f"SpectralNormCoeff: coeff must be > 0, got {coeff}")
        self.coeff = float(coeff)
        # a 1×1 convolution's operator norm is its [C_out, C_in] matrix's: iterate on that
        self.conv = weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1)
        self.padding = int(padding)
        self.n_iterations = n_iterations
        self.tol = float(tol)
        self.max_iterations = int(max_iterations)
        if self.conv:
            if image_size is None:
                raise ValueError("SpectralNormCoeff: a convolution needs image_size (H, W)")
            in_shape = (1, weight.shape[1], *(int(s) for s in image_size))
            out_shape = (1, weight.shape[0], *in_shape[2:])
        else:
            in_shape, out_shape = (weight.shape[1],), (weight.shape[0],)
        g = torch.Generator().manual_seed(0)
        v = torch.randn(in_shape, generator=g, dtype=weight.dtype).to(weight.device)
        u = torch.randn(out_shape, generator=g, dtype=weight.dtype).to(weight.device)
        self.register_buffer("_v", F.normalize(v.flatten(), dim=0).view(in_shape))
        self.register_buffer("_u", F.normalize(u.flatten(), dim=0).view(out_shape))
        self.power_iteration(weight.detach(), None)  # to the tolerance, as every training step

    def _apply_op(self, weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.conv:
            return F.conv2d(v, weight, padding=self.padding)
        return weight.flatten(1) @ v

    def _apply_adjoint(self, weight: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.conv:
            return F.conv_transpose2d(u, weight, padding=self.padding)
        return weight.flatten(1).t() @ u

    @torch.no_grad()
    def power_iteration(self, weight: torch.Tensor, n: int | None = None) -> None:
        """Refine ``u, v`` in place (``n`` steps, or the tolerance rule when ``n`` is None)."""
        steps = self.max_iterations if n is None else int(n)
        u, v = self._u, self._v
        for _ in range(steps):
            v_new = F.normalize(self._apply_adjoint(weight, u).flatten(), dim=0).view_as(v)
            u_new = F.normalize(self._apply_op(weight, v_new).flatten(), dim=0).view_as(u)
            done = n is None and self._converged(u, u_new) and self._converged(v, v_new)
            u, v = u_new, v_new
            if done:
                break
        self._u.copy_(u)
        self._v.copy_(v)

    def _converged(self, old: torch.Tensor, new: torch.Tensor) -> bool:
        """The official rule (``atol = rtol = tol`` on the root-mean-square entry):
        ``‖new - old‖ / √n ≤ tol + tol · ‖new‖ / √n``."""
        root_n = math.sqrt(new.numel())
        return bool((new - old).norm() / root_n <= self.tol * (1.0 + new.norm() / root_n))

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """The estimate ``uᵀ A(v)`` of the operator norm (differentiable in the weight)."""
        return (self._u * self._apply_op(weight, self._v)).sum()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.power_iteration(weight.detach(), self.n_iterations)
        factor = torch.clamp(self.sigma(weight) / self.coeff, min=1.0)
        return weight / factor

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}, conv={self.conv}"


def spectral_norm_coeff(module: nn.Module, **kwargs) -> nn.Module:
    """Register :class:`SpectralNormCoeff` on ``module.weight`` (a Linear or Conv2d)."""
    parametrize.register_parametrization(
        module, "weight", SpectralNormCoeff(module.weight, **kwargs)
    )
    return module


class LipSwish(nn.Module):
    """``x · sigmoid(β x) / 1.1`` with a learned ``β = softplus(b)`` (Residual Flows, Sec. 4):
    1-Lipschitz for every ``β`` and, unlike ELU/ReLU, with a Lipschitz derivative."""

    def __init__(self, init_beta_raw: float = 0.5):
        super().__init__()
        self.beta_raw = nn.Parameter(torch.tensor(float(init_beta_raw)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x * F.softplus(self.beta_raw)) / 1.1


def _normalised(layer: nn.Module, coeff: float, **kwargs) -> nn.Module:
    return spectral_norm_coeff(layer, coeff=coeff, **kwargs)


def lipschitz_mlp(
    features: int,
    hidden: Sequence[int],
    coeff: float = 0.98,
    preact: bool = True,
    n_iterations: int | None = None,
    tol: float = 1e-3,
) -> nn.Sequential:
    """``g`` on vectors: ``[LipSwish →] Linear → LipSwish → ... → Linear`` with every weight
    normalised to induced 2-norm ``≤ coeff`` (``Lip(g) ≤ coeff^(len(hidden)+1)``)."""
    sizes = [int(features), *(int(h) for h in hidden), int(features)]
    layers: list[nn.Module] = [LipSwish()] if preact else []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(LipSwish())
        layers.append(_normalised(nn.Linear(a, b), coeff, n_iterations=n_iterations, tol=tol))
    return nn.Sequential(*layers)


def lipschitz_convnet(
    channels: int,
    hidden: int,
    image_size: Sequence[int],
    kernels: Sequence[int] = (3, 1, 3),
    coeff: float = 0.98,
    preact: bool = True,
    n_iterations: int | None = None,
    tol: float = 1e-3,
) -> nn.Sequential:
    """``g`` on images ``[C, H, W]``: ``[LipSwish →] Conv(k₁) → LipSwish → Conv(k₂) → ... →
    Conv(k_L)``, channels ``C → hidden → ... → C``, stride 1 and ``same`` padding, each
    convolution normalised as an operator on ``[*, H, W]`` images to norm ``≤ coeff``."""
    kernels = [int(k) for k in kernels]
    if any(k % 2 == 0 for k in kernels):
        raise ValueError(f"lipschitz_convnet: kernel sizes must be odd, got {kernels}")
    sizes = [int(channels)] + [int(hidden)] * (len(kernels) - 1) + [int(channels)]
    layers: list[nn.Module] = [LipSwish()] if preact else []
    for i, k in enumerate(kernels):
        if i:
            layers.append(LipSwish())
        conv = nn.Conv2d(sizes[i], sizes[i + 1], k, padding=k // 2)
        layers.append(
            _normalised(
                conv,
                coeff,
                image_size=image_size,
                padding=k // 2,
                n_iterations=n_iterations,
                tol=tol,
            )  # fmt: skip
        )
    return nn.Sequential(*layers)


__all__ = ["LipSwish", "SpectralNormCoeff", "lipschitz_convnet", "lipschitz_mlp"]
