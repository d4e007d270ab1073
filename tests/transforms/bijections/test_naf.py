"""Neural autoregressive transforms: NAF's deep sigmoidal flows (DSF) and UMNN, autoregressive
(MADE) and coupling, with their bisection inverses."""

import math

import pytest
import torch

from survae import Flow, registry
from survae.distributions import StandardNormal
from survae.testing import assert_invertible, assert_logdet_matches_autograd, grid_integral
from survae.transforms.bijections.dsf import DSFAutoregressive, DSFCoupling, sigmoidal_layer
from survae.transforms.bijections.monotone import InversionError, invert_increasing
from survae.transforms.bijections.umnn import UMNNAutoregressive, UMNNCoupling

MLP_RANDOM = {"name": "mlp", "hidden": [16], "zero_init_output": False}


def _randomize(module: torch.nn.Module, std: float = 0.3, seed: int = 1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def _layers(features=4, context=0):
    """One small layer of each of the four kinds (random weights, float64)."""
    made = {"hidden": (12,), "context_features": context}
    cpl = {"context_channels": context}
    layers = {
        "dsf_autoregressive": DSFAutoregressive(features, num_units=4, depth=2, **made),
        "dsf_coupling": DSFCoupling(features, MLP_RANDOM, num_units=4, depth=2, **cpl),
        "umnn_autoregressive": UMNNAutoregressive(
            features, embedding=3, integrand_hidden=(8,), **made
        ),
        "umnn_coupling": UMNNCoupling(
            features, MLP_RANDOM, embedding=3, integrand_hidden=(8,), **cpl
        ),
    }
    return {k: _randomize(v).double() for k, v in layers.items()}


KINDS = ["dsf_autoregressive", "dsf_coupling", "umnn_autoregressive", "umnn_coupling"]


def test_registered():
    for name, cls in zip(KINDS, (DSFAutoregressive, DSFCoupling, UMNNAutoregressive, UMNNCoupling)):
        assert registry.get("layer", name) is cls


# ------------------------------------------------------------------ the scalar maps
def test_sigmoidal_layer_is_increasing_onto_the_line_with_its_log_derivative():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(3, 12, generator=g, dtype=torch.float64) * 2
    x = torch.linspace(-40, 40, 4001, dtype=torch.float64).view(1, -1).expand(3, -1)
    params = raw.unsqueeze(1).expand(-1, x.shape[1], -1)
    y, log_d = sigmoidal_layer(x, params)
    assert torch.isfinite(y).all() and torch.isfinite(log_d).all()
    assert (y.diff(dim=1) > 0).all()
    assert (y[:, 0] < -5).all() and (y[:, -1] > 5).all()  # linear tails: onto the line
    xg = x[:, ::50].clone().requires_grad_()
    yg, ldg = sigmoidal_layer(xg, params[:, ::50])
    (grad,) = torch.autograd.grad(yg.sum(), xg)
    torch.testing.assert_close(ldg, grad.log(), atol=1e-10, rtol=1e-10)


def test_bisection_inverts_an_increasing_map_and_names_a_bounded_one():
    y = torch.tensor([-1e4, -3.0, 0.0, 0.5, 7.0, 1e5], dtype=torch.float64)
    x = invert_increasing(lambda v: v**3 + v, y)
    torch.testing.assert_close(x**3 + x, y, atol=1e-6, rtol=1e-10)
    with pytest.raises(InversionError, match="toy map"):
        invert_increasing(torch.tanh, torch.tensor([2.0]), owner="toy map")


# ------------------------------------------------------------------ layers
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_logdet_and_shapes(kind):
    layer = _layers()[kind]
    x = torch.randn(5, 4, dtype=torch.float64) * 2
    z, ldj = assert_invertible(layer, x, atol=1e-8, rtol=1e-8)
    assert z.shape == x.shape and ldj.shape == (5,)
    assert (z - x).abs().max() > 1e-2
    # UMNN: the quadrature's derivative equals the integrand to ~1e-7 at 32 points
    assert_logdet_matches_autograd(layer, x, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_layers_use_the_context(kind):
    layer = _layers(features=4, context=2)[kind]
    x = torch.randn(4, 4, dtype=torch.float64)
    c = torch.randn(4, 2, dtype=torch.float64)
    z, _ = assert_invertible(layer, x, c, atol=1e-8, rtol=1e-8)
    assert_logdet_matches_autograd(layer, x, c, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(z, layer(x, c + 1.0)[0])
    with pytest.raises(ValueError, match="context"):
        layer(x)


@pytest.mark.parametrize("kind", ["dsf_autoregressive", "umnn_autoregressive"])
def test_autoregressive_jacobian_is_triangular(kind):
    layer = _layers()[kind]
    x = torch.randn(1, 4, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x).view(4, 4)
    assert torch.all(J.triu(1) == 0)
    assert (J.diagonal() > 0).all()


def test_coupling_checkerboard_keeps_the_conditioning_positions():
    net = torch.nn.Conv2d(1, 3 * 4, 3, padding=1).double()
    layer = DSFCoupling(1, net, num_units=4, mask="checkerboard").double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    z, _ = assert_invertible(layer, x, atol=1e-8, rtol=1e-8)
    assert torch.equal(z[:, :, 0, 0], x[:, :, 0, 0])
    assert_logdet_matches_autograd(layer, x)


@pytest.mark.parametrize("kind", KINDS)
def test_inverse_carries_the_gradient_of_the_exact_inverse(kind):
    """``F(F⁻¹(z; θ); θ) = z`` for every θ, so its gradient in θ is zero: the bisection
    inverse's implicit gradient (used when training by reverse KL) is that of the exact one."""
    layer = _layers()[kind]
    z = torch.randn(3, 4, dtype=torch.float64)
    x, _ = layer.inverse_with_ldj(z)
    weights = torch.randn_like(z)
    round_trip = (layer(x)[0] * weights).sum()
    params = [p for p in layer.parameters()]
    grads = torch.autograd.grad(round_trip, params, allow_unused=True, retain_graph=True)
    largest = max(g.abs().max().item() for g in grads if g is not None)
    assert largest < 1e-6, largest
    direct = torch.autograd.grad((x * weights).sum(), params, allow_unused=True)
    assert max(g.abs().max().item() for g in direct if g is not None) > 1e-3  # x depends on θ


@pytest.mark.parametrize("kind", KINDS)
def test_two_d_flow_density_integrates_to_one(kind):
    torch.manual_seed(0)
    layers = [_layers(features=2)[kind]]
    if kind.endswith("coupling"):
        other = _layers(features=2)[kind]
        other.reverse_mask = True
        layers.append(other)
    flow = Flow(StandardNormal(2), layers).double()
    total = grid_integral(flow.log_prob, -30.0, 30.0, n=600)  # heavy-ish tails: a wide box
    assert math.isclose(total, 1.0, abs_tol=2e-3), total
    flow = flow.float()
    x, log_p = flow.sample_with_log_prob(32)
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-4, rtol=1e-4)


def test_umnn_quadrature_error_falls_with_more_points():
    layer = _layers()["umnn_coupling"]
    x = torch.randn(6, 4, dtype=torch.float64) * 3
    z_ref, _ = layer(x)
    errors = []
    for q in (4, 8):
        coarse = UMNNCoupling(4, MLP_RANDOM, embedding=3, integrand_hidden=(8,), quadrature=q)
        coarse = coarse.double()
        coarse.load_state_dict(layer.state_dict())
        errors.append((coarse(x)[0] - z_ref).abs().max().item())
    assert errors[1] < errors[0] and errors[1] < 1e-3, errors


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="DSFAutoregressive: num_units"):
        DSFAutoregressive(3, hidden=(8,), num_units=0)
    with pytest.raises(ValueError, match="UMNNCoupling: embedding"):
        UMNNCoupling(4, MLP_RANDOM, embedding=0)
    with pytest.raises(ValueError, match="min_derivative"):
        UMNNAutoregressive(3, hidden=(8,), min_derivative=0.0)
