"""Shared machinery of the monotone neural transforms (NAF's sigmoidal flows, UMNN).

Each such transform is an elementwise strictly increasing map ``z_i = f(x_i; θ_i)`` of the real
line onto itself whose parameters ``θ_i`` (``params_per_element`` numbers per transformed
element) come from a conditioner: a MADE (autoregressive: ``θ_i`` from ``x_<i``) or a coupling
network (``θ_b`` from ``x_a``). The Jacobian is triangular, so the likelihood contribution is
``Σ_i log f'(x_i; θ_i)``. The maps have no closed-form inverse; :func:`invert_increasing`
inverts them by bracketing and bisection, which only needs monotonicity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from survae.nn.made import MADE
from survae.transforms.bijections.coupling import _Coupling
from survae.transforms.bijections.made_elementwise import MADEElementwise
from survae.utils import sum_except_batch

#: bracket doublings tried before giving up (the bracket reaches ±2^60 · initial width)
MAX_EXPANSIONS = 60


class InversionError(RuntimeError):
    """The inverse of a monotone map could not be bracketed (its range misses the target)."""


def invert_increasing(
    f: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    owner: str = "monotone map",
    tol: float | None = None,
    max_iter: int = 200,
) -> torch.Tensor:
    """``x`` with ``f(x) = y`` elementwise, for an elementwise strictly increasing ``f``.

    The bracket ``[-1, 1]`` is doubled on the side that misses ``y`` until it contains it, then
    halved until its width is below ``tol`` (default: 1e-12 in float64, 1e-6 otherwise,
    relative to ``max(1, |x|)``). Runs without autograd; raises :class:`InversionError`
    naming ``owner`` when ``y`` cannot be bracketed.
    """
    if tol is None:
        tol = 1e-12 if y.dtype == torch.float64 else 1e-6
    with torch.no_grad():
        lo = torch.full_like(y, -1.0)
        hi = torch.full_like(y, 1.0)
        for _ in range(MAX_EXPANSIONS):
            low_miss = f(lo) > y
            high_miss = f(hi) < y
            if not (low_miss.any() or high_miss.any()):
                break
            width = hi - lo
            lo = torch.where(low_miss, lo - width, lo)
            hi = torch.where(high_miss, hi + width, hi)
        else:
            raise InversionError(
                f"{owner}: could not bracket the inverse of {int((low_miss | high_miss).sum())} "
                "element(s) (the map's range misses them)"
            )
        for _ in range(max_iter):
            mid = 0.5 * (lo + hi)
            below = f(mid) < y
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
            scale = torch.maximum(mid.abs(), torch.ones_like(mid))
            if ((hi - lo) <= tol * scale).all():
                break
        return 0.5 * (lo + hi)


class MonotoneMap:
    """Mixin of an elementwise increasing map; subclasses set ``params_per_element`` and
    implement :meth:`_map` ``(x [S], params [S + (P,)]) -> (f(x), log f'(x))``."""

    params_per_element: int = 1

    def _map(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _monotone(
        self, x: torch.Tensor, params: torch.Tensor, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The map or its inverse and ``log |d output / d input|``, elementwise.

        The inverse is found by bisection; under autograd one Newton correction
        ``x - (f(x) - y) / f'(x)`` with a constant ``f'`` leaves its value unchanged and gives it
        the implicit-function gradient (so samples can be differentiated, e.g. for reverse-KL
        training)."""
        if not inverse:
            return self._map(x, params)
        detached = params.detach()
        x_inv = invert_increasing(lambda v: self._map(v, detached)[0], x, owner=type(self).__name__)
        if torch.is_grad_enabled() and (params.requires_grad or x.requires_grad):
            y0, log_d0 = self._map(x_inv, params)
            x_inv = x_inv - (y0 - x) / log_d0.detach().exp()
        _, log_deriv = self._map(x_inv, params)
        return x_inv, -log_deriv


class MonotoneCoupling(MonotoneMap, _Coupling):
    """Coupling with an elementwise monotone map: ``z_b = f(x_b; θ(x_a))``, ``z_a = x_a``.

    The network outputs ``params_per_element`` channels per transformed channel, element-major
    along dimension 1 (as :class:`~survae.transforms.bijections.spline.RQSplineCoupling`)."""

    def _elementwise(self, x, h, inverse, keep):
        P = self.params_per_element
        params = h.reshape(h.shape[0], x.shape[1], P, *h.shape[2:]).movedim(2, -1)
        y, log_deriv = self._monotone(x, params, inverse)
        if keep is not None:
            y = torch.where(keep > 0, x, y)
            log_deriv = log_deriv * (1.0 - keep)
        return y, sum_except_batch(log_deriv)


class MonotoneAutoregressive(MonotoneMap, MADEElementwise):
    """Masked autoregressive layer on vectors ``[B, features]``: ``z_i = f(x_i; θ_i(x_<i))``
    with ``θ`` from one MADE pass (density direction); sampling takes ``features`` passes."""

    def __init__(
        self,
        features: int,
        hidden: Sequence[int],
        context_features: int = 0,
        random_order: bool = False,
        reverse_order: bool = False,
        seed: int = 0,
        activation_name: str = "relu",
        residual: bool = False,
    ):
        super().__init__()
        self._set_features(features, context_features)
        self.made = MADE(
            self.features,
            self.features * self.params_per_element,
            hidden=[int(h) for h in hidden],
            context_features=self.context_features,
            activation_name=activation_name,
            residual=residual,
            random_order=random_order,
            reverse_order=reverse_order,
            seed=seed,
        )

    def _transform(self, x, params, inverse):
        return self._monotone(x, params, inverse)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequential inversion: after pass ``k`` the first ``k`` dimensions in the MADE's
        order are exact; each pass inverts the elementwise map by bisection."""
        context = self._check(z, context)
        x = torch.zeros_like(z)
        for _ in range(self.features):
            with torch.no_grad():
                params = self._params(x, context)
            x = invert_increasing(
                lambda v, p=params: self._map(v, p)[0], z, owner=type(self).__name__
            )
        if torch.is_grad_enabled() and (
            z.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            x = self._implicit_gradient(x, z, context)
        _, log_deriv = self._map(x, self._params(x, context))
        return x, -log_deriv.sum(dim=1)

    def _implicit_gradient(
        self, x0: torch.Tensor, z: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor:
        """``x0`` (the inverse, found without autograd) with the gradient of the exact inverse:
        the iteration ``x <- x - (F(x) - z) / f'(x0)`` keeps the value ``x0`` and, its Jacobian
        being strictly triangular in the MADE's order, carries the exact derivatives after
        ``features`` steps."""
        with torch.no_grad():
            slope = self._map(x0, self._params(x0, context))[1].exp()
        x = x0
        for _ in range(self.features):
            y, _ = self._map(x, self._params(x, context))
            x = x - (y - z) / slope
        return x

    def extra_repr(self) -> str:
        s = f"features={self.features}"
        if self.context_features:
            s += f", context_features={self.context_features}"
        return s


__all__ = [
    "InversionError",
    "MonotoneAutoregressive",
    "MonotoneCoupling",
    "MonotoneMap",
    "invert_increasing",
]
