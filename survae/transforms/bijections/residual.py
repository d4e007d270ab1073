"""Invertible residual blocks ``z = x + g(x)`` with ``Lip(g) < 1``: i-ResNet (Behrmann et al.
2019) and Residual Flows (Chen et al. 2019).

Likelihood contribution ``log det(I + J_g(x))``, from one of:

* ``"exact"``: the full Jacobian by autograd (one vector-Jacobian product per dimension), for
  small vectors (2-D toys, tests);
* ``"series"`` (i-ResNet): the power series ``Σ_{k=1}^{n} (-1)^{k+1} tr(J^k) / k`` truncated at
  ``n_terms``, each trace by Hutchinson's estimator ``vᵀ J^k v`` with ``v ~ N(0, I)`` (biased
  by the truncation; the bias falls like ``Lip(g)^n / n``);
* ``"roulette"`` (Residual Flows): the Russian-roulette estimator
  ``Σ_{k=1}^{m+N} (-1)^{k+1} vᵀ J^k v / (k · P(N ≥ k - m))`` with ``m = n_exact_terms`` and
  ``N ~ Poisson(λ)`` (or geometric), unbiased for every ``N`` distribution with full support.

With ``neumann_grad`` (Residual Flows, Theorem 2) the gradient is that of
``log det(I + J)``, ``tr((I + J)⁻¹ ∂J)``, estimated by the Neumann series
``(Σ_k (-1)^k vᵀ J^k / P(N ≥ k - m)) ∂J v`` with the same ``v`` and ``N``; the value is the
estimator above. Otherwise autograd differentiates the estimator itself (i-ResNet).

The inverse ``x = z - g(x)`` is found by fixed-point iteration (a contraction, since
``Lip(g) < 1``) to a tolerance; :class:`FixedPointError` says so when it does not converge.
Under autograd the inverse carries the implicit-function gradient (``(I + J)⁻ᵀ`` applied by a
second fixed-point iteration), so samples can be differentiated (e.g. reverse-KL training).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from survae.errors import check_shape
from survae.nn.lipschitz import lipschitz_convnet, lipschitz_mlp
from survae.registry import register
from survae.transforms.base import Bijection

LOGDETS = ("exact", "series", "roulette")
DISTRIBUTIONS = ("poisson", "geometric")


class FixedPointError(RuntimeError):
    """The fixed-point iteration of a residual block's inverse did not reach its tolerance."""


def _flat_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).reshape(a.shape[0], -1).sum(dim=1)


def _vjp(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, create_graph: bool) -> torch.Tensor:
    return torch.autograd.grad(g, x, w, create_graph=create_graph, retain_graph=True)[0]


def survival(k: int, offset: int, distribution: str, rate: float) -> float:
    """``P(N ≥ k - offset)`` (1 for ``k ≤ offset``): ``N ~ Poisson(rate)`` or geometric with
    success probability ``rate`` (``N`` counts failures, ``P(N ≥ j) = (1 - rate)^j``)."""
    j = k - offset
    if j <= 0:
        return 1.0
    if distribution == "geometric":
        return (1.0 - rate) ** j
    # P(N >= j) = 1 - P(N <= j - 1) = regularised lower incomplete gamma P(j, rate)
    return float(torch.special.gammainc(torch.tensor(float(j)), torch.tensor(float(rate))))


