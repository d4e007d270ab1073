"""2-D toy models of SurVAE Flows (Nielsen et al. 2020, Sec. 5.1): AbsFlow and its baseline.

Three builders, each the official SurVAE code's toy model layer for layer (commit 271a31d,
``experiments/toy``):

* :func:`plain_flow_2d`, the baseline (``train_flow.py``): affine couplings with MLP nets and a
  reverse between consecutive ones, standard normal base;
* :func:`abs_flow_2d` (``train_abs_flow.py``, corners / eight Gaussians / four circles):
  ``|x|`` on both coordinates with fair signs, scale 1/4, logit, then the baseline's couplings;
* :func:`abs_unif_2d` (``train_abs_unif.py``, the checkerboard): ``|x_0|`` only, its sign from
  an MLP classifier of the folded point, then a fixed affine map onto a uniform base on
  ``[0, 1]²``; no couplings.

Initialisation: ``init="official"`` keeps PyTorch's default for every MLP layer, as the official
code; ``init="zero_output"`` (survae's option) zero-initialises the coupling nets' output layers
so every coupling starts at the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from survae.distributions import StandardNormal, StandardUniform
from survae.errors import check_shape
from survae.flows import Flow
from survae.registry import register
from survae.transforms import Transform
from survae.transforms.base import Bijection
from survae.transforms.bijections.coupling import AffineCoupling
from survae.transforms.bijections.elementwise import Logit, Scale
from survae.transforms.bijections.permutation import Reverse
from survae.transforms.surjections.abs_conditional import ConditionalAbsSurjection
from survae.transforms.surjections.absolute import AbsSurjection

INITS = ("official", "zero_output")


def _check_init(name: str, init: str) -> bool:
    """``True`` when the MLPs' output layers are zero-initialised."""
    if init not in INITS:
        raise ValueError(f"{name}: unknown init {init!r}; valid: {', '.join(INITS)}")
    return init == "zero_output"


def _mlp(hidden: Sequence[int], activation: str, zero_init_output: bool) -> dict:
    return {
        "name": "mlp",
        "hidden": list(hidden),
        "activation_name": activation,
        "zero_init_output": zero_init_output,
    }


def coupling_stack(
    num_couplings: int,
    hidden: Sequence[int],
    scale_fn: str,
    dim: int = 2,
    init: str = "official",
    activation: str = "relu",
) -> list[Transform]:
    """``num_couplings`` affine couplings (MLP nets) with a reverse between consecutive ones."""
    zero = _check_init("coupling_stack", init)
    layers: list[Transform] = []
    for i in range(num_couplings):
        if i > 0:
            layers.append(Reverse())
        net = _mlp(hidden, activation, zero)
        layers.append(AffineCoupling(dim, net=net, scale_fn=scale_fn))
    return layers


