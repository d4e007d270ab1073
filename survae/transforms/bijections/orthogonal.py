"""Learned orthogonal (volume-preserving) mixing of the channel dimension: for vectors
``[B, C]`` a rotation/reflection of the features, for images ``[B, C, H, W]`` (or sequences
``[B, C, L]``) the same ``C × C`` matrix at every position (an orthogonal 1×1 convolution).

Both layers have ``|det W| = 1``, so their likelihood contribution is exactly 0, and their
inverse is the transpose:

* :class:`HouseholderMixing`: ``W = H_1 ⋯ H_k``, ``H_i = I - 2 v_i v_iᵀ / ‖v_i‖²``
  (``num_reflections`` = k; nflows' ``HouseholderSequence``), applied as ``k`` rank-one updates
  without forming ``W``;
* :class:`OrthogonalMixing`: ``W`` from ``torch.nn.utils.parametrizations.orthogonal``
  (``orthogonal_map`` = ``matrix_exp`` of a skew-symmetric matrix, ``cayley`` or
  ``householder``), i.e. every orthogonal matrix of determinant +1 reachable by the map.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations

from survae.errors import check_ndim, check_shape
from survae.registry import register
from survae.transforms.base import Bijection

MAPS = ("matrix_exp", "cayley", "householder")


class _ChannelMixing(Bijection):
    """``z = W x`` along dimension 1 for an orthogonal ``W``; subclasses define :meth:`_multiply`
    (``x`` with channels last, ``transpose`` for ``Wᵀ``)."""

    def __init__(self, num_channels: int):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"{type(self).__name__}: num_channels must be >= 1")
        self.num_channels = int(num_channels)

    def _multiply(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        raise NotImplementedError

    def _mix(self, x: torch.Tensor, transpose: bool, what: str) -> torch.Tensor:
        check_ndim(self, x, (2, 3, 4), what)
        check_shape(self, x, (None, self.num_channels, *x.shape[2:]), what)
        return self._multiply(x.movedim(1, -1), transpose).movedim(-1, 1)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._mix(x, False, "input"), x.new_zeros(x.shape[0])

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._mix(z, True, "latent"), z.new_zeros(z.shape[0])

    def matrix(self) -> torch.Tensor:
        """``W`` as a ``C × C`` matrix (for inspection and tests)."""
        eye = torch.eye(self.num_channels, dtype=self._dtype(), device=self._device())
        return self._multiply(eye, False).T

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}"


@register("layer", "householder")
class HouseholderMixing(_ChannelMixing):
    """Orthogonal channel mixing by ``num_reflections`` Householder reflections,
    ``W = H_1 ⋯ H_k`` with ``H_i = I - 2 v_i v_iᵀ / ‖v_i‖²`` (volume-preserving; nflows,
    FrEIA and zuko have it). Likelihood contribution: exactly 0 (``|det W| = 1``).

    Works on vectors ``[B, C]`` and, as a 1×1 convolution, on ``[B, C, ...]``. The vectors
    ``v_i`` start random (``seed``); with ``k ≥ C`` every orthogonal matrix is reachable.
    """

    def __init__(self, num_channels: int, num_reflections: int = 4, seed: int = 0):
        super().__init__(num_channels)
        if num_reflections < 1:
            raise ValueError(
                f"HouseholderMixing: num_reflections must be >= 1, got {num_reflections}"
            )
        g = torch.Generator().manual_seed(int(seed))
        self.vectors = nn.Parameter(
            torch.randn(int(num_reflections), self.num_channels, generator=g)
        )

    def _multiply(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        vs = self.vectors.to(x.dtype)
        units = vs / vs.norm(dim=1, keepdim=True)
        # W x = H_1 (H_2 (⋯ H_k x)); Wᵀ x = H_k (⋯ H_1 x): each H is symmetric
        order = range(len(units)) if transpose else reversed(range(len(units)))
        for i in order:
            u = units[i]
            x = x - 2 * (x @ u).unsqueeze(-1) * u
        return x

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, num_reflections={len(self.vectors)}"


@register("layer", "orthogonal")
class OrthogonalMixing(_ChannelMixing):
    """Learned orthogonal channel mixing ``z = W x`` with ``W`` given by torch's orthogonal
    parametrization (``orthogonal_map``: ``matrix_exp`` of a skew matrix, ``cayley`` or
    ``householder``). Likelihood contribution: exactly 0 (``|det W| = 1``).

    Works on vectors ``[B, C]`` and, as a 1×1 convolution, on ``[B, C, ...]``; ``W`` starts as
    a random orthogonal matrix (``seed``).
    """

    def __init__(self, num_channels: int, orthogonal_map: str = "matrix_exp", seed: int = 0):
        super().__init__(num_channels)
        if orthogonal_map not in MAPS:
            raise ValueError(
                f"OrthogonalMixing: unknown orthogonal_map {orthogonal_map!r}; "
                f"valid: {', '.join(MAPS)}"
            )
        self.orthogonal_map = orthogonal_map
        linear = nn.Linear(self.num_channels, self.num_channels, bias=False)
        with torch.no_grad():
            g = torch.Generator().manual_seed(int(seed))
            linear.weight.copy_(torch.randn(self.num_channels, self.num_channels, generator=g))
        # no trivialization: W is the map of the parameter itself, orthogonal to the rounding
        # of whatever dtype the layer is in (a float32 base would not be after .double())
        self.linear = parametrizations.orthogonal(
            linear, orthogonal_map=orthogonal_map, use_trivialization=False
        )

    def _dtype(self) -> torch.dtype:
        return self.linear.weight.dtype

    def _multiply(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        W = self.linear.weight.to(x.dtype)
        return x @ W if transpose else x @ W.T

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, orthogonal_map={self.orthogonal_map}"


__all__ = ["HouseholderMixing", "OrthogonalMixing"]
