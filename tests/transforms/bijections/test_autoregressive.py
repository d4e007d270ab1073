"""MAF and IAF: invertibility, log-determinants, triangular Jacobians, pass counts, context."""

import math

import pytest
import torch

from survae import Flow, registry
from survae.distributions import StandardNormal
from survae.errors import ShapeError
from survae.testing import assert_invertible, assert_logdet_matches_autograd, grid_integral
from survae.transforms.bijections.autoregressive import (
    InverseAutoregressive,
    MaskedAffineAutoregressive,
)

D = 5


def _randomize(layer: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    """Move the MADE away from its zero (identity) initialisation."""
    with torch.no_grad():
        for p in layer.made.parameters():
            p.normal_(0.0, std)
    return layer


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


LAYERS = [MaskedAffineAutoregressive, InverseAutoregressive]


@pytest.mark.parametrize("cls", LAYERS)
def test_identity_at_init(cls):
    layer = cls(D, hidden=(16,))
    x = torch.randn(4, D)
    z, ldj = layer(x)
    torch.testing.assert_close(z, x)
    torch.testing.assert_close(ldj, torch.zeros(4))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("kwargs", [{}, {"random_order": True, "seed": 4}, {"residual": True}])
def test_round_trip_train_and_eval(cls, kwargs):
    layer = _randomize(cls(D, hidden=(24, 24), **kwargs))
    x = torch.randn(8, D)
    for mode in (layer.train, layer.eval):
        mode()
        z, _ = assert_invertible(layer, x)
        assert (z - x).abs().max() > 1e-2  # the layer is not the identity


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("kwargs", [{}, {"reverse_order": True}, {"log_scale_bound": None}])
def test_ldj_matches_autograd(cls, kwargs):
    layer = _randomize(cls(D, hidden=(16, 16), **kwargs)).double()
    x = torch.randn(3, D, dtype=torch.float64)
    assert_logdet_matches_autograd(layer, x)
    assert_invertible(layer, x, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("cls", LAYERS)
def test_conditional_round_trip_ldj_and_context_effect(cls):
    layer = _randomize(cls(D, hidden=(16,), context_features=3)).double()
    x = torch.randn(3, D, dtype=torch.float64)
    ctx = torch.randn(3, 3, dtype=torch.float64)
    assert_invertible(layer, x, ctx, atol=1e-9, rtol=1e-9)
    assert_logdet_matches_autograd(layer, x, ctx)
    z1, _ = layer(x, ctx)
    z2, _ = layer(x, ctx + 1.0)
    assert ((z1 - z2).abs() > 1e-6).all()  # every dimension, the first included, sees context
    with pytest.raises(ValueError, match="needs a context"):
        layer(x)
    with pytest.raises(ShapeError, match=rf"{cls.__name__}.*context.*\(3, 3\).*\(3, 4\)"):
        layer(x, torch.randn(3, 4, dtype=torch.float64))


@pytest.mark.parametrize("random_order", [False, True])
def test_maf_jacobian_is_triangular_in_the_order(random_order):
    layer = _randomize(MaskedAffineAutoregressive(D, hidden=(16,), random_order=random_order))
    layer = layer.double()
    x = torch.randn(D, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0][0], x)
    order = layer.made.order
    later = order[None, :] > order[:, None]  # dz_i/dx_j with j after i in the order
    assert (J[later] == 0).all()
    assert (J[order[None, :] < order[:, None]] != 0).any()
    _, alpha = layer._params(x.unsqueeze(0), None)
    torch.testing.assert_close(torch.diagonal(J), torch.exp(-alpha[0]))


def test_pass_counts_maf_fast_density_iaf_fast_sampling():
    x = torch.randn(4, D)
    maf = _randomize(MaskedAffineAutoregressive(D, hidden=(8,)))
    calls = _count_calls(maf.made)
    maf(x)
    assert calls[0] == 1
    maf.inverse(x)
    assert calls[0] == 1 + D

    iaf = _randomize(InverseAutoregressive(D, hidden=(8,)))
    calls = _count_calls(iaf.made)
    iaf.inverse(x)  # sampling direction: one pass
    assert calls[0] == 1
    iaf(x)  # density direction: sequential
    assert calls[0] == 1 + D


def test_iaf_is_maf_backwards():
    iaf = _randomize(InverseAutoregressive(D, hidden=(8,))).double()
    x = torch.randn(4, D, dtype=torch.float64)
    z, ldj = iaf(x)
    x_maf, ldj_maf = iaf.bijection(z)  # the wrapped MAF maps z back to x in one pass
    torch.testing.assert_close(x_maf, x)
    torch.testing.assert_close(ldj, -ldj_maf)


def test_log_scale_bound_limits_scales():
    layer = MaskedAffineAutoregressive(D, hidden=(8,), log_scale_bound=2.0)
    with torch.no_grad():
        layer.made.output_layer.bias.view(D, 2)[:, 1] = 100.0
    z, ldj = layer(torch.randn(3, D))
    torch.testing.assert_close(ldj, torch.full((3,), -2.0 * D))
    assert torch.isfinite(z).all()
    with pytest.raises(ValueError, match="log_scale_bound"):
        MaskedAffineAutoregressive(D, log_scale_bound=0.0)


@pytest.mark.parametrize("cls", LAYERS)
def test_shape_errors(cls):
    layer = cls(D, hidden=(8,))
    with pytest.raises(ShapeError, match=rf"{cls.__name__}.*\(\*, 5\).*\(4, 3\)"):
        layer(torch.randn(4, 3))
    with pytest.raises(ShapeError, match=cls.__name__):
        layer.inverse(torch.randn(4, D, 1))


def test_maf_flow_density_integrates_to_one():
    layers = [
        _randomize(MaskedAffineAutoregressive(2, hidden=(16,)), std=0.4),
        _randomize(InverseAutoregressive(2, hidden=(16,), reverse_order=True), std=0.4),
    ]
    flow = Flow(StandardNormal(2), layers).double()
    total = grid_integral(flow.log_prob, -12.0, 12.0, n=300)
    assert math.isclose(total, 1.0, abs_tol=5e-3), total


def test_registered_names():
    assert registry.get("layer", "maf") is MaskedAffineAutoregressive
    assert registry.get("layer", "iaf") is InverseAutoregressive
    layer = registry.build("layer", "iaf", features=3, hidden=[8], context_features=2)
    assert layer(torch.randn(2, 3), torch.randn(2, 2))[0].shape == (2, 3)
