"""2-D toy models of SurVAE Flows (Nielsen et al. 2020, Sec. 5.1): AbsFlow and its baseline."""

from __future__ import annotations

from collections.abc import Sequence

from survae.distributions import StandardNormal
from survae.flows import Flow
from survae.registry import register
from survae.transforms import Transform
from survae.transforms.bijections.coupling import AffineCoupling
from survae.transforms.bijections.elementwise import Logit, Scale
from survae.transforms.bijections.permutation import Reverse
from survae.transforms.surjections.absolute import AbsSurjection


def coupling_stack(
    num_couplings: int, hidden: Sequence[int], scale_fn: str, dim: int = 2
) -> list[Transform]:
    """``num_couplings`` affine couplings (MLP nets) with a reverse between consecutive ones."""
    layers: list[Transform] = []
    for i in range(num_couplings):
        if i > 0:
            layers.append(Reverse())
        net = {"name": "mlp", "hidden": list(hidden)}
        layers.append(AffineCoupling(dim, net=net, scale_fn=scale_fn))
    return layers


@register("architecture", "abs_flow_2d")
def abs_flow_2d(
    data_shape: Sequence[int] = (2,),
    num_bins: int | None = None,
    num_couplings: int = 4,
    hidden: Sequence[int] = (200, 100),
    scale_fn: str = "softplus",
    bound: float = 4.0,
    logit_eps: float = 1e-6,
) -> Flow:
    """AbsFlow: |x| with learned sign probabilities → x/bound → logit → affine couplings →
    N(0, I). Exact likelihood. Data must lie inside ``(-bound, bound)²``."""
    layers: list[Transform] = [
        AbsSurjection(shape=tuple(data_shape)),
        Scale(1.0 / bound),
        Logit(eps=logit_eps),
        *coupling_stack(num_couplings, hidden, scale_fn, data_shape[0]),
    ]
    return Flow(StandardNormal(tuple(data_shape)), layers)


@register("architecture", "plain_flow_2d")
def plain_flow_2d(
    data_shape: Sequence[int] = (2,),
    num_bins: int | None = None,
    num_couplings: int = 4,
    hidden: Sequence[int] = (200, 100),
    scale_fn: str = "softplus",
) -> Flow:
    """The AbsFlow baseline: the same coupling stack on x directly, N(0, I) base."""
    layers = coupling_stack(num_couplings, hidden, scale_fn, data_shape[0])
    return Flow(StandardNormal(tuple(data_shape)), layers)
