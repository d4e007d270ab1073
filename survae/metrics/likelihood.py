"""Likelihood metrics: the one place where the units of the published numbers are defined.

Every model in survae reports ``log_prob(x)`` per example in **nats** (natural log). The papers
report that number in different units depending on the data:

* images — **bits per dimension** (bpd, lower is better):
  ``bpd = -log P(x) / (D · ln 2)`` with ``D = C · H · W`` the number of sub-pixels (e.g.
  3 · 32 · 32 = 3072 for CIFAR-10). ``P`` is the probability of the *discrete* image at the
  data's quantization: 8-bit, or ``2^num_bits`` levels with ``data.num_bits`` (the model's
  dequantization follows the data's ``num_bins``, so the formula is the same for every depth).
  survae's image models start with a dequantization layer whose likelihood contribution makes
  ``log_prob`` exactly that discrete log-likelihood (or a lower bound on it), so no extra
  ``D · log 256`` correction is applied here. (A model fitted to continuous data scaled to
  ``[0, 1]`` without such a layer would need ``log P(x) = log p(x/256) - D · log 256``.)
* point sets — **per-point log-likelihood** (PPLL, nats, higher is better):
  ``PPLL = log p(set) / N`` with ``N`` the number of points (SurVAE Flows' SpatialMNIST, N = 50).
* tabular and 2-D toy data — **negative log-likelihood** in nats per example (lower is better).
  (MAF's UCI tables print the log-likelihood, i.e. minus this value.)

When a model's ``log_prob`` is only a bound (dequantization, augmentation, VAEs, stochastic
permutations), the test numbers in the papers use the importance-weighted bound of
:func:`importance_weighted_log_prob` (SurVAE Flows: k = 1000 for images), which tightens
towards the true log-likelihood as k grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

LN2 = math.log(2.0)


def nats_per_dim(log_prob_nats: Tensor, num_dims: int) -> Tensor:
    """``-log P(x) / D``: negative log-likelihood in nats per dimension (lower is better)."""
    _check_count("num_dims", num_dims)
    return -log_prob_nats / num_dims


def bits_per_dim(log_prob_nats: Tensor, num_dims: int) -> Tensor:
    """``bpd = -log P(x) / (D · ln 2)`` (lower is better).

    ``log_prob_nats`` is the log-likelihood of the discrete 8-bit data in nats, per example
    (a model with a dequantization layer already returns it, or a lower bound, in which case
    the bpd is an upper bound). ``num_dims`` is ``D = C · H · W``, the number of sub-pixels,
    as in the papers (RealNVP, Glow, Flow++, SurVAE Flows).
    """
    _check_count("num_dims", num_dims)
    return -log_prob_nats / (num_dims * LN2)


def per_point_log_likelihood(log_prob: Tensor, num_points: int) -> Tensor:
    """``PPLL = log p(set) / N`` in nats (higher is better), for a set of ``N`` points."""
    _check_count("num_points", num_points)
    return log_prob / num_points


def negative_log_likelihood(log_prob: Tensor, num_dims: int | None = None) -> Tensor:
    """``-log p(x)`` in nats per example (lower is better); ``num_dims`` is ignored."""
    return -log_prob


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class LikelihoodMetric(NamedTuple):
    """How a data kind's log-likelihood is reported: ``(name, fn, higher_is_better)``.

    ``fn(log_prob_nats [batch], size) -> [batch]`` with ``size`` the number of dimensions
    (images: C·H·W) or of points (point sets); average the result over the test set.
    """

    name: str
    fn: Callable[[Tensor, int], Tensor]
    higher_is_better: bool

    @property
    def unit(self) -> str:
        return _UNITS[self.name]

    def __call__(self, log_prob_nats: Tensor, size: int) -> Tensor:
        return self.fn(log_prob_nats, size)


_UNITS = {
    "bpd": "bits per dimension",
    "ppll": "nats per point",
    "nll": "nats per example",
    "reverse_kl": "nats per sample",
}


def reverse_kl(log_weight: Tensor, num_dims: int | None = None) -> Tensor:
    """``log q(x) - log p̃(x)`` per sample ``x ~ q`` (``log_weight = log p̃ - log q``), whose
    mean is the reverse KL ``KL(q ‖ p)`` minus ``log Z`` (lower is better); for a flow trained
    towards an unnormalised target (``data=target``)."""
    return -log_weight


_BY_KIND = {
    "image": LikelihoodMetric("bpd", bits_per_dim, False),
    "points": LikelihoodMetric("ppll", per_point_log_likelihood, True),
    "tabular": LikelihoodMetric("nll", negative_log_likelihood, False),
    "toy": LikelihoodMetric("nll", negative_log_likelihood, False),
    # a target density: the metric gets the log importance weights log p̃ - log q of samples
    "target": LikelihoodMetric("reverse_kl", reverse_kl, False),
}

DATA_KINDS: tuple[str, ...] = tuple(_BY_KIND)


def metric_for(kind: str) -> LikelihoodMetric:
    """The papers' likelihood metric for a data kind: image → bpd, points → PPLL,
    tabular/toy → NLL (nats)."""
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise ValueError(
            f"unknown data kind {kind!r}; expected one of {', '.join(DATA_KINDS)}"
        ) from None


def _is_exact(log_prob_fn: Callable[[Tensor], Tensor]) -> bool:
    """``exact`` of a model passed as ``model`` or ``model.log_prob`` (False when unknown)."""
    for owner in (log_prob_fn, getattr(log_prob_fn, "__self__", None)):
        flag = getattr(owner, "exact", None)
        if isinstance(flag, bool):
            return flag
    return False


def importance_weighted_log_prob(
    log_prob_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    num_samples: int,
    chunk_size: int | None = None,
    exact: bool | None = None,
) -> Tensor:
    """Importance-weighted log-likelihood bound ``log (1/k) Σ_i exp(ℓ_i)``, shape ``[batch]``.

    ``log_prob_fn(x)`` must return a fresh single-sample bound ``ℓ_i = log p(x, u_i) -
    log q(u_i | x)`` (``u_i ~ q``) on every call, as the ``log_prob`` of a flow with stochastic
    layers does. Since ``E[exp(ℓ)] = p(x)``, the average of ``k`` weights is an unbiased
    estimate of ``p(x)`` and its log is a lower bound whose expectation increases with ``k``
    and tends to ``log p(x)`` (Burda et al., 2016). ``k = 1`` is the ordinary bound.

    ``x`` is repeated ``chunk_size`` times per call (all ``k`` at once when None), so memory
    grows with ``chunk_size · batch``. For exact models (``exact`` True, or the model's own
    ``exact`` attribute when ``exact`` is None) the exact ``log_prob_fn(x)`` is returned.
    Gradients flow through; wrap the call in ``torch.no_grad()`` for evaluation.
    """
    _check_count("num_samples", num_samples)
    if exact is None:
        exact = _is_exact(log_prob_fn)
    if exact:
        return log_prob_fn(x)
    chunk = num_samples if chunk_size is None else chunk_size
    _check_count("chunk_size", chunk)
    batch = x.shape[0]
    pieces = []
    done = 0
    while done < num_samples:
        n = min(chunk, num_samples - done)
        repeated = x.unsqueeze(0).expand(n, *x.shape).reshape(n * batch, *x.shape[1:])
        pieces.append(log_prob_fn(repeated).reshape(n, batch))
        done += n
    log_weights = torch.cat(pieces, dim=0)
    return torch.logsumexp(log_weights, dim=0) - math.log(num_samples)
