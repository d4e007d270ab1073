"""Fixed elementwise bijections: logit/sigmoid squashing and scalar scale/shift.

They work on inputs of any shape ``[B, ...]``; contributions are summed over all but the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from survae.registry import register
from survae.transforms.base import Bijection
from survae.utils import num_elements_per_sample, sum_except_batch


def _check_eps(name: str, eps: float) -> float:
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"{name}: eps must be in [0, 0.5), got {eps}")
    return float(eps)


@register("layer", "logit")
class Logit(Bijection):
    """``z = logit(eps + (1 − 2·eps)·x)`` for ``x ∈ (0, 1)`` (RealNVP's preprocessing, with
    ``eps`` playing the role of its ``α``), mapping images in the unit cube to ℝ.

    Likelihood contribution, summed over elements:
    ``log(1 − 2·eps) − log y − log(1 − y)`` with ``y = eps + (1 − 2·eps)·x``.

    Outside its support (``y ∉ (0, 1)``) the density is 0: the contribution is ``−inf`` and
    ``z`` is set to 0 there so later layers stay finite; a NaN input stays NaN (a bug).

    ``mode="clamp"`` is the official SurVAE ``Logit``: ``y = clamp(x, eps, 1 − eps)`` for
    ``x ∈ [0, 1]`` (the edges included), contribution ``−log y − log(1 − y)``; it is not
    invertible within ``eps`` of the edges (``inverse`` is the plain sigmoid there).
    """

    MODES = ("squeeze", "clamp")

    def __init__(self, eps: float = 1e-6, mode: str = "squeeze"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"Logit: unknown mode {mode!r}; valid: {', '.join(self.MODES)}")
        self.eps = _check_eps("Logit", eps)
        self.mode = mode
        self._log_factor = math.log1p(-2.0 * self.eps) if mode == "squeeze" else 0.0

    def _squash(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y`` in (0, 1) and where ``x`` lies outside the support."""
        if self.mode == "clamp":
            # clamp keeps NaN, and NaN compares False: a NaN input stays NaN
            return x.clamp(self.eps, 1.0 - self.eps), (x < 0) | (x > 1)
        y = self.eps + (1.0 - 2.0 * self.eps) * x
        return y, (y <= 0) | (y >= 1)  # False for NaN: a NaN input stays NaN

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, outside = self._squash(x)
        y = torch.where(outside, 0.5, y)
        z = torch.log(y) - torch.log1p(-y)
        # -log y - log(1 - y) = softplus(-z) + softplus(z), stable for large |z|
        ldj = sum_except_batch(F.softplus(z) + F.softplus(-z) + self._log_factor)
        ldj = ldj.masked_fill(outside.reshape(x.shape[0], -1).any(-1), -math.inf)
        return z, ldj

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "clamp":
            x = torch.sigmoid(z)
        else:
            x = (torch.sigmoid(z) - self.eps) / (1.0 - 2.0 * self.eps)
        ldj = -sum_except_batch(F.softplus(z) + F.softplus(-z) + self._log_factor)
        return x, ldj

    def extra_repr(self) -> str:
        return f"eps={self.eps}, mode={self.mode}"


@register("layer", "sigmoid")
class Sigmoid(Bijection):
    """``z = (sigmoid(x) − eps) / (1 − 2·eps)``, ℝ → (0, 1); exactly the inverse of
    ``Logit(eps)`` (default ``eps = 0``: the plain sigmoid).

    Likelihood contribution, summed over elements:
    ``log sigmoid(x) + log sigmoid(−x) − log(1 − 2·eps)``.
    """

    def __init__(self, eps: float = 0.0):
        super().__init__()
        self.eps = _check_eps("Sigmoid", eps)
        self._log_factor = math.log1p(-2.0 * self.eps)

    def _ldj(self, x: torch.Tensor) -> torch.Tensor:
        return -sum_except_batch(F.softplus(x) + F.softplus(-x) + self._log_factor)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = (torch.sigmoid(x) - self.eps) / (1.0 - 2.0 * self.eps)
        return z, self._ldj(x)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.eps + (1.0 - 2.0 * self.eps) * z
        x = torch.log(y) - torch.log1p(-y)
        return x, -self._ldj(x)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


@register("layer", "scale")
class Scale(Bijection):
    """``z = scale · x`` with a fixed non-zero scalar (e.g. ``1/256`` to map byte values to
    the unit cube). Likelihood contribution: ``D · log|scale|``, ``D`` = elements per example.
    """

    def __init__(self, scale: float):
        super().__init__()
        if scale == 0:
            raise ValueError("Scale: scale must be non-zero to be invertible")
        self.scale = float(scale)
        self._log_abs = math.log(abs(self.scale))

    def _ldj(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_full((x.shape[0],), num_elements_per_sample(x) * self._log_abs)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x * self.scale, self._ldj(x)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return z / self.scale, -self._ldj(z)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


@register("layer", "shift")
class Shift(Bijection):
    """``z = x + shift`` with a fixed scalar (e.g. ``-0.5`` to centre data in ``[0, 1]``).
    Likelihood contribution: 0."""

    def __init__(self, shift: float):
        super().__init__()
        self.shift = float(shift)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x + self.shift, x.new_zeros(x.shape[0])

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return z - self.shift, z.new_zeros(z.shape[0])

    def extra_repr(self) -> str:
        return f"shift={self.shift}"
