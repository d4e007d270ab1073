"""Volume-preserving rearrangements of the non-batch axes: 90° rotations, axis permutations,
reshapes and a fixed permutation along any one dimension.

They move elements without changing their values, so the Jacobian is a permutation matrix and
every likelihood contribution is 0. Dimension numbers count the batch as 0 and must be >= 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from survae.errors import ShapeError, check_shape
from survae.registry import register
from survae.transforms.base import Bijection


def _check_dim(name: str, dim: int, what: str = "dim") -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"{name}: {what} must be an integer >= 1 (0 is the batch), got {dim!r}")
    return dim


def _check_rank(layer: object, x: torch.Tensor, dim: int, what: str) -> None:
    if x.dim() <= dim:
        raise ShapeError(
            f"{type(layer).__name__}: {what} of shape {tuple(x.shape)} has no dimension {dim}"
        )


class _ZeroLdj(Bijection):
    """Shared plumbing: ``_rearrange``/``_restore`` move the elements, the contribution is 0."""

    def _rearrange(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _restore(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._rearrange(x), x.new_zeros(x.shape[0])

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._restore(z), z.new_zeros(z.shape[0])


@register("layer", "rotate")
class Rotate(_ZeroLdj):
    """Rotates by 90, 180 or 270 degrees in the plane of dimensions ``dim1`` and ``dim2``
    (``dim1=2, dim2=3`` rotates the ``H × W`` plane of ``[B, C, H, W]`` images; a 90° or 270°
    rotation of a non-square plane swaps the two sizes). Likelihood contribution: 0.
    """

    DEGREES = (90, 180, 270)

    def __init__(self, degrees: int, dim1: int = 2, dim2: int = 3):
        super().__init__()
        if degrees not in self.DEGREES:
            raise ValueError(f"Rotate: degrees must be one of 90, 180, 270, got {degrees!r}")
        self.dim1, self.dim2 = (
            _check_dim("Rotate", dim1, "dim1"),
            _check_dim("Rotate", dim2, "dim2"),
        )
        if dim1 == dim2:
            raise ValueError(f"Rotate: dim1 and dim2 must differ, got {dim1} twice")
        self.degrees = int(degrees)

    def _rearrange(self, x: torch.Tensor) -> torch.Tensor:
        _check_rank(self, x, max(self.dim1, self.dim2), "input")
        return torch.rot90(x, self.degrees // 90, dims=(self.dim1, self.dim2))

    def _restore(self, z: torch.Tensor) -> torch.Tensor:
        _check_rank(self, z, max(self.dim1, self.dim2), "latent")
        return torch.rot90(z, -(self.degrees // 90), dims=(self.dim1, self.dim2))

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, dim1={self.dim1}, dim2={self.dim2}"


@register("layer", "permute_axes")
class PermuteAxes(_ZeroLdj):
    """``z = x.permute(permutation)``: reorders the axes; ``permutation`` lists every axis
    including the batch, which must stay first (e.g. ``[0, 2, 3, 1]`` turns ``[B, C, H, W]``
    into ``[B, H, W, C]``). Likelihood contribution: 0.
    """

    def __init__(self, permutation: Sequence[int]):
        super().__init__()
        perm = [int(p) for p in permutation]
        if sorted(perm) != list(range(len(perm))) or len(perm) < 2 or perm[0] != 0:
            raise ValueError(
                "PermuteAxes: permutation must reorder 0..n-1 with the batch axis 0 first, "
                f"got {list(permutation)}"
            )
        self.permutation = perm
        self.inverse_permutation = sorted(range(len(perm)), key=perm.__getitem__)

    def _check(self, x: torch.Tensor, what: str) -> None:
        if x.dim() != len(self.permutation):
            raise ShapeError(
                f"PermuteAxes: permutation {self.permutation} needs a {len(self.permutation)}-D "
                f"{what}, got shape {tuple(x.shape)}"
            )

    def _rearrange(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "input")
        return x.permute(self.permutation).contiguous()

    def _restore(self, z: torch.Tensor) -> torch.Tensor:
        self._check(z, "latent")
        return z.permute(self.inverse_permutation).contiguous()

    def extra_repr(self) -> str:
        return f"permutation={self.permutation}"


@register("layer", "reshape")
class Reshape(_ZeroLdj):
    """``z = x.reshape(B, *output_shape)`` for ``x`` of shape ``[B, *input_shape]`` (the same
    number of elements; e.g. flatten images for a fully connected flow). Likelihood
    contribution: 0.
    """

    def __init__(self, input_shape: Sequence[int], output_shape: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_shape = tuple(int(s) for s in output_shape)
        if torch.Size(self.input_shape).numel() != torch.Size(self.output_shape).numel():
            raise ValueError(
                f"Reshape: {self.input_shape} and {self.output_shape} have different numbers "
                "of elements"
            )

    def _rearrange(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(self, x, (None, *self.input_shape), "input")
        return x.reshape(x.shape[0], *self.output_shape)

    def _restore(self, z: torch.Tensor) -> torch.Tensor:
        check_shape(self, z, (None, *self.output_shape), "latent")
        return z.reshape(z.shape[0], *self.input_shape)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, output_shape={self.output_shape}"


@register("layer", "permute")
class Permute(_ZeroLdj):
    """A fixed permutation along one dimension: ``z.index_select(dim, perm)``.

    ``permutation`` is the index list; ``"random"`` draws one of ``size`` from a generator
    seeded with ``seed``, ``"reverse"`` reverses ``size`` entries (the official ``Permute``,
    ``Shuffle`` and ``Reverse``, along any ``dim``). The indices are buffers, so checkpoints
    carry them. Likelihood contribution: 0.
    """

    def __init__(
        self,
        permutation: Sequence[int] | str = "random",
        dim: int = 1,
        size: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.dim = _check_dim("Permute", dim)
        perm = self._indices(permutation, size, seed)
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    @staticmethod
    def _indices(permutation: Sequence[int] | str, size: int | None, seed: int) -> torch.Tensor:
        if isinstance(permutation, str):
            if permutation not in ("random", "reverse") or size is None or size < 1:
                raise ValueError(
                    "Permute: permutation must be an index list, or 'random' or 'reverse' with "
                    f"size >= 1; got {permutation!r}, size={size}"
                )
            if permutation == "reverse":
                return torch.arange(size - 1, -1, -1)
            return torch.randperm(size, generator=torch.Generator().manual_seed(seed))
        perm = torch.as_tensor(list(permutation), dtype=torch.long)
        if perm.dim() != 1 or not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise ValueError(f"Permute: {list(permutation)} is not a permutation of 0..n-1")
        return perm

    def _select(self, x: torch.Tensor, index: torch.Tensor, what: str) -> torch.Tensor:
        _check_rank(self, x, self.dim, what)
        if x.shape[self.dim] != len(index):
            raise ShapeError(
                f"Permute: expected {what} with {len(index)} entries along dim {self.dim}, got "
                f"shape {tuple(x.shape)}"
            )
        return x.index_select(self.dim, index)

    def _rearrange(self, x: torch.Tensor) -> torch.Tensor:
        return self._select(x, self.perm, "input")

    def _restore(self, z: torch.Tensor) -> torch.Tensor:
        return self._select(z, self.inverse_perm, "latent")

    def extra_repr(self) -> str:
        return f"size={len(self.perm)}, dim={self.dim}"
