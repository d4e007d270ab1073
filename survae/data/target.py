"""A target density in place of a data set: ``data=target`` trains a flow towards an
unnormalised log-density (reverse KL or an alpha-divergence, ``loss.kind``) instead of fitting
samples.

The module has no data. Its batches are placeholders ``[B, dim]`` of zeros whose only role is
to drive the loop: each training batch asks for ``batch_size`` samples from the flow, each
validation or test batch for ``eval_batch_size``; ``train_size`` / ``val_size`` /
``test_size`` set how many per epoch and evaluation. ``target`` names a registered target
(``survae.distributions.targets``), built by :meth:`TargetDataModule.build_target`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from survae import registry
from survae.data.base import ArrayDataset, FlowDataModule
from survae.registry import register


@register("dataset", "target")
class TargetDataModule(FlowDataModule):
    """Placeholder batches for training towards a registered target density (see the module
    docstring); ``kind`` is ``"target"`` and ``shape`` the target's ``(dim,)``."""

    name = "target"
    kind = "target"
    num_bins = None

    def __init__(
        self,
        target: str | Mapping[str, Any] = "two_moons_energy",
        train_size: int = 25_600,
        val_size: int = 8_192,
        test_size: int = 65_536,
        batch_size: int = 256,
        **kwargs: Any,
    ):
        self.target_spec = {"name": target} if isinstance(target, str) else dict(target)
        self.shape = (int(self.build_target().dim),)
        super().__init__(batch_size=batch_size, **kwargs)
        if min(train_size, val_size, test_size) < 1:
            raise ValueError("target: split sizes must be positive")
        self.sizes = (int(train_size), int(val_size), int(test_size))

    def build_target(self) -> torch.nn.Module:
        """The registered target of ``data.target``."""
        return registry.build_from_spec("target", self.target_spec)

    def _load(self):
        return tuple(ArrayDataset(torch.zeros(size, self.shape[0])) for size in self.sizes)


__all__ = ["TargetDataModule"]
