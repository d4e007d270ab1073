"""Mixture-CDF bijections (the official SurVAE library's Gaussian, logistic and censored
logistic mixture transforms): each transformed element is pushed through the CDF of a
univariate mixture whose ``K`` weights, means and log-scales come from a network,
``3K`` parameters per element, laid out ``[weight logits, means, log-scales]``.

* Gaussian mixture: ``F(x) = Σ π_k Φ((x − μ_k) / σ_k)``, ℝ → (0, 1);
* logistic mixture: ``F(x) = Σ π_k σ((x − μ_k) / s_k)``, ℝ → (0, 1) (log-scales ≥ −7);
* censored logistic mixture with ``N = num_bins`` bins, [0, 1] → [0, 1]: the logistics live
  on ``e(x) = N/(N − 1)·(2x − 1)`` and the mass each leaves outside ``e(0)`` and ``e(1)`` is
  spread uniformly over the first and the last bin, so that ``F(0) = 0`` and ``F(1) = 1``
  (PixelCNN++'s discretised logistic evaluation points). Outside [0, 1] the density is 0:
  the contribution is ``−inf`` there.

The likelihood contribution of an element is ``log F'(x)``, the mixture's log-density. Each
output lies in (0, 1), so these layers end a flow with a uniform base or are followed by a
logit. The inverse is bisection with a fixed number of iterations (no host synchronisation) in
a bracket that holds the root; its gradient is that of one Newton step from the root, i.e.
the implicit-function gradient of the inverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

MIN_LOG_SCALE = -7.0


def split_mixture_params(
    params: torch.Tensor, num_mixtures: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log_weights, means, log_scales)`` from ``[..., 3K]`` (weights log-normalised)."""
    if params.shape[-1] != 3 * num_mixtures:
        raise ValueError(
            f"mixture CDF: expected 3·K = {3 * num_mixtures} parameters, got {params.shape[-1]}"
        )
    logits, means, log_scales = params.split(num_mixtures, dim=-1)
    return F.log_softmax(logits, dim=-1), means, log_scales


def _solve(
    cdf_and_log_pdf: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    y: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    num_iters: int,
) -> torch.Tensor:
    """The root of ``F(x) = y`` in ``[lo, hi]``: bisection, then a Newton step with gradient."""
    with torch.no_grad():
        lo, hi = lo.detach(), hi.detach()
        for _ in range(num_iters):
            mid = 0.5 * (lo + hi)
            below = cdf_and_log_pdf(mid)[0] < y
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        x = 0.5 * (lo + hi)
    # the value is the bisection's; the gradient that of a Newton step (where the density is
    # tiny a Newton step's value would amplify rounding error in F)
    cdf, log_pdf = cdf_and_log_pdf(x)
    step = -(cdf - y) * torch.exp(-log_pdf)
    return x + (step - step.detach())


def _finite(y: torch.Tensor) -> torch.Tensor:
    """``y`` inside (0, 1) so that quantile functions stay finite."""
    info = torch.finfo(y.dtype)
    return y.clamp(info.tiny, 1.0 - info.eps)


