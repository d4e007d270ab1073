"""Point-set flows of SurVAE Flows (Nielsen et al. 2020, Sec. 5.3): PermuteFlow and SortFlow.

A set of ``N`` points in ``D`` dimensions arrives as ``[B, N, D]``. Both models swap it to
``[B, D, N]`` (coordinates as channels, points along the last axis, as the official code does),
rescale it to about ``[-0.5, 0.5)`` and remove the order of the points: PermuteFlow with a
stochastic permutation (a lower bound, tight for an exchangeable model), SortFlow by sorting
the points on their first coordinate (exact, contribution ``-log N!``). Then ``num_steps``
steps of

    affine coupling across the coordinates (a transformer over all points),
    reverse of the coordinates,
    affine coupling across the points (the first ``N/2`` points condition the last ``N/2``),
    permutation of the points (PermuteFlow: stochastic; SortFlow: a fixed random shuffle),
    actnorm,

map it to a standard normal of shape ``(D, N)``. The layers this needs beyond the library's
own (an axis swap, a coupling that splits the points axis, a fixed shuffle of the points) are
defined and registered here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from survae.distributions import StandardNormal
from survae.errors import ShapeError, check_ndim, check_shape
from survae.flows import Flow
from survae.nn.build import NetSpec, build_network
from survae.registry import register
from survae.transforms import Transform
from survae.transforms.base import Bijection
from survae.transforms.bijections.actnorm import ActNorm
from survae.transforms.bijections.coupling import LOG_SCALE_FNS, AffineCoupling
from survae.transforms.bijections.elementwise import Scale, Shift
from survae.transforms.bijections.permutation import Reverse
from survae.transforms.surjections.permutation import SortSurjection, StochasticPermutation


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
@register("layer", "swap_axes")
class SwapAxes(Bijection):
    """Swaps two non-batch axes, e.g. point sets ``[B, N, D] -> [B, D, N]``.

    A permutation of the coordinates of each example: likelihood contribution 0.
    """

    def __init__(self, dim0: int = 1, dim1: int = 2):
        super().__init__()
        if dim0 < 1 or dim1 < 1 or dim0 == dim1:
            raise ValueError(
                f"SwapAxes: needs two different non-batch axes (>= 1), got {dim0} and {dim1}"
            )
        self.dim0, self.dim1 = int(dim0), int(dim1)

    def _swap(self, x: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() <= max(self.dim0, self.dim1):
            raise ShapeError(
                f"SwapAxes: expected {what} with at least {max(self.dim0, self.dim1) + 1} "
                f"dimensions to swap axes {self.dim0} and {self.dim1}, got shape {tuple(x.shape)}"
            )
        return x.transpose(self.dim0, self.dim1), x.new_zeros(x.shape[0])

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._swap(x, "input")

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._swap(z, "latent")

    def extra_repr(self) -> str:
        return f"dim0={self.dim0}, dim1={self.dim1}"


@register("layer", "point_affine_coupling")
class PointAffineCoupling(Bijection):
    """Affine coupling across the points of a set ``[B, C, N]`` (SurVAE Flows' point-cloud
    couplings with ``split_dim=2``): the first ``N/2`` points (``reverse_mask``: the last)
    pass unchanged and, through ``net``, set ``z_b = x_b · scale + shift`` of the others.

    ``net`` maps ``[B, C, N/2] -> [B, 2C, N/2]``: ``[shift, unconstrained_scale]`` along dim 1
    for the transformed point at the same position (e.g. the ``transformer`` network, with a
    positional embedding when the points are ordered). ``scale_fn`` as in
    :class:`~survae.transforms.bijections.coupling.AffineCoupling` (SurVAE: ``"softplus"``).

    Likelihood contribution: ``Σ log scale`` over the transformed points and coordinates.
    """

    def __init__(
        self,
        num_channels: int,
        num_points: int,
        net: NetSpec,
        scale_fn: str = "softplus",
        reverse_mask: bool = False,
    ):
        super().__init__()
        if num_points < 2 or num_points % 2:
            raise ValueError(
                "PointAffineCoupling: splits the points in two equal halves, which needs an "
                f"even number of points >= 2, got num_points={num_points}"
            )
        if num_channels < 1:
            raise ValueError(f"PointAffineCoupling: num_channels must be >= 1, got {num_channels}")
        if scale_fn not in LOG_SCALE_FNS:
            raise ValueError(
                f"PointAffineCoupling: unknown scale_fn {scale_fn!r}; "
                f"valid: {', '.join(LOG_SCALE_FNS)}"
            )
        self.num_channels, self.num_points = int(num_channels), int(num_points)
        self.scale_fn, self.reverse_mask = scale_fn, reverse_mask
        self._log_scale = LOG_SCALE_FNS[scale_fn]
        self.net = build_network(net, in_channels=num_channels, out_channels=2 * num_channels)

    def _run(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        what = "latent" if inverse else "input"
        check_ndim(self, x, 3, what)
        check_shape(self, x, (None, self.num_channels, self.num_points), what)
        half = self.num_points // 2
        first, second = x[:, :, :half], x[:, :, half:]
        cond, trans = (second, first) if self.reverse_mask else (first, second)
        h = self.net(cond)
        check_shape(self, h, (x.shape[0], 2 * self.num_channels, half), "network output")
        shift, raw = h.chunk(2, dim=1)
        log_scale = self._log_scale(raw)
        if inverse:
            y, ldj = (trans - shift) * torch.exp(-log_scale), -log_scale.sum(dim=(1, 2))
        else:
            y, ldj = trans * torch.exp(log_scale) + shift, log_scale.sum(dim=(1, 2))
        parts = (y, cond) if self.reverse_mask else (cond, y)
        return torch.cat(parts, dim=2), ldj

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(x, inverse=False)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(z, inverse=True)

    def extra_repr(self) -> str:
        s = f"num_channels={self.num_channels}, num_points={self.num_points}"
        s += f", scale_fn={self.scale_fn!r}"
        return s + (", reverse_mask=True" if self.reverse_mask else "")


@register("layer", "point_shuffle")
class PointShuffle(Bijection):
    """A fixed random permutation of the points of ``[B, C, N]`` (dimension 2), the same for
    every example (SortFlow's ``Shuffle`` between steps, whose points are ordered).

    Drawn at construction from a generator seeded with ``seed`` and stored as buffers, so a
    model rebuilt from its config, and a checkpoint, carry the same order. Contribution: 0.
    """

    def __init__(self, num_points: int, seed: int = 0):
        super().__init__()
        if num_points < 1:
            raise ValueError(f"PointShuffle: num_points must be >= 1, got {num_points}")
        self.num_points, self.seed = int(num_points), int(seed)
        perm = torch.randperm(num_points, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def _check(self, x: torch.Tensor, what: str) -> None:
        check_ndim(self, x, 3, what)
        check_shape(self, x, (None, None, self.num_points), what)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "input")
        return x.index_select(2, self.perm), x.new_zeros(x.shape[0])

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z, "latent")
        return z.index_select(2, self.inverse_perm), z.new_zeros(z.shape[0])

    def extra_repr(self) -> str:
        return f"num_points={self.num_points}, seed={self.seed}"


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------
def _point_set_shape(data_shape: Sequence[int], name: str) -> tuple[int, int]:
    if len(data_shape) != 2:
        raise ValueError(
            f"{name}: expects point sets of shape (num_points, dims), got data_shape "
            f"{tuple(data_shape)}"
        )
    num_points, dims = (int(s) for s in data_shape)
    if dims < 2:
        raise ValueError(f"{name}: the coordinate coupling needs dims >= 2, got {dims}")
    return num_points, dims


def _point_flow(
    name: str,
    sort: bool,
    data_shape: Sequence[int],
    num_bins: int | None,
    num_steps: int,
    d_model: int,
    num_heads: int,
    num_layers: int,
    dim_feedforward: int,
    dropout: float,
    scale_fn: str,
    bound: float,
    activation: str,
    init: str,
    inner_dropout: bool,
    shuffle_seed: int = 0,
) -> Flow:
    """PermuteFlow (``sort`` False) or SortFlow (``sort`` True) with the builders' parameters;
    ``num_bins`` is unused (point coordinates are continuous)."""
    N, D = _point_set_shape(data_shape, name)
    net = {
        "name": "transformer",
        "d_model": d_model,
        "num_heads": num_heads,
        "num_layers": num_layers,
        "dim_feedforward": dim_feedforward,
        "dropout": dropout,
        "activation": activation,
        "init": init,
        "inner_dropout": inner_dropout,
    }
    # SortFlow's points are ordered, so its across-point nets know the position.
    point_net = {**net, "positional_embedding": N // 2} if sort else net
    layers: list[Transform] = [
        SwapAxes(1, 2),  # [B, N, D] -> [B, D, N]
        Scale(1.0 / bound),
        Shift(-0.5),
        SortSurjection(point_dim=2, key_index=0) if sort else StochasticPermutation(point_dim=2),
    ]
    for step in range(num_steps):
        layers += [
            AffineCoupling(D, net=net, scale_fn=scale_fn, split_sizes=(D // 2, D - D // 2)),
            Reverse(D),
            PointAffineCoupling(D, N, net=point_net, scale_fn=scale_fn),
            PointShuffle(N, seed=shuffle_seed + step) if sort else StochasticPermutation(2),
            ActNorm(D),
        ]
    return Flow(StandardNormal((D, N)), layers)


@register("architecture", "permute_flow")
def permute_flow(
    data_shape: Sequence[int] = (50, 2),
    num_bins: int | None = None,
    num_steps: int = 32,
    d_model: int = 64,
    num_heads: int = 8,
    num_layers: int = 2,
    dim_feedforward: int = 256,
    dropout: float = 0.1,
    scale_fn: str = "softplus",
    bound: float = 28.0,
    activation: str = "gelu_sigmoid",
    init: str = "official",
    inner_dropout: bool = False,
) -> Flow:
    """PermuteFlow (SurVAE Flows): stochastic permutations make the model permutation
    invariant; ``log_prob`` is a lower bound (``exact`` False). Points must lie in
    ``[0, bound)^D`` (SpatialMNIST: ``bound = 28``). The defaults are the paper's model
    (6,428,992 parameters for 50 points in 2-D), with the official transformer's activation,
    initialisation and dropout placement (see :class:`~survae.nn.transformer.Transformer`;
    survae's alternatives: ``activation="gelu"``, ``init="xavier"``, ``inner_dropout=True``)."""
    # the parameters, as the keyword arguments of the shared model
    return _point_flow("permute_flow", False, **locals())


@register("architecture", "sort_flow")
def sort_flow(
    data_shape: Sequence[int] = (50, 2),
    num_bins: int | None = None,
    num_steps: int = 32,
    d_model: int = 64,
    num_heads: int = 8,
    num_layers: int = 2,
    dim_feedforward: int = 256,
    dropout: float = 0.2,
    scale_fn: str = "softplus",
    bound: float = 28.0,
    activation: str = "gelu_sigmoid",
    init: str = "official",
    inner_dropout: bool = False,
    shuffle_seed: int = 0,
) -> Flow:
    """SortFlow (SurVAE Flows): sorting the points by their first coordinate makes the model
    permutation invariant with an exact likelihood (contribution ``-log N!``); the steps use
    fixed shuffles (seeds ``shuffle_seed + step``) and position-aware across-point nets.
    The defaults are the paper's model (6,480,192 parameters for 50 points in 2-D), with the
    official transformer options as in :func:`permute_flow`."""
    # the parameters, as the keyword arguments of the shared model
    return _point_flow("sort_flow", True, **locals())


__all__ = ["PointAffineCoupling", "PointShuffle", "SwapAxes", "permute_flow", "sort_flow"]
