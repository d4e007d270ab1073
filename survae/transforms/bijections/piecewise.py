"""Monotone piecewise-linear, piecewise-quadratic and cubic splines (Müller et al. 2018, Neural
Importance Sampling; Durkan et al. 2019, Cubic-Spline Flows), the official SurVAE library's
``linear``, ``quadratic`` and ``cubic`` spline transforms beside the rational-quadratic one.

Each maps ``[-B, B]`` onto itself (``B = tail_bound``) with ``K`` bins and is the identity
outside it (identity tails). Inputs have any shape ``S``, parameters ``S + (P,)``; each
function returns ``(outputs, log|d outputs / d inputs|)`` of shape ``S`` (with ``inverse=True``
the inverse map and its log-derivative). An all-zero parameter vector is the identity. Inside
the interval the computation runs on ``u = (x + B) / 2B ∈ [0, 1]``; since both ends scale by
the same ``2B``, derivatives are those of the unit-interval map.

* linear, ``P = K``: a piecewise-constant density (softmax bin masses, floored at
  ``min_bin_height``) over ``K`` equal bins; the CDF is piecewise linear.
* quadratic, ``P = 2K − 1``: ``K`` bin widths (softmax) and ``K − 1`` inner knot densities
  (``exp``); the density is piecewise linear, normalised, with density 1 at both ends so that
  it joins the identity tails continuously; the CDF is piecewise quadratic. With
  ``free_ends`` (``P = 2K + 1``, the official coupling's parameters) the two end densities
  are free too.
* cubic, ``P = 2K + 2``: ``K`` widths, ``K`` heights (softmax) and the two end derivatives
  (``3·sigmoid`` times the end bins' slopes); the inner derivatives follow Steffen's monotone
  rule, so every bin's cubic Hermite piece is increasing.
"""

from __future__ import annotations

import math

import torch

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
#: sigmoid(raw + this) · 3 = 1 at raw = 0: a zero cubic end derivative parameter gives slope 1
_CUBIC_END_OFFSET = -math.log(2.0)


