"""Batch normalisation as a bijection (RealNVP, Dinh et al. 2017, Sec. 3.7)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from survae.errors import check_ndim, check_shape
from survae.registry import register
from survae.transforms.base import Bijection
from survae.utils import spatial_size


def _view(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return p.view(1, -1, *([1] * (x.dim() - 2)))


@register("layer", "batch_norm")
class BatchNormBijection(Bijection):
    """``z = (x − μ) / sqrt(σ² + eps) · exp(log_gamma) + beta`` per channel (RealNVP).

    Likelihood contribution: ``spatial_size · Σ_c (log_gamma_c − ½ log(σ²_c + eps))`` for the
    statistics ``(μ, σ²)`` in use; as in RealNVP the statistics are treated as constants, so
    in training mode this is the log-determinant for the batch's own (fixed) statistics.

    * Training: ``(μ, σ²)`` are the batch mean and (biased) variance over batch and spatial
      positions; the running averages are updated with ``momentum`` (the running variance
      uses the unbiased estimate, as ``torch.nn.BatchNorm`` does).
    * Evaluation: the running averages.
    * Inverse: evaluation mode uses the running averages; training mode uses the statistics of
      the most recent training batch if there was one (so ``inverse(forward(x)) == x`` holds
      in training mode too), else the running averages.

    Statistics are per process (no cross-device synchronisation).
    """

    def __init__(self, num_channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"BatchNormBijection: momentum must be in (0, 1], got {momentum}")
        self.num_channels = num_channels
        self.momentum = momentum
        self.eps = eps
        self.log_gamma = nn.Parameter(torch.zeros(num_channels))
        self.beta = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))
        self._last_batch_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def _check(self, x: torch.Tensor, what: str) -> None:
        check_ndim(self, x, (2, 3, 4), what)
        check_shape(self, x, (None, self.num_channels, *x.shape[2:]), what)

    def _batch_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's (biased) mean and variance per channel; updates the running averages
        and remembers the statistics for :meth:`inverse_with_ldj`."""
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            unbiased = var.detach() * (n / max(n - 1, 1))
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        self._last_batch_stats = (mean.detach(), var.detach())
        return mean, var

    def _ldj(self, var: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        per_channel = self.log_gamma - 0.5 * torch.log(var + self.eps)
        return (per_channel.sum() * spatial_size(x)).expand(x.shape[0]).contiguous()

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "input")
        n = x.numel() // x.shape[1]
        if self.training and n > 1:
            # torch's fused batch norm: normalisation, affine map and the running averages
            # (unbiased variance, same momentum rule) in one kernel, and one fused backward
            # that differentiates through the batch statistics as the plain formula does;
            # the statistics themselves (for the log-determinant) from one var_mean
            dims = [0, *range(2, x.dim())]
            var, mean = torch.var_mean(x, dim=dims, correction=0)
            z = F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.log_gamma.exp(),
                self.beta,
                training=True,
                momentum=self.momentum,
                eps=self.eps,
            )
            self._last_batch_stats = (mean.detach(), var.detach())
            return z, self._ldj(var, x)
        if self.training:  # a single value per channel: the plain formula (variance 0)
            mean, var = self._batch_stats(x)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - _view(mean, x)) * _view(torch.rsqrt(var + self.eps), x)
        z = x_hat * _view(self.log_gamma.exp(), x) + _view(self.beta, x)
        return z, self._ldj(var, x)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z, "latent")
        if self.training and self._last_batch_stats is not None:
            mean, var = self._last_batch_stats
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (z - _view(self.beta, z)) * _view(torch.exp(-self.log_gamma), z)
        x = x_hat * _view(torch.sqrt(var + self.eps), z) + _view(mean, z)
        return x, -self._ldj(var, z)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, momentum={self.momentum}, eps={self.eps}"
