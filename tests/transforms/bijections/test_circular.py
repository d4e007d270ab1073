"""Circular rational-quadratic splines (coupling and autoregressive) on angles in [-π, π)."""

import math

import pytest
import torch

from survae import registry
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.bijections.circular import (
    CircularRQSplineAutoregressive,
    CircularRQSplineCoupling,
    circular_rq_spline,
    wrap,
)

MLP = {"name": "mlp", "hidden": [16], "zero_init_output": False}


def _angles(*shape):
    return (torch.rand(*shape, dtype=torch.float64) * 2 - 1) * math.pi


def _random(layer, std=0.3):
    torch.manual_seed(1)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=std)
    return layer.double()


def test_registered():
    assert registry.get("layer", "circular_rq_spline_coupling") is CircularRQSplineCoupling
    assert registry.get("layer", "circular_rq_spline_autoregressive") is (
        CircularRQSplineAutoregressive
    )


def test_the_map_is_a_circle_diffeomorphism():
    """Ends fixed before the rotation, equal end derivatives, increasing, onto [-π, π)."""
    torch.manual_seed(0)
    K = 5
    params = torch.randn(3 * K + 1, dtype=torch.float64).expand(2001, -1)
    no_rotation = params.clone()
    no_rotation[:, -1] = 0.0
    x = torch.linspace(-math.pi, math.pi, 2001, dtype=torch.float64)
    y, log_d = circular_rq_spline(x, no_rotation)
    assert abs(y[0] + math.pi) < 1e-9  # -π -> -π, and π -> π ≡ -π on the circle
    assert abs(math.cos(y[-1].item()) + 1.0) < 1e-12
    assert (y[1:-1].diff() > 0).all()
    torch.testing.assert_close(log_d[0], log_d[-1])  # smooth across ±π
    z, _ = circular_rq_spline(x, params)
    assert (z >= -math.pi).all() and (z < math.pi).all()
    back, log_back = circular_rq_spline(z, params, inverse=True)
    torch.testing.assert_close(wrap(back[1:-1]), x[1:-1], atol=1e-9, rtol=0)
    torch.testing.assert_close(log_back, -log_d, atol=1e-9, rtol=1e-9)
    zero, zero_log = circular_rq_spline(x[1:-1], torch.zeros(1999, 3 * K + 1, dtype=torch.float64))
    torch.testing.assert_close(zero, x[1:-1])  # all-zero parameters: the identity
    assert zero_log.abs().max() < 1e-9


@pytest.mark.parametrize("kind", ["coupling", "autoregressive"])
def test_round_trip_logdet_and_shapes(kind):
    if kind == "coupling":
        layer = _random(CircularRQSplineCoupling(3, MLP, num_bins=4, split_sizes=(1, 2)))
    else:
        layer = _random(CircularRQSplineAutoregressive(3, (12,), num_bins=4))
    x = _angles(6, 3)
    z, ldj = assert_invertible(layer, x, atol=1e-8, rtol=1e-8)
    assert z.shape == x.shape and ldj.shape == (6,)
    assert (z >= -math.pi).all() and (z < math.pi).all()
    assert (z - x).abs().max() > 1e-2
    assert_logdet_matches_autograd(layer, x, atol=1e-8, rtol=1e-8)


def test_coupling_network_reads_cos_and_sin_so_the_seam_is_invisible():
    layer = _random(CircularRQSplineCoupling(2, MLP, num_bins=4))
    y = torch.linspace(-3.0, 3.0, 9, dtype=torch.float64)
    a = torch.stack([torch.full_like(y, math.pi - 1e-9), y], 1)
    b = torch.stack([torch.full_like(y, -math.pi + 1e-9), y], 1)
    za, la = layer(a)
    zb, lb = layer(b)
    torch.testing.assert_close(za[:, 1], zb[:, 1], atol=1e-6, rtol=0)
    torch.testing.assert_close(la, lb, atol=1e-6, rtol=0)


def test_conditional_coupling_uses_the_context():
    layer = _random(CircularRQSplineCoupling(2, MLP, num_bins=4, context_channels=3))
    x, c = _angles(4, 2), torch.randn(4, 3, dtype=torch.float64)
    z, _ = assert_invertible(layer, x, c, atol=1e-8, rtol=1e-8)
    assert not torch.allclose(z, layer(x, c + 1)[0])
    with pytest.raises(ValueError, match="context"):
        layer(x)
