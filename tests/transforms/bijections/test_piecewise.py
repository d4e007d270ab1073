"""Linear, quadratic and cubic splines: the elementwise maps and their coupling and
autoregressive layers."""

import math

import pytest
import torch

from survae import Flow, registry
from survae.distributions import StandardNormal
from survae.testing import assert_invertible, assert_logdet_matches_autograd, grid_integral
from survae.transforms import (
    CubicSplineAutoregressive,
    CubicSplineCoupling,
    LinearSplineAutoregressive,
    LinearSplineCoupling,
    QuadraticSplineAutoregressive,
    QuadraticSplineCoupling,
)
from survae.transforms.bijections.piecewise import cubic_spline, linear_spline, quadratic_spline

K = 5
MLP_RANDOM = {"name": "mlp", "hidden": [16], "zero_init_output": False}
COUPLINGS = {
    "linear": LinearSplineCoupling,
    "quadratic": QuadraticSplineCoupling,
    "cubic": CubicSplineCoupling,
}
AUTOREGRESSIVE = {
    "linear": LinearSplineAutoregressive,
    "quadratic": QuadraticSplineAutoregressive,
    "cubic": CubicSplineAutoregressive,
}
NUM_PARAMS = {"linear": K, "quadratic": 2 * K - 1, "cubic": 2 * K + 2}


def _spline(kind, x, p, inverse=False, tail_bound=3.0):
    if kind == "linear":
        return linear_spline(x, p, inverse, tail_bound)
    if kind == "quadratic":
        return quadratic_spline(x, p[..., :K], p[..., K:], inverse, tail_bound)
    w, h, le, ri = p[..., :K], p[..., K : 2 * K], p[..., 2 * K : 2 * K + 1], p[..., 2 * K + 1 :]
    return cubic_spline(x, w, h, le, ri, inverse, tail_bound)


def _params(shape, kind, scale=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, NUM_PARAMS[kind], generator=g, dtype=torch.float64) * scale


def _randomize(module, std=0.3):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def test_registered():
    for kind in COUPLINGS:
        assert registry.get("layer", f"{kind}_spline_coupling") is COUPLINGS[kind]
        assert registry.get("layer", f"{kind}_spline_autoregressive") is AUTOREGRESSIVE[kind]


@pytest.mark.parametrize("kind", sorted(COUPLINGS))
def test_map_round_trip_derivative_and_tails(kind):
    # off the linear spline's knots (its derivative jumps there)
    x = torch.linspace(-4, 4, 801, dtype=torch.float64) + 1e-3
    x = x.view(1, -1).expand(3, -1).contiguous()
    p = _params((3, 1), kind).expand(3, x.shape[1], -1)  # one spline per row
    y, ld = _spline(kind, x, p)
    x_rec, ld_inv = _spline(kind, y, p, inverse=True)
    torch.testing.assert_close(x_rec, x, atol=1e-9, rtol=0)
    torch.testing.assert_close(ld_inv, -ld, atol=1e-8, rtol=0)
    outside = x.abs() > 3
    assert torch.equal(y[outside], x[outside]) and torch.all(ld[outside] == 0)
    inside = x.abs() <= 3
    assert torch.all(y[inside].abs() <= 3 + 1e-12)
    assert torch.all(y[:, 1:] >= y[:, :-1])  # monotone
    # the log-derivative is the derivative (away from the knots of the linear spline's kinks)
    xs = (torch.rand(3, 60, dtype=torch.float64) * 5.8 - 2.9).requires_grad_()
    p = _params(xs.shape, kind, seed=4)
    y, ld = _spline(kind, xs, p)
    (grad,) = torch.autograd.grad(y.sum(), xs)
    torch.testing.assert_close(ld, grad.log(), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("kind", sorted(COUPLINGS))
def test_zero_parameters_are_the_identity(kind):
    x = torch.linspace(-3, 3, 101, dtype=torch.float64).view(1, -1)
    y, ld = _spline(kind, x, torch.zeros(*x.shape, NUM_PARAMS[kind], dtype=torch.float64))
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ld, torch.zeros_like(ld), atol=1e-12, rtol=0)