def _unit_interval(
    inputs: torch.Tensor, tail_bound: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    B = float(tail_bound)
    inside = (inputs >= -B) & (inputs <= B)
    return inside, (inputs.clamp(-B, B) + B) / (2 * B), B


def _finish(
    inputs: torch.Tensor, inside: torch.Tensor, u_out: torch.Tensor, log_d: torch.Tensor, B: float
) -> tuple[torch.Tensor, torch.Tensor]:
    out = u_out.clamp(0.0, 1.0) * (2 * B) - B
    return torch.where(inside, out, inputs), torch.where(inside, log_d, torch.zeros_like(log_d))


def _sizes(raw: torch.Tensor, minimum: float) -> torch.Tensor:
    K = raw.shape[-1]
    return minimum + (1.0 - minimum * K) * torch.softmax(raw, dim=-1)


def _edges(sizes: torch.Tensor) -> torch.Tensor:
    """``K + 1`` cumulative positions from exactly 0 to exactly 1."""
    inner = torch.cumsum(sizes, dim=-1)[..., :-1]
    return torch.cat([torch.zeros_like(inner[..., :1]), inner, torch.ones_like(inner[..., :1])], -1)


def _bin(edges: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index ``k`` of the bin ``[edges_k, edges_{k+1})`` holding ``u`` (the last one for 1)."""
    return torch.searchsorted(edges[..., 1:-1].contiguous(), u.unsqueeze(-1), right=True)


def _at(t: torch.Tensor, idx: torch.Tensor, shift: int = 0) -> torch.Tensor:
    return t.gather(-1, idx + shift).squeeze(-1)


def linear_spline(
    inputs: torch.Tensor,
    unnormalized_pdf: torch.Tensor,
    inverse: bool = False,
    tail_bound: float = 3.0,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Piecewise-linear CDF of ``K`` equal bins (see the module docstring)."""
    inside, u, B = _unit_interval(inputs, tail_bound)
    K = unnormalized_pdf.shape[-1]
    mass = _sizes(unnormalized_pdf, min_bin_height)
    cdf = _edges(mass)
    if inverse:
        idx = _bin(cdf, u)
        m = _at(mass, idx)
        out = (idx.squeeze(-1) + (u - _at(cdf, idx)) / m) / K
        log_d = -torch.log(m * K)
    else:
        idx = (u * K).floor().long().clamp(0, K - 1).unsqueeze(-1)
        m = _at(mass, idx)
        out = _at(cdf, idx) + (u * K - idx.squeeze(-1)) * m
        log_d = torch.log(m * K)
    return _finish(inputs, inside, out, log_d, B)


def quadratic_spline(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    inverse: bool = False,
    tail_bound: float = 3.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Piecewise-quadratic CDF: ``K`` widths and ``K − 1`` inner knot densities (the end
    densities follow so that both are 1), or ``K + 1`` knot densities, ends included (the
    official coupling's ``2K + 1`` parameters; the density then jumps at ``±B``)."""
    inside, u, B = _unit_interval(inputs, tail_bound)
    K = unnormalized_widths.shape[-1]
    if unnormalized_heights.shape[-1] not in (K - 1, K + 1):
        raise ValueError(
            f"quadratic_spline: expected K - 1 = {K - 1} inner or K + 1 = {K + 1} knot heights "
            f"for K = {K} widths, got {unnormalized_heights.shape[-1]}"
        )
    w = _sizes(unnormalized_widths, min_bin_width)
    e = torch.exp(unnormalized_heights)
    if e.shape[-1] == K + 1:
        dens = e
    else:
        # end densities c with c / area = 1: c = R / (1 − (w_0 + w_{K−1}) / 2), R the inner area
        if K > 1:
            inner = 0.5 * (e[..., :1] * w[..., :1] + e[..., -1:] * w[..., -1:])
            mid = 0.5 * (e[..., :-1] + e[..., 1:]) * w[..., 1:-1]
            c = (inner + mid.sum(-1, keepdim=True)) / (1.0 - 0.5 * (w[..., :1] + w[..., -1:]))
        else:
            c = torch.ones_like(w)
        dens = torch.cat([c, e, c], dim=-1)
    dens = dens / (0.5 * (dens[..., :-1] + dens[..., 1:]) * w).sum(-1, keepdim=True)
    dens = min_bin_height + (1.0 - min_bin_height) * dens  # still normalised (ends stay 1)
    areas = 0.5 * (dens[..., :-1] + dens[..., 1:]) * w
    xs, cdf = _edges(w), _edges(areas / areas.sum(-1, keepdim=True))
    idx = _bin(cdf if inverse else xs, u)
    x_k, w_k, c_k = _at(xs, idx), _at(w, idx), _at(cdf, idx)
    d_k, d_k1 = _at(dens, idx), _at(dens, idx, 1)
    if inverse:
        # w_k (d_k α + (d_k1 − d_k) α² / 2) = u − c_k, solved without cancellation
        a, b, r = 0.5 * (d_k1 - d_k) * w_k, d_k * w_k, (u - c_k).clamp(min=0.0)
        alpha = (2 * r / (b + torch.sqrt((b * b + 4 * a * r).clamp(min=0.0)))).clamp(0.0, 1.0)
        out = x_k + alpha * w_k
        log_d = -torch.log(d_k + alpha * (d_k1 - d_k))
    else:
        alpha = ((u - x_k) / w_k).clamp(0.0, 1.0)
        out = c_k + w_k * alpha * (d_k + 0.5 * alpha * (d_k1 - d_k))
        log_d = torch.log(d_k + alpha * (d_k1 - d_k))
    return _finish(inputs, inside, out, log_d, B)


def _cubic_coefficients(
    raw_widths: torch.Tensor,
    raw_heights: torch.Tensor,
    raw_left: torch.Tensor,
    raw_right: torch.Tensor,
    min_bin_width: float,
    min_bin_height: float,
) -> tuple[torch.Tensor, ...]:
    """Knots and per-bin coefficients of ``y = a t³ + b t² + c t + d`` (``t = u − x_k``)."""
    w, h = _sizes(raw_widths, min_bin_width), _sizes(raw_heights, min_bin_height)
    xs, ys = _edges(w), _edges(h)
    s = h / w
    # Steffen (1990): inner derivatives that keep every Hermite piece monotone
    m1 = torch.minimum(s[..., :-1], s[..., 1:])
    m2 = 0.5 * (w[..., 1:] * s[..., :-1] + w[..., :-1] * s[..., 1:]) / (w[..., :-1] + w[..., 1:])
    inner = 2.0 * torch.minimum(m1, m2)
    left = 3.0 * torch.sigmoid(raw_left + _CUBIC_END_OFFSET) * s[..., :1]
    right = 3.0 * torch.sigmoid(raw_right + _CUBIC_END_OFFSET) * s[..., -1:]
    der = torch.cat([left, inner, right], dim=-1)
    a = (der[..., :-1] + der[..., 1:] - 2 * s) / w**2
    b = (3 * s - 2 * der[..., :-1] - der[..., 1:]) / w
    return xs, ys, w, a, b, der[..., :-1], ys[..., :-1]


def cubic_spline(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivative_left: torch.Tensor,
    unnormalized_derivative_right: torch.Tensor,
    inverse: bool = False,
    tail_bound: float = 3.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    num_newton_steps: int = 60,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone cubic Hermite spline; the end-derivative parameters have shape ``S + (1,)``.

    The inverse solves the bin's cubic by safeguarded Newton steps inside the bin (a Newton
    step leaving the shrinking bracket is replaced by bisection), run without gradient, then
    one Newton step with gradient, which gives the implicit-function gradient.
    """
    inside, u, B = _unit_interval(inputs, tail_bound)
    xs, ys, w, a, b, c, d = _cubic_coefficients(
        unnormalized_widths,
        unnormalized_heights,
        unnormalized_derivative_left,
        unnormalized_derivative_right,
        min_bin_width,
        min_bin_height,
    )
    idx = _bin(ys if inverse else xs, u)
    a_k, b_k, c_k, d_k, x_k, w_k = (_at(t, idx) for t in (a, b, c, d, xs, w))

    def poly(t: torch.Tensor) -> torch.Tensor:
        return ((a_k * t + b_k) * t + c_k) * t + d_k

    def slope(t: torch.Tensor) -> torch.Tensor:
        return (3 * a_k * t + 2 * b_k) * t + c_k

    if not inverse:
        t = (u - x_k).clamp(min=0.0)
        return _finish(inputs, inside, poly(t), torch.log(slope(t)), B)
    with torch.no_grad():
        lo, hi = torch.zeros_like(u), w_k.detach().clone()
        h_k = _at(ys, idx, 1) - d_k
        t = ((u - d_k) / h_k).clamp(0.0, 1.0) * w_k
        for _ in range(num_newton_steps):
            above = poly(t) > u
            hi, lo = torch.where(above, t, hi), torch.where(above, lo, t)
            step = t - (poly(t) - u) / slope(t)
            t = torch.where((step > lo) & (step < hi), step, 0.5 * (lo + hi))
    t = (t - (poly(t) - u) / slope(t)).clamp(min=0.0)  # carries the implicit gradient
    t = torch.minimum(t, w_k)
    return _finish(inputs, inside, x_k + t, -torch.log(slope(t)), B)