class _ResidualBlock(Bijection):
    """``z = x + g(x)`` with ``Lip(g) < 1``; see the module docstring."""

    def __init__(
        self,
        net: nn.Module,
        logdet: str = "roulette",
        eval_logdet: str | None = None,
        n_terms: int = 5,
        n_exact_terms: int = 2,
        eval_exact_terms: int = 20,
        distribution: str = "poisson",
        rate: float = 2.0,
        neumann_grad: bool = True,
        atol: float = 1e-6,
        max_iterations: int = 1000,
    ):
        super().__init__()
        name = type(self).__name__
        for key, mode in (("logdet", logdet), ("eval_logdet", eval_logdet or logdet)):
            if mode not in LOGDETS:
                raise ValueError(f"{name}: unknown {key} {mode!r}; valid: {', '.join(LOGDETS)}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"{name}: unknown distribution {distribution!r}; valid: {', '.join(DISTRIBUTIONS)}"
            )
        if distribution == "geometric" and not 0.0 < rate < 1.0:
            raise ValueError(f"{name}: a geometric rate must lie in (0, 1), got {rate}")
        if distribution == "poisson" and rate <= 0.0:
            raise ValueError(f"{name}: a Poisson rate must be > 0, got {rate}")
        if n_terms < 1 or n_exact_terms < 0 or eval_exact_terms < 0:
            raise ValueError(f"{name}: n_terms must be >= 1 and exact-term counts >= 0")
        self.net = net
        self.logdet = logdet
        self.eval_logdet = eval_logdet or logdet
        self.n_terms = int(n_terms)
        self.n_exact_terms = int(n_exact_terms)
        self.eval_exact_terms = int(eval_exact_terms)
        self.distribution = distribution
        self.rate = float(rate)
        self.neumann_grad = bool(neumann_grad)
        self.atol = float(atol)
        self.max_iterations = int(max_iterations)

    # ------------------------------------------------------------------ contract
    @property
    def mode(self) -> str:
        """The log-determinant rule in use: ``logdet`` in training, ``eval_logdet`` otherwise."""
        return self.logdet if self.training else self.eval_logdet

    @property
    def exact(self) -> bool:  # type: ignore[override]
        """Whether the evaluation log-likelihood (``eval_logdet``, the one validation, test
        and reported numbers use) is exact: only the brute-force log-determinant is; the
        estimators are unbiased (roulette) or truncated (series) estimates."""
        return self.eval_logdet == "exact"

    def _check(self, x: torch.Tensor, what: str) -> None:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "input")
        z, ldj = self._with_logdet(x)
        return z, ldj

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z, "latent")
        x = self._fixed_point(z)
        if torch.is_grad_enabled() and (z.requires_grad or self._has_trainable()):
            x = self._implicit_gradient(x, z)
        _, ldj = self._with_logdet(x)
        return x, -ldj

    # ------------------------------------------------------------------ log-determinant
    def _with_logdet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad_outside = torch.is_grad_enabled()
        # the estimators need autograd, also under no_grad or inference mode (evaluation)
        with torch.inference_mode(False), torch.enable_grad():
            if x.is_inference():
                x = x.clone()
            # a new node: the vector-Jacobian products stop there and never run hooks on x
            xg = x.view_as(x) if x.requires_grad else x.detach().requires_grad_()
            g = self.net(xg)
            if self.mode == "exact":
                ldj = self._exact_logdet(g, xg, grad_outside)
            else:
                ldj = self._estimated_logdet(g, xg, grad_outside)
        z = xg + g
        if not grad_outside:
            return z.detach(), ldj.detach()
        return z, ldj

    def _exact_logdet(self, g: torch.Tensor, x: torch.Tensor, create_graph: bool):
        B, D = x.shape[0], x[0].numel()
        flat = g.reshape(B, D)
        rows = [
            torch.autograd.grad(flat[:, i].sum(), x, create_graph=create_graph, retain_graph=True)[
                0
            ].reshape(B, D)
            for i in range(D)
        ]
        jac = torch.stack(rows, dim=1) + torch.eye(D, dtype=x.dtype, device=x.device)
        return torch.linalg.slogdet(jac)[1]

    def _series(self) -> tuple[int, list[float]]:
        """The number of terms and the weight ``1 / P(N ≥ k - m)`` of each term ``k = 1..n``."""
        if self.mode == "series":
            return self.n_terms, [1.0] * self.n_terms
        m = self.n_exact_terms if self.training else self.eval_exact_terms
        if self.distribution == "poisson":
            N = int(torch.poisson(torch.tensor(self.rate)).item())
        else:
            N = int(torch.distributions.Geometric(probs=torch.tensor(self.rate)).sample().item())
        n = max(m + N, 1)
        return n, [1.0 / survival(k, m, self.distribution, self.rate) for k in range(1, n + 1)]

    def _estimated_logdet(self, g: torch.Tensor, x: torch.Tensor, need_grad: bool):
        n, weights = self._series()
        v = torch.randn_like(x)
        neumann = self.neumann_grad and need_grad
        backprop = need_grad and not self.neumann_grad
        value = x.new_zeros(x.shape[0])
        w, neumann_w = v, v
        for k in range(1, n + 1):
            w = _vjp(g, x, w, create_graph=backprop)  # vᵀ J^k
            value = value + (-1) ** (k + 1) / k * weights[k - 1] * _flat_dot(w, v)
            if neumann:
                neumann_w = neumann_w + (-1) ** k * weights[k - 1] * w.detach()
        if not neumann:
            return value
        # the surrogate's gradient is (Σ_k (-1)^k vᵀJ^k / P(N ≥ k - m)) ∂J v; its value is dropped
        surrogate = _flat_dot(_vjp(g, x, neumann_w, create_graph=True), v)
        return value.detach() + surrogate - surrogate.detach()

    # ------------------------------------------------------------------ inverse
    def _has_trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def _fixed_point(self, z: torch.Tensor) -> torch.Tensor:
        """``x`` with ``x + g(x) = z``, by ``x ← z - g(x)`` from ``x = z`` (no autograd)."""
        with torch.no_grad(), parametrize.cached():
            x = z.clone()
            for _ in range(self.max_iterations):
                x_new = z - self.net(x)
                step = (x_new - x).abs().max().item()
                x = x_new
                if step <= self.atol * max(1.0, x.abs().max().item()):
                    return x
        raise FixedPointError(
            f"{type(self).__name__}: the inverse's fixed-point iteration did not converge in "
            f"{self.max_iterations} iterations (last step {step:.3g} > atol {self.atol:g}); "
            "is Lip(g) < 1 (spectral normalisation run) and the input finite?"
        )

    def _implicit_gradient(self, x0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``x0`` with the implicit-function gradient: ``x = z - g(x0)`` has the value ``x0``
        and passes ``a = (I + J)⁻ᵀ ∂L/∂x`` (found by ``a ← ∂L/∂x - Jᵀ a``) on to ``z`` and θ."""
        x = z - self.net(x0.detach())
        if not x.requires_grad:
            return x0
        net, atol, limit = self.net, self.atol, self.max_iterations

        def solve(grad: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad(), parametrize.cached():
                xr = x0.detach().requires_grad_()
                g = net(xr)
                a = grad
                for _ in range(limit):
                    a_new = grad - torch.autograd.grad(g, xr, a, retain_graph=True)[0]
                    done = (a_new - a).abs().max().item() <= atol * max(1.0, a.abs().max().item())
                    a = a_new
                    if done:
                        return a
            raise FixedPointError(
                f"{type(self).__name__}: the inverse's gradient did not converge in {limit} "
                "iterations"
            )

        x.register_hook(solve)
        return x


@register("layer", "residual_block")
class ResidualBlock(_ResidualBlock):
    """Invertible residual block on vectors ``[B, features]``: ``z = x + g(x)``, ``g`` an MLP
    (pre-activation LipSwish, hidden sizes ``hidden``) whose every weight has induced 2-norm
    ``≤ coeff`` (power iteration), so ``Lip(g) < 1`` (i-ResNet / Residual Flows).

    Likelihood contribution: ``log det(I + J_g(x))``, by ``logdet`` = ``exact`` (autograd
    Jacobian), ``series`` (i-ResNet's truncated power series, ``n_terms``) or ``roulette``
    (Residual Flows' unbiased Russian-roulette estimator, ``n_exact_terms`` plus ``N ~
    distribution(rate)`` terms; ``eval_exact_terms`` in evaluation); ``eval_logdet`` picks the
    rule in eval mode. Inverse by fixed-point iteration to ``atol``.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (128, 128),
        coeff: float = 0.98,
        preact: bool = True,
        n_power_iterations: int | None = None,
        power_tol: float = 1e-3,
        **kwargs,
    ):
        if features < 1:
            raise ValueError(f"ResidualBlock: features must be >= 1, got {features}")
        net = lipschitz_mlp(features, hidden, coeff, preact, n_power_iterations, power_tol)
        super().__init__(net, **kwargs)
        self.features = int(features)

    def _check(self, x: torch.Tensor, what: str) -> None:
        check_shape(self, x, (None, self.features), what)

    def extra_repr(self) -> str:
        return f"features={self.features}, logdet={self.logdet}, eval_logdet={self.eval_logdet}"


@register("layer", "conv_residual_block")
class ConvResidualBlock(_ResidualBlock):
    """Invertible residual block on images ``[B, C, H, W]``: ``z = x + g(x)``, ``g`` a CNN
    (pre-activation LipSwish, kernels ``kernels`` (Residual Flows: 3-1-3), ``hidden`` channels)
    whose every convolution, as an operator on ``[*, H, W]`` images, has norm ``≤ coeff``.

    Likelihood contribution: ``log det(I + J_g(x))``, by ``logdet`` = ``roulette`` (Residual
    Flows' unbiased estimator; the default), ``series`` (i-ResNet) or ``exact`` (autograd
    Jacobian, ``C·H·W`` backward passes: tiny images only); inverse by fixed-point iteration.
    """

    def __init__(
        self,
        num_channels: int,
        image_size: Sequence[int],
        hidden: int = 512,
        kernels: Sequence[int] = (3, 1, 3),
        coeff: float = 0.98,
        preact: bool = True,
        n_power_iterations: int | None = None,
        power_tol: float = 1e-3,
        **kwargs,
    ):
        size = tuple(int(s) for s in image_size)
        if len(size) != 2 or min(size) < 1 or num_channels < 1:
            raise ValueError(
                f"ConvResidualBlock: needs num_channels >= 1 and image_size (H, W), got "
                f"{num_channels}, {image_size}"
            )
        net = lipschitz_convnet(
            num_channels, hidden, size, kernels, coeff, preact, n_power_iterations, power_tol
        )
        super().__init__(net, **kwargs)
        self.num_channels = int(num_channels)
        self.image_size = size

    def _check(self, x: torch.Tensor, what: str) -> None:
        check_shape(self, x, (None, self.num_channels, *self.image_size), what)

    def extra_repr(self) -> str:
        return (
            f"num_channels={self.num_channels}, image_size={self.image_size}, "
            f"logdet={self.logdet}, eval_logdet={self.eval_logdet}"
        )


__all__ = ["ConvResidualBlock", "FixedPointError", "ResidualBlock", "survival"]
