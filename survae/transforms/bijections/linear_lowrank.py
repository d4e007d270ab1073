"""A learned dense linear map of low-rank-plus-diagonal form, for vectors ``[B, D]``."""

from __future__ import annotations

import torch
from torch import nn

from survae.errors import check_shape
from survae.registry import register
from survae.transforms.base import Bijection


@register("layer", "linear_lowrank")
class LinearLowRank(Bijection):
    """``z = (diag(d) + U·V)·x + b`` with ``U`` of shape ``[D, r]`` and ``V`` of ``[r, D]``
    (the official SurVAE ``LinearLowRank``): a dense mixing of the features at ``O(D·r)`` cost.

    Likelihood contribution (matrix determinant lemma):
    ``Σ log|d| + log|det K|`` with ``K = I_r + V·diag(d)⁻¹·U``. The inverse uses the Woodbury
    identity ``x = D⁻¹z − D⁻¹U·K⁻¹·V·D⁻¹z`` (one ``r × r`` solve). It starts near the identity
    (``d ≈ 1``, ``U, V ≈ 0``).
    """

    def __init__(self, num_features: int, rank: int, bias: bool = False, init_scale: float = 1e-3):
        super().__init__()
        if not 1 <= rank <= num_features:
            raise ValueError(
                f"LinearLowRank: need 1 <= rank <= num_features, got rank={rank}, "
                f"num_features={num_features}"
            )
        self.num_features, self.rank = int(num_features), int(rank)
        self.d = nn.Parameter(torch.empty(num_features).uniform_(1 - init_scale, 1 + init_scale))
        self.U = nn.Parameter(torch.empty(num_features, rank).uniform_(-init_scale, init_scale))
        self.V = nn.Parameter(torch.empty(rank, num_features).uniform_(-init_scale, init_scale))
        self.bias = nn.Parameter(torch.zeros(num_features)) if bias else None

    def _capacitance(self) -> torch.Tensor:
        """``K = I + V·diag(d)⁻¹·U``, ``[r, r]``."""
        eye = torch.eye(self.rank, dtype=self.d.dtype, device=self.d.device)
        return eye + (self.V / self.d) @ self.U

    def _ldj(self, x: torch.Tensor) -> torch.Tensor:
        logdet = self.d.abs().log().sum() + torch.linalg.slogdet(self._capacitance())[1]
        return logdet.expand(x.shape[0])

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(self, x, (None, self.num_features), "input")
        z = x * self.d + (x @ self.V.T) @ self.U.T
        if self.bias is not None:
            z = z + self.bias
        return z, self._ldj(x)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(self, z, (None, self.num_features), "latent")
        if self.bias is not None:
            z = z - self.bias
        y = z / self.d
        w = torch.linalg.solve(self._capacitance(), (y @ self.V.T).T).T
        x = y - (w @ self.U.T) / self.d
        return x, -self._ldj(z)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, rank={self.rank}, bias={self.bias is not None}"