def test_quadratic_density_meets_the_tails_and_cubic_inverse_gradient():
    x = torch.tensor([[-3.0 + 1e-9, 3.0 - 1e-9]], dtype=torch.float64)
    _, ld = _spline("quadratic", x, _params(x.shape, "quadratic", scale=2.0))
    torch.testing.assert_close(ld, torch.zeros_like(ld), atol=1e-6, rtol=0)
    # the inverse's gradient in the parameters is the implicit-function one
    p = _params((2, 7), "cubic", seed=2).requires_grad_()
    z = torch.rand(2, 7, dtype=torch.float64) * 5 - 2.5
    x, _ = _spline("cubic", z, p, inverse=True)
    (g_inv,) = torch.autograd.grad(x.sum(), p)
    xd = x.detach().requires_grad_()
    y, _ = _spline("cubic", xd, p)
    gx, gp = torch.autograd.grad(y.sum(), (xd, p))  # dx/dθ = −(∂y/∂θ)/(∂y/∂x)
    torch.testing.assert_close(g_inv, -gp / gx.unsqueeze(-1), atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("kind", sorted(COUPLINGS))
@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_coupling_round_trip_and_logdet(kind, mask):
    torch.manual_seed(0)
    layer = COUPLINGS[kind](4, MLP_RANDOM, num_bins=K, tail_bound=2.0, mask=mask).double()
    _randomize(layer)
    x = torch.randn(5, 4, dtype=torch.float64) * 1.5
    z, ldj = assert_invertible(layer, x, atol=1e-8, rtol=1e-8)
    assert z.shape == x.shape and ldj.shape == (5,)
    assert_logdet_matches_autograd(layer, x)
    conv = COUPLINGS[kind](2, torch.nn.Conv2d(1, NUM_PARAMS[kind], 3, padding=1), num_bins=K)
    img = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    assert_invertible(_randomize(conv.double()), img, atol=1e-8, rtol=1e-8)
    assert_logdet_matches_autograd(conv, img)


@pytest.mark.parametrize("kind", sorted(COUPLINGS))
def test_autoregressive_round_trip_logdet_and_context(kind):
    layer = _randomize(AUTOREGRESSIVE[kind](3, hidden=(12,), num_bins=K, tail_bound=2.0)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    assert_invertible(layer, x, atol=1e-8, rtol=1e-8)
    assert_logdet_matches_autograd(layer, x)
    J = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x[:1]).reshape(3, 3)
    order = layer.made.order
    for i in range(3):  # output i depends on earlier inputs in the MADE's order only
        assert torch.all(J[i][order > order[i]] == 0)
    cond = AUTOREGRESSIVE[kind](2, hidden=(8,), num_bins=K, context_features=2)
    cond = _randomize(cond).double()
    c = torch.randn(4, 2, dtype=torch.float64)
    assert_invertible(cond, x[:, :2], c, atol=1e-8, rtol=1e-8)
    with pytest.raises(ValueError, match="needs a context"):
        cond(x[:, :2])


@pytest.mark.parametrize("kind", sorted(COUPLINGS))
def test_two_d_flow_density_integrates_to_one_and_samples(kind):
    torch.manual_seed(0)
    layers = [
        _randomize(COUPLINGS[kind](2, MLP_RANDOM, num_bins=K, tail_bound=2.5)),
        _randomize(AUTOREGRESSIVE[kind](2, hidden=(8,), num_bins=K, tail_bound=2.5)),
    ]
    flow = Flow(StandardNormal(2), layers).double()
    # the linear spline's density jumps at the knots: a finer grid for the midpoint rule
    total = grid_integral(flow.log_prob, -8.0, 8.0, n=1000 if kind == "linear" else 400)
    assert math.isclose(total, 1.0, abs_tol=3e-3), total
    flow = flow.float()
    x, log_p = flow.sample_with_log_prob(32)
    assert x.shape == (32, 2)
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-3, rtol=1e-3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_bins must be >= 1"):
        LinearSplineCoupling(2, MLP_RANDOM, num_bins=0)
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        QuadraticSplineAutoregressive(2, num_bins=1)
    with pytest.raises(ValueError, match="tail_bound"):
        CubicSplineCoupling(2, MLP_RANDOM, tail_bound=0.0)
    with pytest.raises(ValueError, match=r"quadratic_spline: expected K - 1 = 2 inner or K \+ 1"):
        quadratic_spline(torch.zeros(1), torch.zeros(1, 3), torch.zeros(1, 3))


def test_quadratic_free_ends():
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(2, 30, generator=g, dtype=torch.float64) * 5.8 - 2.9).requires_grad_()
    w = torch.randn(2, 30, K, generator=g, dtype=torch.float64)
    h = torch.randn(2, 30, K + 1, generator=g, dtype=torch.float64)
    y, ld = quadratic_spline(x, w, h)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(ld, grad.log(), atol=1e-9, rtol=1e-9)
    back, ld_inv = quadratic_spline(y.detach(), w, h, inverse=True)
    torch.testing.assert_close(back, x.detach(), atol=1e-9, rtol=0)
    torch.testing.assert_close(ld_inv, -ld.detach(), atol=1e-8, rtol=0)
    layer = _randomize(QuadraticSplineCoupling(2, MLP_RANDOM, num_bins=K, free_ends=True))
    assert layer.params_per_element == 2 * K + 1
    layer = layer.double()
    xs = torch.randn(4, 2, dtype=torch.float64)
    assert_invertible(layer, xs, atol=1e-8, rtol=1e-8)
    assert_logdet_matches_autograd(layer, xs)
    with pytest.raises(ValueError, match="free_ends applies to quadratic splines only"):
        CubicSplineCoupling(2, MLP_RANDOM, free_ends=True)
