"""Distribution contract: ``log_prob(x, context=None) -> [batch]`` in nats and
``sample(num_samples, context=None, temperature=1.0)``.

Unconditional distributions know their ``shape`` (one sample's shape); conditional ones take
the shape from ``context`` and ignore ``num_samples`` when a context is given.
"""

from __future__ import annotations

import torch
from torch import nn


class Distribution(nn.Module):
    """Base class of densities over a fixed event shape."""

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self,
        num_samples: int,
        context: torch.Tensor | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        raise NotImplementedError

    def sample_with_log_prob(
        self,
        num_samples: int,
        context: torch.Tensor | None = None,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.sample(num_samples, context=context, temperature=temperature)
        return x, self.log_prob(x, context=context)

    def _device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")


class ConditionalDistribution(Distribution):
    """A density ``p(x | context)`` whose parameters come from a network of the context."""
