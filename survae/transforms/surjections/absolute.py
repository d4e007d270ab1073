"""Absolute value: fold a symmetric density onto the positive half-space (AbsFlow)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from survae.errors import check_shape
from survae.registry import register
from survae.transforms.base import Surjection
from survae.utils import sum_except_batch


@register("layer", "abs")
class AbsSurjection(Surjection):
    """Inference surjection ``z = |x|`` elementwise (SurVAE Flows, Nielsen et al. 2020, AbsFlow).

    The sign ``s`` of each element is a Bernoulli ``p(s = +1) = sigmoid(logit)`` with ``logits``
    of shape ``shape`` (default ``()``: one probability shared by all elements; e.g.
    ``shape=(2,)`` for one per feature of 2-D data), initialised at 1/2. With
    ``learn_signs=True`` (survae's option) the logits are learned parameters; with ``False``
    they are a fixed zero buffer, ``p(s) = 1/2``, as the official SurVAE ``AbsSurjection``
    (the paper's AbsFlow). Since each sign branch is an isometry,
    ``p(x) = p(|x|) · p(sign(x))``, so the exact likelihood contribution is
    ``Σ_i log p(s_i)`` with ``s_i = sign(x_i)`` (``x_i = 0`` counts as positive).

    ``inverse`` samples the signs and returns ``s · z``.
    """

    def __init__(self, shape: int | Sequence[int] = (), learn_signs: bool = True):
        super().__init__()
        self.shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        self.learn_signs = bool(learn_signs)
        if self.learn_signs:
            self.logits = nn.Parameter(torch.zeros(self.shape))
        else:
            self.register_buffer("logits", torch.zeros(self.shape))

    def _check(self, x: torch.Tensor, what: str) -> None:
        if self.shape:
            check_shape(self, x, (None, *self.shape), what)

    def forward(self, x, context=None):
        self._check(x, "input")
        positive = x >= 0
        log_p_pos = F.logsigmoid(self.logits)
        log_p_neg = F.logsigmoid(-self.logits)
        log_p_sign = torch.where(positive, log_p_pos, log_p_neg)
        return x.abs(), sum_except_batch(log_p_sign)

    def inverse(self, z, context=None):
        self._check(z, "latent")
        p_pos = torch.sigmoid(self.logits).to(z.dtype)
        positive = torch.rand_like(z) < p_pos
        return torch.where(positive, z, -z)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, learn_signs={self.learn_signs}"