def gaussian_mixture_cdf(
    inputs: torch.Tensor, params: torch.Tensor, inverse: bool = False, num_iters: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian-mixture CDF of ``inputs`` (shape ``S``; ``params`` ``S + (3K,)``) and its
    log-derivative; ``inverse=True``: the quantile function and its log-derivative."""
    log_w, means, log_scales = split_mixture_params(params, params.shape[-1] // 3)
    dist = torch.distributions.Normal(means, torch.exp(log_scales))

    def cdf_and_log_pdf(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.unsqueeze(-1)
        # log Φ is accurate far in the left tail (Φ itself loses it below about −8)
        log_cdf = torch.special.log_ndtr((x - means) * torch.exp(-log_scales))
        log_pdf = torch.logsumexp(log_w + dist.log_prob(x), -1)
        return torch.logsumexp(log_w + log_cdf, -1).exp(), log_pdf

    if not inverse:
        return cdf_and_log_pdf(inputs)
    ends = means + dist.scale * torch.special.ndtri(_finite(inputs)).unsqueeze(-1)
    x = _solve(cdf_and_log_pdf, inputs, ends.amin(-1), ends.amax(-1), num_iters)
    return x, -cdf_and_log_pdf(x)[1]


def _logistic_terms(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log σ(u)``, ``log σ(−u)`` and the component log-densities at ``x`` (``S + (K,)``)."""
    u = (x.unsqueeze(-1) - means) * torch.exp(-log_scales)
    log_cdf, log_sf = F.logsigmoid(u), F.logsigmoid(-u)
    return log_cdf, log_sf, log_cdf + log_sf - log_scales


def logistic_mixture_cdf(
    inputs: torch.Tensor, params: torch.Tensor, inverse: bool = False, num_iters: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic-mixture CDF and its log-derivative (``inverse=True``: the quantile function)."""
    log_w, means, log_scales = split_mixture_params(params, params.shape[-1] // 3)
    log_scales = log_scales.clamp(min=MIN_LOG_SCALE)

    def cdf_and_log_pdf(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_cdf, _, log_pdf = _logistic_terms(x, means, log_scales)
        return torch.logsumexp(log_w + log_cdf, -1).exp(), torch.logsumexp(log_w + log_pdf, -1)

    if not inverse:
        return cdf_and_log_pdf(inputs)
    y = _finite(inputs)
    ends = means + torch.exp(log_scales) * (torch.log(y) - torch.log1p(-y)).unsqueeze(-1)
    x = _solve(cdf_and_log_pdf, inputs, ends.amin(-1), ends.amax(-1), num_iters)
    return x, -cdf_and_log_pdf(x)[1]


def censored_logistic_mixture_cdf(
    inputs: torch.Tensor,
    params: torch.Tensor,
    num_bins: int = 256,
    inverse: bool = False,
    num_iters: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Censored logistic-mixture CDF on [0, 1] (see the module docstring) and its
    log-derivative, ``−inf`` outside [0, 1]; ``inverse=True``: its inverse on [0, 1]."""
    N = int(num_bins)
    log_w, means, log_scales = split_mixture_params(params, params.shape[-1] // 3)
    log_scales = log_scales.clamp(min=MIN_LOG_SCALE)
    edge = N / (N - 1)
    lo_terms = _logistic_terms(torch.full_like(inputs, -edge), means, log_scales)
    hi_terms = _logistic_terms(torch.full_like(inputs, edge), means, log_scales)
    log_mass_lo = torch.logsumexp(log_w + lo_terms[0], -1)  # the mass left of e(0)
    log_mass_hi = torch.logsumexp(log_w + hi_terms[1], -1)  # the mass right of e(1)
    mass_lo, mass_hi = log_mass_lo.exp(), log_mass_hi.exp()
    log_n, log_stretch = math.log(N), math.log(2 * edge)

    def cdf_and_log_pdf(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, last = x < 1.0 / N, x > (N - 1.0) / N
        log_cdf, _, log_pdf = _logistic_terms(edge * (2 * x - 1), means, log_scales)
        cdf = torch.logsumexp(log_w + log_cdf, -1).exp()
        cdf = cdf - torch.where(first, (1 - N * x) * mass_lo, 0.0)
        cdf = cdf + torch.where(last, (N * x - (N - 1)) * mass_hi, 0.0)
        parts = [torch.logsumexp(log_w + log_pdf, -1) + log_stretch]
        parts.append(torch.where(first, log_n + log_mass_lo, -math.inf))
        parts.append(torch.where(last, log_n + log_mass_hi, -math.inf))
        return cdf, torch.logsumexp(torch.stack(parts, -1), -1)

    inside = (inputs >= 0) & (inputs <= 1)
    v = inputs.clamp(0.0, 1.0)
    if inverse:
        x = _solve(cdf_and_log_pdf, v, torch.zeros_like(v), torch.ones_like(v), num_iters)
        out, log_d = x.clamp(0.0, 1.0), -cdf_and_log_pdf(x)[1]
    else:
        out, log_d = cdf_and_log_pdf(v)
        out = out.clamp(0.0, 1.0)
    return out, torch.where(inside, log_d, -math.inf)
