"""Absolute value on selected features with a sign model conditioned on the folded point."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from survae.errors import check_ndim, check_shape
from survae.nn.build import NetSpec, build_network
from survae.registry import register
from survae.transforms.base import Surjection


@register("layer", "conditional_abs")
class ConditionalAbsSurjection(Surjection):
    """Inference surjection ``z = x`` with ``z_i = |x_i|`` for ``i`` in ``elements``, on vectors
    ``[B, num_features]`` (the official SurVAE toy ``ElementAbsSurjection``, its checkerboard
    AbsFlow with ``elements=(0,)``).

    The signs ``s_i = sign(x_i)`` of the folded features are modelled by a classifier of the
    folded point: ``net`` maps ``z`` (``num_features``) to one logit per folded feature and
    ``p(s_i = +1 | z) = sigmoid(logit_i(z))``, the signs independent given ``z``. So the sign
    can depend on ``|x_i|`` and on the other coordinates, which an unconditional sign cannot
    (the checkerboard's occupied cells alternate with ``x_1``). Each sign branch is an
    isometry, so ``p(x) = p(z) · p(s | z)`` and the exact likelihood contribution is
    ``Σ_i log p(s_i | z)`` (``x_i = 0`` counts as positive).

    ``inverse`` samples the signs from the classifier and returns ``x`` with ``x_i = s_i z_i``.
    """

    def __init__(self, num_features: int, net: NetSpec, elements: Sequence[int] = (0,)):
        super().__init__()
        self.num_features = int(num_features)
        elements = [int(e) for e in elements]
        if not elements or len(set(elements)) != len(elements):
            raise ValueError(
                f"ConditionalAbsSurjection: elements must be distinct feature indices, got "
                f"{elements}"
            )
        bad = [e for e in elements if not 0 <= e < self.num_features]
        if bad:
            raise ValueError(
                f"ConditionalAbsSurjection: elements {bad} out of range for num_features="
                f"{self.num_features} (valid: 0..{self.num_features - 1})"
            )
        self.elements = tuple(elements)
        self.register_buffer("_index", torch.tensor(self.elements), persistent=False)
        self.net = build_network(net, in_channels=self.num_features, out_channels=len(elements))

    def _check(self, x: torch.Tensor, what: str) -> None:
        check_ndim(self, x, 2, what)
        check_shape(self, x, (None, self.num_features), what)

    def _logits(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.net(z)
        check_shape(self, logits, (z.shape[0], len(self.elements)), "network output")
        return logits

    def sign_log_prob(self, z: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """``Σ_i log p(s_i | z)`` for folded points ``z`` and boolean signs ``positive``
        (``[B, len(elements)]``): ``[B]``."""
        logits = self._logits(z)
        return torch.where(positive, F.logsigmoid(logits), F.logsigmoid(-logits)).sum(1)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "input")
        folded = x.index_select(1, self._index)
        z = x.index_copy(1, self._index, folded.abs())
        return z, self.sign_log_prob(z, folded >= 0)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self._check(z, "latent")
        p_pos = torch.sigmoid(self._logits(z))
        sign = torch.where(torch.rand_like(p_pos) < p_pos, 1.0, -1.0).to(z.dtype)
        return z.index_copy(1, self._index, sign * z.index_select(1, self._index))

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, elements={self.elements}"


__all__ = ["ConditionalAbsSurjection"]
