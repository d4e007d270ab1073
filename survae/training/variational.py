"""Training a flow towards an unnormalised target density ``p̃ = Z·p`` (``data=target``):
reverse KL and the alpha-divergence, with samples ``x ~ q`` from the flow
(``Flow.sample_with_log_prob``) and the log importance weights ``log w = log p̃(x) - log q(x)``.

* ``loss.kind=reverse_kl``: ``E_q[log q - log p̃] = KL(q ‖ p) - log Z`` (normflows'
  ``reverse_kld``);
* ``loss.kind=alpha_divergence``: ``log E_q[w^α] / (α(α - 1))``, minimised; for α ∈ (0, 1)
  it maximises ``log E_q[w^α]`` and for α > 1 minimises it, as normflows'
  ``reverse_alpha_div`` (whose sign it shares), up to the positive factor ``1/|α(α - 1)|``;
  α → 1 would be the reverse KL, so α must not be 0 or 1.

Diagnostics per batch: the effective sample size fraction ``ESS/n = (Σw)² / (n Σw²)`` and the
estimate ``log Ẑ = log (1/n) Σ w`` (unbiased in ``Z``; ``E[log Ẑ] ≤ log Z``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from survae.config_check import ConfigError

LOSSES = ("likelihood", "reverse_kl", "alpha_divergence")


def check_loss(loss: Mapping[str, Any] | None, data_kind: str) -> tuple[str, float]:
    """``(kind, alpha)`` of the ``loss`` config: maximum likelihood for data, reverse KL (the
    default) or the alpha-divergence for a target."""
    loss = dict(loss or {})
    unknown = set(loss) - {"kind", "alpha"}
    if unknown:
        raise ConfigError(f"loss: unknown key(s) {sorted(unknown)}; valid: kind, alpha")
    target = data_kind == "target"
    kind = loss.get("kind") or ("reverse_kl" if target else "likelihood")
    if kind not in LOSSES:
        raise ConfigError(f"loss.kind: unknown {kind!r}; valid: {', '.join(LOSSES)}")
    if target and kind == "likelihood":
        raise ConfigError("loss.kind=likelihood needs data; data=target trains by reverse_kl "
                          "or alpha_divergence")  # fmt: skip
    if not target and kind != "likelihood":
        raise ConfigError(f"loss.kind={kind} needs a target density: set data=target")
    alpha = float(loss.get("alpha", 2.0) if loss.get("alpha") is not None else 2.0)
    if kind == "alpha_divergence" and alpha in (0.0, 1.0):
        raise ConfigError(f"loss.alpha must not be 0 or 1, got {alpha}")
    return kind, alpha


def divergence_loss(log_w: torch.Tensor, kind: str, alpha: float = 2.0) -> torch.Tensor:
    """The training loss of a batch of log importance weights (see the module docstring)."""
    if kind == "reverse_kl":
        return -log_w.mean()
    log_mean = torch.logsumexp(alpha * log_w, dim=0) - math.log(log_w.shape[0])
    return log_mean / (alpha * (alpha - 1.0))


def importance_diagnostics(log_w: torch.Tensor) -> dict[str, torch.Tensor]:
    """``ess`` (effective sample size over ``n``) and ``log_z`` (``log (1/n) Σ w``)."""
    log_w = log_w.detach()
    n = log_w.shape[0]
    ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / n
    return {"ess": ess, "log_z": torch.logsumexp(log_w, 0) - math.log(n)}


def sample_log_weights(
    model: torch.nn.Module, target: torch.nn.Module, num_samples: int
) -> torch.Tensor:
    """``log p̃(x) - log q(x)`` for ``num_samples`` samples ``x ~ q`` of the flow (with the
    gradient of both terms when autograd is on: the reparameterised estimator)."""
    x, log_q = model.sample_with_log_prob(num_samples)
    return target(x) - log_q


__all__ = [
    "LOSSES",
    "check_loss",
    "divergence_loss",
    "importance_diagnostics",
    "sample_log_weights",
]
