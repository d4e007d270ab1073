"""Checks that a layer's mathematics is right, for tests of built-in and user layers.

* :func:`assert_invertible`: ``inverse(forward(x)) == x`` and ``ldj`` of shape ``[batch]``;
* :func:`autograd_logdet`: ``log|det J|`` of ``forward`` per example from the autograd Jacobian
  (and a check that examples do not leak into each other);
* :func:`assert_logdet_matches_autograd`: the layer's ``ldj`` against that value;
* :func:`grid_integral`: the integral of a 2-D density over a box, by the midpoint rule.

The checks on a layer, and on the density of a 2-D model built from it:

>>> import torch
>>> from survae import build_model
>>> from survae.transforms import Scale
>>> layer = Scale(2.0)
>>> x = torch.randn(4, 2, dtype=torch.float64)
>>> z, ldj = assert_invertible(layer, x)
>>> assert_logdet_matches_autograd(layer, x)
>>> ldj  # 2 · log 2 per example
tensor([1.3863, 1.3863, 1.3863, 1.3863], dtype=torch.float64)
>>> model = build_model({"layers": [{"name": "scale", "scale": 2.0}],
...                      "base": {"name": "standard_normal"}}, data_shape=[2]).double()
>>> round(grid_integral(model.log_prob, -4.0, 4.0), 4)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from survae.transforms.base import Bijection, Transform


def _ctx_rows(context: torch.Tensor | None, i: slice) -> torch.Tensor | None:
    return None if context is None else context[i]


def assert_invertible(
    transform: Transform,
    x: torch.Tensor,
    context: torch.Tensor | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check round trip, ``ldj`` shape, and (for bijections) the inverse log-determinant.

    Returns ``(z, ldj)`` from the forward pass.
    """
    z, ldj = transform(x, context)
    assert ldj.shape == (x.shape[0],), f"ldj shape {tuple(ldj.shape)} != ({x.shape[0]},)"
    assert torch.isfinite(ldj).all(), "ldj has non-finite values"
    x_rec = transform.inverse(z, context)
    assert x_rec.shape == x.shape, f"inverse shape {tuple(x_rec.shape)} != {tuple(x.shape)}"
    torch.testing.assert_close(x_rec, x, atol=atol, rtol=rtol)
    if isinstance(transform, Bijection):
        x_rec2, inv_ldj = transform.inverse_with_ldj(z, context)
        torch.testing.assert_close(x_rec2, x, atol=atol, rtol=rtol)
        torch.testing.assert_close(inv_ldj, -ldj, atol=atol * 10, rtol=rtol * 10)
    return z, ldj


def autograd_logdet(
    transform: Transform, x: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """``log|det dz/dx|`` per example from the full autograd Jacobian of ``forward``.

    Also asserts that the Jacobian is block-diagonal over the batch (no example influences
    another). Meant for small inputs: the Jacobian has ``(batch·dim)²`` entries.
    """
    B = x.shape[0]

    def f(v: torch.Tensor) -> torch.Tensor:
        return transform(v, context)[0].reshape(B, -1)

    J = torch.autograd.functional.jacobian(f, x).reshape(B, -1, B, math.prod(x.shape[1:]))
    logdets = []
    for i in range(B):
        off = torch.cat([J[i, :, :i], J[i, :, i + 1 :]], dim=1)
        assert off.abs().max() < 1e-6 if off.numel() else True, (
            "Jacobian couples different batch examples"
        )
        block = J[i, :, i]
        assert block.shape[0] == block.shape[1], (
            f"forward is not dimension-preserving: {block.shape[1]} -> {block.shape[0]}"
        )
        logdets.append(torch.linalg.slogdet(block)[1])
    return torch.stack(logdets)


def assert_logdet_matches_autograd(
    transform: Transform,
    x: torch.Tensor,
    context: torch.Tensor | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> None:
    """The layer's ``ldj`` equals ``log|det J|`` of the autograd Jacobian (use float64)."""
    _, ldj = transform(x, context)
    torch.testing.assert_close(ldj, autograd_logdet(transform, x, context), atol=atol, rtol=rtol)


def grid_integral(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    low: float,
    high: float,
    n: int = 400,
    batch: int = 20_000,
) -> float:
    """∫ exp(log_prob) over the square ``[low, high]²`` by the midpoint rule on an n×n grid."""
    h = (high - low) / n
    centers = low + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(centers, centers, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    total = 0.0
    with torch.no_grad():
        for chunk in pts.split(batch):
            total += log_prob(chunk).exp().sum().item()
    return total * h * h
