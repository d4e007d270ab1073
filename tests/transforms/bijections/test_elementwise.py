"""Logit, Sigmoid, Scale, Shift."""

import math

import pytest
import torch

from survae import registry
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.bijections.elementwise import Logit, Scale, Shift, Sigmoid


def test_registered():
    for name, cls in [("logit", Logit), ("sigmoid", Sigmoid), ("scale", Scale), ("shift", Shift)]:
        assert registry.get("layer", name) is cls


@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.05])
@pytest.mark.parametrize("shape", [(3, 4), (2, 2, 3, 3)])
def test_logit_invertible_and_logdet(eps, shape):
    layer = Logit(eps)
    x = torch.rand(shape, dtype=torch.float64) * 0.98 + 0.01
    for mode in (True, False):
        layer.train(mode)
        z, ldj = assert_invertible(layer, x, atol=1e-10, rtol=1e-10)
    assert_logdet_matches_autograd(layer, x)
    y = eps + (1 - 2 * eps) * x
    torch.testing.assert_close(z, torch.log(y / (1 - y)))
    ref = (math.log(1 - 2 * eps) - torch.log(y) - torch.log(1 - y)).flatten(1).sum(1)
    torch.testing.assert_close(ldj, ref)


@pytest.mark.parametrize("eps", [0.0, 0.05])
def test_sigmoid_is_inverse_of_logit(eps):
    sig, logit = Sigmoid(eps), Logit(eps)
    x = torch.randn(3, 4, dtype=torch.float64) * 3
    z, ldj = assert_invertible(sig, x, atol=1e-10, rtol=1e-10)
    assert_logdet_matches_autograd(sig, x)
    x_back, ldj_logit = logit(z)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ldj_logit, -ldj)
    lo, hi = -eps / (1 - 2 * eps), (1 - eps) / (1 - 2 * eps)  # (0, 1) when eps = 0
    assert ((z > lo) & (z < hi)).all()


def test_logit_stable_near_boundaries():
    layer = Logit(1e-6)
    x = torch.tensor([[0.0, 1.0, 1e-30, 1 - 1e-8]])
    z, ldj = layer(x)
    assert torch.isfinite(z).all() and torch.isfinite(ldj).all()
    z, ldj = Sigmoid()(torch.tensor([[-200.0, 200.0, 0.0]]))
    assert torch.isfinite(ldj).all()


def test_logit_clamp_is_the_official_formula_edges_included():
    layer = Logit(1e-6, mode="clamp").double()
    x = torch.tensor([[0.0, 0.5, 1.0, 0.3], [1e-7, 0.9, 2e-6, 1 - 1e-7]], dtype=torch.float64)
    z, ldj = layer(x)
    y = x.clamp(1e-6, 1 - 1e-6)
    torch.testing.assert_close(z, torch.log(y) - torch.log1p(-y))
    torch.testing.assert_close(ldj, (-torch.log(y) - torch.log1p(-y)).sum(1))
    inside = torch.rand(3, 4, dtype=torch.float64) * 0.98 + 0.01
    assert_invertible(layer, inside, atol=1e-10, rtol=1e-10)
    assert_logdet_matches_autograd(layer, inside)
    _, ldj_out = layer(torch.tensor([[-0.1, 0.5], [0.5, 0.5], [0.5, 1.2]], dtype=torch.float64))
    assert ldj_out[0] == -math.inf and ldj_out[2] == -math.inf and torch.isfinite(ldj_out[1])
    with pytest.raises(ValueError, match="Logit: unknown mode 'clip'; valid: squeeze, clamp"):
        Logit(1e-6, mode="clip")


@pytest.mark.parametrize("s", [2.0, -0.5, 1 / 256])
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2, 2)])
def test_scale(s, shape):
    layer = Scale(s)
    x = torch.randn(shape, dtype=torch.float64)
    z, ldj = assert_invertible(layer, x, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(z, x * s)
    n = math.prod(shape[1:])
    torch.testing.assert_close(
        ldj, torch.full((shape[0],), n * math.log(abs(s)), dtype=torch.float64)
    )
    assert_logdet_matches_autograd(layer, x)


def test_shift():
    layer = Shift(-0.5)
    x = torch.rand(3, 2, 2, 2, dtype=torch.float64)
    z, ldj = assert_invertible(layer, x, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(z, x - 0.5)
    assert torch.equal(ldj, torch.zeros(3, dtype=torch.float64))
    assert_logdet_matches_autograd(layer, x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Scale: scale must be non-zero"):
        Scale(0.0)
    with pytest.raises(ValueError, match=r"Logit: eps must be in \[0, 0.5\)"):
        Logit(0.5)
    with pytest.raises(ValueError, match="Sigmoid: eps"):
        Sigmoid(-0.1)
