"""LeakyReLU, SneakyReLU, Tanh, Softplus, SoftplusInverse."""

import math

import pytest
import torch
import torch.nn.functional as F

from survae import registry
from survae.distributions import StandardNormal
from survae.flows import Flow
from survae.testing import assert_invertible, assert_logdet_matches_autograd, grid_integral
from survae.transforms import (
    InverseBijection,
    LeakyReLU,
    SneakyReLU,
    Softplus,
    SoftplusInverse,
    Tanh,
)

LAYERS = {
    "leaky_relu": lambda: LeakyReLU(0.2),
    "sneaky_relu": lambda: SneakyReLU(0.1),
    "sneaky_relu_steep": lambda: SneakyReLU(3.0),
    "tanh": Tanh,
    "softplus": Softplus,
}


def test_registered():
    pairs = [
        ("leaky_relu", LeakyReLU),
        ("sneaky_relu", SneakyReLU),
        ("tanh", Tanh),
        ("softplus", Softplus),
        ("softplus_inverse", SoftplusInverse),
    ]
    for name, cls in pairs:
        assert registry.get("layer", name) is cls


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("shape", [(3, 4), (2, 2, 3, 3)])
def test_invertible_and_logdet(name, shape):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    x = torch.randn(shape, dtype=torch.float64) * 2
    z, ldj = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    assert z.shape == x.shape
    assert_logdet_matches_autograd(layer, x)


def test_formulas():
    x = torch.tensor([[-2.0, -0.5, 0.0, 1.5]], dtype=torch.float64)
    z, ldj = LeakyReLU(0.1)(x)
    torch.testing.assert_close(z, torch.tensor([[-0.2, -0.05, 0.0, 1.5]], dtype=torch.float64))
    torch.testing.assert_close(ldj, torch.tensor([2 * math.log(0.1)], dtype=torch.float64))
    z, ldj = Tanh()(x)
    torch.testing.assert_close(z, torch.tanh(x))
    torch.testing.assert_close(ldj, torch.log(1 - torch.tanh(x) ** 2).sum(1, keepdim=False))
    z, ldj = Softplus()(x)
    torch.testing.assert_close(z, F.softplus(x))
    torch.testing.assert_close(ldj, torch.log(torch.sigmoid(x)).sum(1))
    # SneakyReLU's slopes: a far left, 1 far right
    layer = SneakyReLU(0.25)
    far = torch.tensor([[-1e4, 1e4]], dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v)[0], far).reshape(2, 2).diag()
    torch.testing.assert_close(
        jac, torch.tensor([0.25, 1.0], dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_tanh_stable_for_large_inputs():
    x = torch.tensor([[30.0, -30.0]])
    _, ldj = Tanh()(x)
    assert torch.isfinite(ldj).all()
    torch.testing.assert_close(ldj, torch.tensor([4 * (math.log(2) - 30)]), rtol=1e-5, atol=1e-3)


def test_softplus_inverse_pair():
    x = torch.rand(4, 3, dtype=torch.float64) * 5 + 0.05
    layer = SoftplusInverse()
    z, ldj = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    assert_logdet_matches_autograd(layer, x)
    back, ldj_sp = Softplus()(z)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(ldj_sp, -ldj)
    torch.testing.assert_close(z, torch.log(torch.expm1(x)))


@pytest.mark.parametrize("support", ["real", "interval", "positive"])
def test_flow_density_integrates_and_samples(support):
    torch.manual_seed(0)
    layers, low, high = [SneakyReLU(2.0), LeakyReLU(1.5)], -8.0, 8.0
    if support == "interval":  # data in (-1, 1)²
        layers, low, high = [InverseBijection(Tanh()), *layers], -1.0, 1.0
    elif support == "positive":  # data in (0, ∞)²
        layers, low, high = [SoftplusInverse(), *layers], 0.0, 8.0
    flow = Flow(StandardNormal(2), layers).double()
    total = grid_integral(flow.log_prob, low, high, n=800)
    assert math.isclose(total, 1.0, abs_tol=5e-3), total
    flow = flow.float()
    x, log_p = flow.sample_with_log_prob(16)
    assert x.shape == (16, 2)
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-4, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="LeakyReLU: negative_slope must be > 0"):
        LeakyReLU(0.0)
    with pytest.raises(ValueError, match="SneakyReLU: negative_slope must be > 0"):
        SneakyReLU(-1.0)
    with pytest.raises(ValueError, match="Softplus: eps must be > 0"):
        Softplus(0.0)
