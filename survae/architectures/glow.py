"""Glow (Kingma & Dhariwal, NeurIPS 2018): multi-scale flows of actnorm, invertible 1×1
convolutions and affine couplings, with learned priors for the factored-out channels.

The defaults build the model of the official code (github openai/glow, ``model.py`` with
``tfops.py``) layer for layer and parameter for parameter: 44,603,604 parameters for CIFAR-10
(``--n_levels 3 --depth 32 --width 512 --learntop``).

Layout for data ``[C, H, W]`` and ``L`` levels of ``K`` steps (as the official code):

    uniform dequantization → shift −0.5
    → L × [squeeze, K × (actnorm, permutation, coupling), split (all levels but the last)]
    → learned top prior

* The dequantizer gives ``(x + u) / num_bins`` in ``[0, 1)``; the shift makes it Glow's
  ``x / num_bins − 0.5`` plus noise of width ``1 / num_bins``. The dequantizer's likelihood
  contribution ``−D log(num_bins)`` is the ``−log(n_bins)·D`` term of Glow's objective, so
  ``log_prob`` is a lower bound on the discrete log-likelihood and its bits/dim are Glow's.
* A step is a :class:`~survae.transforms.base.Sequential` of actnorm, a channel permutation
  (``reverse``, ``shuffle``, ``conv1x1`` or ``conv1x1_lu``: Glow's ablation) and a channel
  coupling (``additive`` or ``affine`` with scale ``sigmoid(s + 2)``) whose network is
  ``glow_net`` (conv3×3 – actnorm – ReLU – conv1×1 – actnorm – ReLU – zero conv3×3; the official
  ``f``).
* Every 3×3 convolution has the official border channel (``edge_bias``: ``tfops.conv2d`` and
  ``conv2d_zeros`` zero-pad the input and append a channel that is 1 on the padding ring);
  ``edge_bias=False`` drops it (survae's earlier model).
* The split is survae's ``slice`` surjection keeping the first half of the channels; the other
  half gets Glow's learned prior ``p(z2 | z1) = N(μ(z1), σ(z1)²)`` whose mean and log-std come
  from a zero-initialised 3×3 convolution of ``z1`` (so it starts as N(0, I); official
  ``split2d_prior``, whose output interleaves mean and log-std where ours has the two halves: the
  same parameters up to the order of the output channels). Its likelihood contribution
  ``log p(z2 | z1)`` is exact, so the whole model below the dequantizer is an exact density of
  the dequantized data.
* The top prior (``top_prior``): ``"learntop"`` is the official ``prior`` with ``--learntop``,
  :class:`GlowTopPrior`; ``"per_element"`` is survae's earlier choice, a learned mean and
  log-std per element (:class:`~survae.distributions.DiagonalNormal`); ``"standard_normal"``
  is N(0, I) (the official model without ``--learntop``).

:class:`MultiScaleFlow` adds what multi-scale models need beyond :class:`~survae.flows.Flow`:
temperature applied to every level when sampling (Glow's reduced-temperature samples), and
``encode``/``decode`` between data and the full list of latents (one per split plus the top).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from survae.distributions import DiagonalNormal, StandardNormal
from survae.distributions.base import Distribution
from survae.errors import ShapeError, check_shape
from survae.flows import Flow
from survae.nn.glow import ZeroConv2d
from survae.registry import register
from survae.transforms.base import Sequential, Transform
from survae.transforms.bijections.actnorm import ActNorm
from survae.transforms.bijections.conv1x1 import Conv1x1, Conv1x1LU
from survae.transforms.bijections.coupling import AdditiveCoupling, AffineCoupling
from survae.transforms.bijections.elementwise import Shift
from survae.transforms.bijections.permutation import RandomPermutation, Reverse
from survae.transforms.bijections.squeeze import Squeeze2d
from survae.transforms.surjections.dequantization import UniformDequantization
from survae.transforms.surjections.slicing import Slice

#: channel permutations of Glow's ablation (Fig. 3): RealNVP's reverse, a fixed random
#: shuffle, and the learned invertible 1×1 convolution (unconstrained or LU-parameterised)
PERMUTATIONS = ("reverse", "shuffle", "conv1x1", "conv1x1_lu")
#: coupling types of Glow's ablation: NICE's additive and RealNVP/Glow's affine
COUPLINGS = ("additive", "affine")
#: top priors: the official learned prior (``--learntop``), survae's earlier per-element
#: diagonal Gaussian, and N(0, I)
TOP_PRIORS = ("learntop", "per_element", "standard_normal")
LOG_2PI = math.log(2 * math.pi)


@register("distribution", "glow_top_prior")
class GlowTopPrior(Distribution):
    """openai/glow's learned top prior (``prior`` with ``--learntop``): ``N(μ, diag σ²)`` on
    ``shape = (C, H, W)`` with ``[μ, log σ]`` = a zero-initialised 3×3 convolution
    (:class:`~survae.nn.glow.ZeroConv2d`: output scale ``exp(3·logs)``, with the official border
    channel when ``edge_bias``) of a ``[2C, H, W]`` map of zeros.

    On zeros only the bias, the output scale and the border-channel weights act, so ``μ`` and
    ``log σ`` are one value per channel in the interior plus a learned correction on the border
    positions; the convolution's other weights get zero gradients but exist, as in the official
    model (``9·(2C + 1)·2C + 4C`` parameters: 84,000 for CIFAR-10's ``48×4×4`` top). Starts as
    N(0, I). Sampling at temperature ``T`` draws ``μ + T·σ·ε`` (Glow's ``eps_std``).
    """

    def __init__(self, shape: Sequence[int], edge_bias: bool = True):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3:
            raise ShapeError(f"GlowTopPrior: shape must be (C, H, W), got {self.shape}")
        C = self.shape[0]
        self.conv = ZeroConv2d(2 * C, 2 * C, 3, edge_bias=edge_bias)

    def mean_and_log_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``μ`` and ``log σ``, each ``[1, C, H, W]``."""
        w = self.conv.conv.weight
        zeros = w.new_zeros(1, 2 * self.shape[0], *self.shape[1:])
        return self.conv(zeros).chunk(2, dim=1)

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        check_shape(self, x, (None, *self.shape))
        mean, log_std = self.mean_and_log_std()
        u = (x - mean) * torch.exp(-log_std)
        return (-0.5 * (u**2 + LOG_2PI) - log_std).reshape(x.shape[0], -1).sum(1)

    def sample(
        self, num_samples: int, context: torch.Tensor | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        mean, log_std = self.mean_and_log_std()
        eps = torch.randn(num_samples, *self.shape, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(log_std) * eps * temperature


class MultiScaleFlow(Flow):
    """A :class:`~survae.flows.Flow` whose transforms factor out channels with
    :class:`~survae.transforms.surjections.slicing.Slice` layers (RealNVP, Glow).

    * :meth:`sample` applies ``temperature`` to the factored-out channels as well as to the
      top latent (Glow samples every level at the reduced temperature);
    * :meth:`encode` maps data to the full latent representation: the channels each split drops,
      in order, then the top latent; :meth:`decode` inverts it exactly (only the stochastic
      layers, e.g. dequantization, are not inverted exactly: the rounding inverse of uniform
      dequantization returns the integer data).

    ``Slice`` layers may sit at the top level of ``transforms`` or inside
    :class:`~survae.transforms.base.Sequential` blocks.
    """

    def _slices(self) -> list[Slice]:
        """The splits :meth:`encode` and :meth:`decode` see: ``Slice`` layers at the top level
        or inside (nested) ``Sequential`` blocks, in forward order."""

        def walk(transforms: Iterable[Transform]) -> list[Slice]:
            found: list[Slice] = []
            for t in transforms:
                if isinstance(t, Sequential):
                    found += walk(t.transforms)
                elif isinstance(t, Slice):
                    found.append(t)
            return found

        return walk(self.transforms)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        temperature: float = 1.0,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Samples with ``temperature`` scaling the spread of the top prior and of every
        split prior (Glow's temperature; 0.7 gave its best-looking samples)."""
        slices = self._slices()
        saved = [s.temperature for s in slices]
        try:
            for s in slices:
                s.temperature = temperature
            return super().sample(num_samples, temperature=temperature, context=context)
        finally:
            for s, t in zip(slices, saved):
                s.temperature = t

    def encode(self, x: torch.Tensor, context: torch.Tensor | None = None) -> list[torch.Tensor]:
        """All latents of ``x``: the channels dropped by each split, in forward order, then the
        top latent (the input of the base distribution)."""
        latents: list[torch.Tensor] = []
        top = self._encode(self.transforms, x, context, latents)
        return [*latents, top]

    def _encode(
        self,
        transforms: Iterable[Transform],
        x: torch.Tensor,
        context: torch.Tensor | None,
        latents: list[torch.Tensor],
    ) -> torch.Tensor:
        for t in transforms:
            if isinstance(t, Sequential):
                x = self._encode(t.transforms, x, context, latents)
                continue
            if isinstance(t, Slice):
                latents.append(x[:, t.num_keep :])
            x, _ = t(x, context)
        return x

    def decode(
        self, latents: Sequence[torch.Tensor], context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The data of the latents :meth:`encode` returns (dropped channels of each split in
        forward order, then the top latent): the inverse of the deterministic part."""
        expected = len(self._slices()) + 1
        if len(latents) != expected:
            raise ValueError(
                f"{type(self).__name__}.decode: expected {expected} latents (one per split and "
                f"the top latent), got {len(latents)}"
            )
        dropped = list(latents[:-1])
        return self._decode(self.transforms, latents[-1], context, dropped)

    def _decode(
        self,
        transforms: Iterable[Transform],
        z: torch.Tensor,
        context: torch.Tensor | None,
        dropped: list[torch.Tensor],
    ) -> torch.Tensor:
        for t in reversed(list(transforms)):
            if isinstance(t, Sequential):
                z = self._decode(t.transforms, z, context, dropped)
            elif isinstance(t, Slice):
                z = torch.cat([z, dropped.pop()], dim=1)
            else:
                z = t.inverse(z, context)
        return z


def check_image_shape(name: str, data_shape: Sequence[int], num_squeezes: int) -> tuple[int, ...]:
    """``data_shape`` as ``(C, H, W)`` with H and W divisible by ``2 ** num_squeezes``."""
    shape = tuple(int(s) for s in data_shape)
    if len(shape) != 3:
        raise ShapeError(f"{name}: expected image data of shape (C, H, W), got {shape}")
    f = 2**num_squeezes
    if shape[1] % f or shape[2] % f:
        raise ShapeError(
            f"{name}: {num_squeezes} squeeze(s) need H and W divisible by {f}, got data of "
            f"shape {shape}; use fewer levels/scales"
        )
    return shape


def check_num_bins(name: str, num_bins: int | None) -> int:
    if num_bins is None:
        raise ValueError(
            f"{name} models discrete images: it needs num_bins (the number of pixel values, "
            "256 for 8-bit data), which the image data modules provide"
        )
    return int(num_bins)


def _permutation(kind: str, channels: int, seed: int) -> Transform:
    if kind == "reverse":
        return Reverse(channels)
    if kind == "shuffle":
        return RandomPermutation(channels, seed=seed)
    if kind == "conv1x1":
        return Conv1x1(channels)
    return Conv1x1LU(channels)


def glow_step(
    channels: int,
    hidden_channels: int,
    permutation: str = "conv1x1",
    coupling: str = "affine",
    scale_fn: str = "sigmoid",
    seed: int = 0,
    edge_bias: bool = False,
    context_channels: int = 0,
    shift_first: bool = False,
    actnorm_logscale_factor: float = 1.0,
    actnorm_init: str = "survae",
) -> Sequential:
    """One step of flow: actnorm → permutation → channel coupling with a ``glow_net``
    (``shift_first``: the affine coupling adds the shift before scaling, as openai/glow;
    ``actnorm_logscale_factor``: its ActNorms' ``logscale_factor``, the step's and the net's;
    ``actnorm_init``: the net's ActNorms' initial scale, ``"openai"`` or ``"survae"``).

    ``seed`` fixes the random shuffle when ``permutation="shuffle"``; ``edge_bias`` gives the
    network's 3×3 convolutions the official border channel; ``context_channels > 0`` gives the
    coupling network that many extra input channels from a context ``[B, n, H, W]``.
    """
    net = {"name": "glow_net", "hidden_channels": hidden_channels, "edge_bias": edge_bias}
    if actnorm_logscale_factor != 1.0:
        net["actnorm_logscale_factor"] = actnorm_logscale_factor
    if actnorm_init != "survae":
        net["actnorm_init"] = actnorm_init
    ctx = {"context_channels": context_channels} if context_channels else {}
    if coupling == "affine":
        layer: Transform = AffineCoupling(
            channels, net=net, mask="channel", scale_fn=scale_fn, shift_first=shift_first, **ctx
        )
    else:
        layer = AdditiveCoupling(channels, net=net, mask="channel", **ctx)
    actnorm = ActNorm(channels, log_scale_factor=actnorm_logscale_factor)
    return Sequential([actnorm, _permutation(permutation, channels, seed), layer])


def glow_split(channels: int, learned_prior: bool = True, edge_bias: bool = False) -> Slice:
    """Glow's split: keep the first half of the channels; the other half gets the learned prior
    ``N(μ(z1), σ(z1)²)`` from a zero-initialised 3×3 conv of the kept half (or N(0, I)), with
    the official border channel when ``edge_bias``."""
    keep = channels // 2
    if not learned_prior:
        return Slice(channels, keep)
    net = ZeroConv2d(keep, 2 * (channels - keep), 3, edge_bias=edge_bias)
    return Slice(channels, keep, decoder=net)


@register("architecture", "glow")
def glow(
    data_shape: Sequence[int] = (3, 32, 32),
    num_bins: int | None = 256,
    num_levels: int = 3,
    num_steps: int = 32,
    hidden_channels: int = 512,
    permutation: str = "conv1x1",
    coupling: str = "affine",
    scale_fn: str = "sigmoid",
    learn_split_prior: bool = True,
    top_prior: str = "learntop",
    edge_bias: bool = True,
    coupling_context_channels: int = 0,
    shift_first: bool = True,
    actnorm_logscale_factor: float = 3.0,
    actnorm_init: str = "openai",
) -> MultiScaleFlow:
    """Glow for images ``[C, H, W]`` of ``num_bins`` levels (see the module docstring).

    Args:
        num_levels: ``L``, number of squeezes; a split follows every level but the last.
        num_steps: ``K``, steps of flow per level.
        hidden_channels: width of the coupling networks (``glow_net``).
        permutation: ``"reverse"``, ``"shuffle"``, ``"conv1x1"`` (Glow) or ``"conv1x1_lu"``.
        coupling: ``"affine"`` (Glow's quantitative results) or ``"additive"``.
        scale_fn: affine scale map (``"sigmoid"``: Glow's ``sigmoid(s + 2)``); any of
            :data:`survae.transforms.bijections.coupling.LOG_SCALE_FNS`.
        learn_split_prior: Glow's learned ``p(z2 | z1)`` at each split (else N(0, I)).
        top_prior: ``"learntop"`` (official ``--learntop``, :class:`GlowTopPrior`),
            ``"per_element"`` (a learned mean and log-std per element, survae's earlier choice)
            or ``"standard_normal"``.
        edge_bias: the official border input channel of every 3×3 convolution (coupling
            networks, split priors, top prior); ``False`` gives plain zero-padded convolutions.
        shift_first: the affine coupling computes ``(x + shift) · scale``, as openai/glow's
            ``revnet2d_step`` (``False``: ``x · scale + shift``, RealNVP's order).
        actnorm_logscale_factor: openai/glow's ``logscale_factor`` of every ActNorm (the
            steps' and the coupling networks'): 3 stores log-scales divided by 3 (1: plain).
        actnorm_init: the coupling networks' ActNorm initial scale, ``"openai"`` (openai/glow,
            ``1/(std + 1e-6)``, as the steps' ActNorms) or ``"survae"`` (survae's earlier
            ``1/√(var + 1e-6)``). Only the first training batch sees it: a loaded model keeps
            its parameters.
        coupling_context_channels: extra input channels of every coupling network, read from
            a context ``[B, n, H, W]`` at the coupling's scale (0: none, the unconditional
            Glow; :func:`~survae.architectures.conditional.conditional_glow` feeds a class
            embedding).

    ``log_prob`` is a lower bound on ``log P(x)`` of the discrete data (``exact`` is False
    because of the dequantization) and the exact density of the dequantized data.
    """
    name = "glow"
    if permutation not in PERMUTATIONS:
        raise ValueError(
            f"{name}: unknown permutation {permutation!r}; valid: {', '.join(PERMUTATIONS)}"
        )
    if coupling not in COUPLINGS:
        raise ValueError(f"{name}: unknown coupling {coupling!r}; valid: {', '.join(COUPLINGS)}")
    if top_prior not in TOP_PRIORS:
        raise ValueError(f"{name}: unknown top_prior {top_prior!r}; valid: {', '.join(TOP_PRIORS)}")
    if num_levels < 1 or num_steps < 1:
        raise ValueError(
            f"{name}: num_levels and num_steps must be >= 1, got {num_levels}, {num_steps}"
        )
    C, H, W = check_image_shape(name, data_shape, num_levels)
    bins = check_num_bins(name, num_bins)

    layers: list[Transform] = [UniformDequantization(num_bins=bins), Shift(-0.5)]
    for level in range(num_levels):
        layers.append(Squeeze2d(2))
        C, H, W = 4 * C, H // 2, W // 2
        for k in range(num_steps):
            seed = level * num_steps + k
            step = glow_step(C, hidden_channels, permutation, coupling, scale_fn, seed, edge_bias,
                             context_channels=coupling_context_channels,
                             shift_first=shift_first,
                             actnorm_logscale_factor=actnorm_logscale_factor,
                             actnorm_init=actnorm_init)  # fmt: skip
            layers.append(step)
        if level < num_levels - 1:
            layers.append(glow_split(C, learn_split_prior, edge_bias))
            C = C // 2
    top = (C, H, W)
    if top_prior == "learntop":
        base: Distribution = GlowTopPrior(top, edge_bias=edge_bias)
    elif top_prior == "per_element":
        base = DiagonalNormal(top)
    else:
        base = StandardNormal(top)
    return MultiScaleFlow(base, layers)


__all__ = [
    "COUPLINGS",
    "PERMUTATIONS",
    "TOP_PRIORS",
    "GlowTopPrior",
    "MultiScaleFlow",
    "check_image_shape",
    "check_num_bins",
    "glow",
    "glow_split",
    "glow_step",
]