@register("layer", "feature_affine")
class FeatureAffine(Bijection):
    """Fixed per-feature affine map of vectors ``[B, D]``: ``z = (x + shift) · scale`` (the
    official toy ``ShiftBijection`` then ``ScaleBijection``), e.g. a box onto the unit square.

    Likelihood contribution: ``Σ_d log|scale_d|``, the same for every example.
    """

    def __init__(self, shift: Sequence[float], scale: Sequence[float]):
        super().__init__()
        if len(shift) != len(scale) or not len(scale):
            raise ValueError(
                f"FeatureAffine: shift and scale need one value per feature, got "
                f"{len(shift)} and {len(scale)}"
            )
        if any(float(s) == 0.0 for s in scale):
            raise ValueError(f"FeatureAffine: every scale must be non-zero, got {list(scale)}")
        self.register_buffer("shift", torch.tensor([float(s) for s in shift]))
        self.register_buffer("scale", torch.tensor([float(s) for s in scale]))

    def _ldj(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale.abs().log().sum().to(x.dtype).expand(x.shape[0])

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(self, x, (None, self.scale.numel()))
        return (x + self.shift) * self.scale, self._ldj(x)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(self, z, (None, self.scale.numel()), "latent")
        return z / self.scale - self.shift, -self._ldj(z)

    def extra_repr(self) -> str:
        return f"shift={self.shift.tolist()}, scale={self.scale.tolist()}"


@register("architecture", "abs_flow_2d")
def abs_flow_2d(
    data_shape: Sequence[int] = (2,),
    num_bins: int | None = None,
    num_couplings: int = 4,
    hidden: Sequence[int] = (200, 100),
    scale_fn: str = "softplus",
    bound: float = 4.0,
    logit_eps: float = 1e-9,
    learn_signs: bool = False,
    init: str = "official",
    activation: str = "relu",
    logit_mode: str = "squeeze",
) -> Flow:
    """AbsFlow (official ``train_abs_flow.py``): ``|x|`` with fair signs → x/bound → logit → affine
    couplings → N(0, I). Exact likelihood. Data must lie inside ``[-bound, bound]²``.
    ``learn_signs=True`` learns one sign probability per coordinate (survae's option).

    The defaults (``squeeze``, ``1e-9``) keep models saved before ``logit_mode`` existed
    loading as they were trained; the experiment configs set the official behaviour:
    ``logit_mode="clamp"`` with ``logit_eps=1e-6`` is the official ``Logit`` (input clamped to
    ``[1e-6, 1 − 1e-6]``: on the axes, x_d = 0, log p is that of x_d = 4e-6);
    ``logit_mode="squeeze"`` is survae's ``eps + (1 − 2·eps)·x`` (an option; with
    ``logit_eps=1e-9`` it differs from the official model only within ~1e-4 of the axes)."""
    layers: list[Transform] = [
        AbsSurjection(shape=tuple(data_shape), learn_signs=learn_signs),
        Scale(1.0 / bound),
        Logit(eps=logit_eps, mode=logit_mode),
        *coupling_stack(num_couplings, hidden, scale_fn, data_shape[0], init, activation),
    ]
    return Flow(StandardNormal(tuple(data_shape)), layers)


@register("architecture", "plain_flow_2d")
def plain_flow_2d(
    data_shape: Sequence[int] = (2,),
    num_bins: int | None = None,
    num_couplings: int = 4,
    hidden: Sequence[int] = (200, 100),
    scale_fn: str = "softplus",
    init: str = "official",
    activation: str = "relu",
) -> Flow:
    """The AbsFlow baseline (official ``train_flow.py``): the same coupling stack on x
    directly, N(0, I) base."""
    layers = coupling_stack(num_couplings, hidden, scale_fn, data_shape[0], init, activation)
    return Flow(StandardNormal(tuple(data_shape)), layers)


@register("architecture", "abs_unif_2d")
def abs_unif_2d(
    data_shape: Sequence[int] = (2,),
    num_bins: int | None = None,
    hidden: Sequence[int] = (200, 100),
    elements: Sequence[int] = (0,),
    bound: float = 4.0,
    init: str = "official",
    activation: str = "relu",
) -> Flow:
    """The checkerboard AbsFlow (official ``train_abs_unif.py``): fold the coordinates in
    ``elements`` with a sign classifier (an MLP of the folded point,
    :class:`~survae.transforms.surjections.abs_conditional.ConditionalAbsSurjection`), map the
    folded box ``[0, bound]`` × ``[-bound, bound]`` onto ``[0, 1]²`` and model it as uniform.

    ``log p(x) = log p(s | |x_0|, x_1) − log(bound · 2·bound)``: the sign classifier is the only
    learned part (exact likelihood). ``init="zero_output"`` starts the classifier at p = 1/2.
    """
    dim = int(data_shape[0])
    zero = _check_init("abs_unif_2d", init)
    folded = {int(e) for e in elements}
    shift = [0.0 if d in folded else bound for d in range(dim)]
    scale = [1.0 / bound if d in folded else 1.0 / (2.0 * bound) for d in range(dim)]
    layers: list[Transform] = [
        ConditionalAbsSurjection(dim, net=_mlp(hidden, activation, zero), elements=elements),
        FeatureAffine(shift, scale),
    ]
    return Flow(StandardUniform(tuple(data_shape)), layers)
