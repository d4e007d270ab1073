"""Removing the order of a point set: sorting and stochastic permutation (SortFlow,
PermuteFlow in SurVAE Flows)."""

from __future__ import annotations

import math

import torch

from survae.errors import ShapeError, check_ndim
from survae.registry import register
from survae.transforms.base import Surjection


def _random_permutation(batch: int, n: int, device: torch.device) -> torch.Tensor:
    """An independent uniformly random permutation of ``range(n)`` per example, ``[batch, n]``."""
    return torch.argsort(torch.rand(batch, n, device=device), dim=1)


def _permute_points(x: torch.Tensor, perm: torch.Tensor, point_dim: int) -> torch.Tensor:
    """Reorder ``x`` along ``point_dim`` by ``perm`` (``[B, N]``), per example."""
    shape = [1] * x.dim()
    shape[0], shape[point_dim] = perm.shape
    return x.gather(point_dim, perm.view(shape).expand_as(x))


class _PointSetLayer(Surjection):
    def __init__(self, point_dim: int):
        super().__init__()
        if point_dim < 1:
            raise ValueError(f"{type(self).__name__}: point_dim must be >= 1, got {point_dim}")
        self.point_dim = int(point_dim)

    def _check(self, x: torch.Tensor, what: str) -> None:
        if x.dim() <= self.point_dim:
            raise ShapeError(
                f"{type(self).__name__}: expected {what} with points along dim "
                f"{self.point_dim}, got shape {tuple(x.shape)}"
            )


@register("layer", "sort")
class SortSurjection(_PointSetLayer):
    """Inference surjection that sorts the points of a set by one coordinate (SortFlow,
    Nielsen et al. 2020).

    Input ``[B, N, D]`` with ``point_dim=1`` (default; coordinates on dim 2), or SurVAE's
    transposed layout ``[B, D, N]`` with ``point_dim=2`` (coordinates on dim 1). Points are
    ordered by coordinate ``key_index`` (stable sort). The inverse model ``p(x | z)`` is uniform
    over the ``N!`` orderings of ``z``, so the exact likelihood contribution is ``−log N!``.
    ``inverse`` applies an independent uniformly random permutation per example.
    """

    def __init__(self, point_dim: int = 1, key_index: int = 0):
        if point_dim not in (1, 2):
            raise ValueError(f"SortSurjection: point_dim must be 1 or 2, got {point_dim}")
        super().__init__(point_dim)
        self.key_index = int(key_index)

    def forward(self, x, context=None):
        check_ndim(self, x, 3)
        coord_dim = 3 - self.point_dim
        if not -x.shape[coord_dim] <= self.key_index < x.shape[coord_dim]:
            raise ShapeError(
                f"SortSurjection: key_index={self.key_index} is out of range for "
                f"{x.shape[coord_dim]} coordinates on dim {coord_dim} of input {tuple(x.shape)}"
            )
        key = x.select(coord_dim, self.key_index)  # [B, N]
        perm = torch.argsort(key, dim=1, stable=True)
        n = x.shape[self.point_dim]
        ldj = x.new_full((x.shape[0],), -math.lgamma(n + 1))
        return _permute_points(x, perm, self.point_dim), ldj

    def inverse(self, z, context=None):
        check_ndim(self, z, 3, "latent")
        perm = _random_permutation(z.shape[0], z.shape[self.point_dim], z.device)
        return _permute_points(z, perm, self.point_dim)


@register("layer", "stochastic_permutation")
class StochasticPermutation(_PointSetLayer):
    """Applies an independent uniformly random permutation of the points per example
    (PermuteFlow, Nielsen et al. 2020), along ``point_dim`` (1 for ``[B, N, D]``, 2 for SurVAE's
    ``[B, D, N]``).

    Stochastic in both directions, likelihood contribution 0. The resulting ``log_prob`` is a
    lower bound on the likelihood of the set (``exact`` is False); the bound is tight when the
    rest of the model is exchangeable (invariant to the order of the points).
    """

    stochastic_forward = True

    def __init__(self, point_dim: int = 1):
        super().__init__(point_dim)

    def _shuffle(self, x: torch.Tensor, what: str) -> torch.Tensor:
        self._check(x, what)
        perm = _random_permutation(x.shape[0], x.shape[self.point_dim], x.device)
        return _permute_points(x, perm, self.point_dim)

    def forward(self, x, context=None):
        return self._shuffle(x, "input"), x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return self._shuffle(z, "latent")
