"""Dequantization: generative rounding surjections that turn discrete data into continuous
data (uniform dequantization; Flow++'s variational dequantization)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from survae.errors import DataRangeError, check_shape
from survae.nn.build import NetSpec, build_network
from survae.registry import register
from survae.transforms.base import Surjection
from survae.utils import num_elements_per_sample, sum_except_batch


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


class _Dequantization(Surjection):
    """Shared inverse: rounding ``x = floor(z · num_bins)``; shared input check.

    ``check_input`` (default on): ``forward`` refuses input that is not integer-valued in
    ``[0, num_bins)`` with :class:`~survae.errors.DataRangeError` naming the layer and the
    observed range -- e.g. images already scaled to ``[0, 1]``, whose "likelihood" would be
    meaningless. It costs one reduction and one host sync per call, and nothing for ``uint8``
    input with ``num_bins >= 256`` (which cannot be out of range). Turn it off only for speed,
    explicitly (``check_input=False``).
    """

    stochastic_forward = True

    def __init__(self, num_bins: int, integer_output: bool, check_input: bool = True):
        super().__init__()
        if num_bins < 2:
            raise ValueError(f"{type(self).__name__}: num_bins must be >= 2, got {num_bins}")
        self.num_bins = int(num_bins)
        self.integer_output = integer_output
        self.check_input = bool(check_input)

    def check_discrete(self, x: torch.Tensor) -> None:
        """Raise :class:`DataRangeError` unless ``x`` holds integers in ``[0, num_bins)``."""
        if not self.check_input or x.numel() == 0:
            return
        if x.dtype == torch.uint8 and self.num_bins >= 256:
            return
        if x.dtype == torch.bool:
            x = x.to(torch.uint8)
        lo, hi = torch.aminmax(x)
        if x.is_floating_point():
            fractional = (x != torch.floor(x)).any()
            lo, hi, frac = torch.stack([lo, hi, fractional.to(x.dtype)]).tolist()
        else:
            lo, hi, frac = int(lo), int(hi), 0.0
        if lo >= 0 and hi <= self.num_bins - 1 and not frac:  # False for NaN
            return
        note = "non-integer " if frac else ""
        raise DataRangeError(
            f"{type(self).__name__}: input must be integers in [0, {self.num_bins - 1}] "
            f"(num_bins={self.num_bins}: the raw discrete data, e.g. uint8 pixels); got "
            f"{note}values in [{lo:g}, {hi:g}]. Data scaled to [0, 1] gives a meaningless "
            "likelihood; check_input=False skips this check."
        )

    def _log_volume(self, z: torch.Tensor) -> torch.Tensor:
        """``−D · log num_bins`` in ``z``'s dtype, rounded as the official code rounds it
        (``log`` of the bin count in that dtype, then times ``D``): the same float32 bits."""
        return -torch.log(z.new_tensor(float(self.num_bins))) * num_elements_per_sample(z)

    def inverse(self, z, context=None):
        x = torch.floor(z * self.num_bins).clamp(0, self.num_bins - 1)
        return x.long() if self.integer_output else x


@register("layer", "uniform_dequantization")
class UniformDequantization(_Dequantization):
    """Generative surjection (rounding) with uniform dequantization noise (Nielsen et al. 2020;
    Theis et al. 2016).

    ``x`` holds integers in ``{0, …, num_bins − 1}`` (uint8, integer or float tensors; integer
    dtypes become the default float dtype). ``z = (x + u) / num_bins`` with ``u ~ U[0, 1)^D``,
    so ``z ∈ [0, 1)^D``. The likelihood contribution is ``−D · log(num_bins)`` (the log-density
    of ``q(z | x)``, uniform on the bin, is ``D · log(num_bins)``), so the flow's ``log_prob``
    is a lower bound on ``log P(x)`` of the discrete data.

    ``inverse`` rounds: ``floor(z · num_bins)`` clamped to ``[0, num_bins − 1]``, as a float
    tensor of integer values, or ``torch.long`` when ``integer_output=True``.

    ``check_input`` (default True): refuse input that is not integer-valued in
    ``[0, num_bins)`` (:class:`~survae.errors.DataRangeError`); see ``_Dequantization``.
    """

    def __init__(self, num_bins: int = 256, integer_output: bool = False, check_input: bool = True):
        super().__init__(num_bins, integer_output, check_input)

    def forward(self, x, context=None):
        self.check_discrete(x)
        x = _as_float(x)
        u = torch.rand_like(x)
        z = (x + u) / self.num_bins
        ldj = self._log_volume(z).expand(x.shape[0])
        return z, ldj


@register("layer", "variational_dequantization")
class VariationalDequantization(_Dequantization):
    """Generative surjection (rounding) with learned dequantization noise ``u ~ q(u | x)``
    (Flow++, Ho et al. 2019; Nielsen et al. 2020).

    ``z = (x + u) / num_bins`` with ``u ∈ (0, 1)^D``; the likelihood contribution is
    ``−D · log(num_bins) − log q(u | x)`` (a lower bound on ``log P(x)``, tight when ``q`` is the
    model's posterior over the bin).

    * ``encoder`` — ``q``: any object with ``sample_with_log_prob(num_samples,
      context=c)`` returning ``(sample, log-density)`` of the sample's shape and ``[B]``. A
      :class:`survae.flows.Flow` whose transforms and base accept ``context`` (a conditional
      flow) or a conditional distribution (e.g. ``ConditionalNormal``) both qualify.
    * ``context_net`` — network (module or spec) computing the encoder's context from ``x``
      rescaled to ``[−1, 1]`` (``x · 2 / (num_bins − 1) − 1``); if None the rescaled ``x`` itself
      is the context. Building from a spec needs ``data_channels`` and ``context_channels``.
    * ``squash`` — if True (default, Flow++), the encoder's sample ``y`` lives in ``R^D`` and
      ``u = sigmoid(y)``, with ``log q(u | x) = log q(y | x) − Σ log σ'(y)``; if False the
      encoder must already return ``u ∈ (0, 1)^D`` with its log-density.

    ``inverse`` rounds like :class:`UniformDequantization`; ``check_input`` as there.
    """

    def __init__(
        self,
        encoder: Any,
        num_bins: int = 256,
        context_net: NetSpec | None = None,
        data_channels: int | None = None,
        context_channels: int | None = None,
        squash: bool = True,
        integer_output: bool = False,
        check_input: bool = True,
    ):
        super().__init__(num_bins, integer_output, check_input)
        if not callable(getattr(encoder, "sample_with_log_prob", None)):
            raise TypeError(
                "VariationalDequantization: encoder must have sample_with_log_prob(num_samples, "
                f"context=...) (a conditional Flow or distribution), got {type(encoder).__name__}"
            )
        self.encoder = encoder
        if context_net is None or isinstance(context_net, torch.nn.Module):
            self.context_net = context_net
        else:
            if data_channels is None or context_channels is None:
                raise ValueError(
                    "VariationalDequantization: building context_net from a spec needs "
                    "data_channels and context_channels"
                )
            self.context_net = build_network(context_net, data_channels, context_channels)
        self.squash = squash

    def forward(self, x, context=None):
        self.check_discrete(x)
        x = _as_float(x)
        ctx = 2.0 * x / (self.num_bins - 1) - 1.0  # the official order of operations, bit for bit
        if self.context_net is not None:
            ctx = self.context_net(ctx)
        y, log_q = self.encoder.sample_with_log_prob(x.shape[0], context=ctx)
        check_shape(self, y, tuple(x.shape), what="dequantization noise (encoder sample)")
        if self.squash:
            u = torch.sigmoid(y)
            # log σ′(y) = −softplus(−y) − softplus(y), summed in the official order (same bits)
            log_q = log_q - sum_except_batch(-F.softplus(-y) - F.softplus(y))
        else:
            u = y
        z = (x + u) / self.num_bins
        ldj = self._log_volume(z) - log_q
        return z, ldj
