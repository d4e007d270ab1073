"""AbsSurjection: contribution = log p(sign), folded density, sign sampling, errors."""

import math

import pytest
import torch

import survae  # noqa: F401
from survae import Flow
from survae.distributions import StandardHalfNormal, StandardNormal
from survae.errors import ShapeError
from survae.testing import grid_integral
from survae.transforms.surjections.absolute import AbsSurjection


def _normal_logpdf(x):
    return (-0.5 * x**2 - 0.5 * math.log(2 * math.pi)).reshape(x.shape[0], -1).sum(1)


def test_contribution_is_log_sign_probability():
    layer = AbsSurjection(shape=(3,))
    with torch.no_grad():
        layer.logits.copy_(torch.tensor([0.3, -1.2, 2.0]))
    x = torch.tensor([[1.0, -2.0, 0.5], [-0.1, 0.2, -3.0]])
    z, ldj = layer(x)
    assert torch.equal(z, x.abs())
    p = torch.sigmoid(layer.logits.detach())
    sign_pos = x >= 0
    ref = torch.where(sign_pos, p, 1 - p).log().sum(1)
    torch.testing.assert_close(ldj, ref)
    assert layer.exact


def test_folding_a_half_normal_with_fair_signs_gives_the_normal():
    flow = Flow(StandardHalfNormal(2), [AbsSurjection()])
    x = torch.randn(50, 2)
    torch.testing.assert_close(flow.log_prob(x), _normal_logpdf(x))


def test_learned_signs_density_is_folded_density_and_normalised():
    layer = AbsSurjection(shape=(2,))
    with torch.no_grad():
        layer.logits.copy_(torch.tensor([1.5, -0.7]))
    flow = Flow(StandardHalfNormal(2), [layer]).double()
    x = torch.randn(20, 2, dtype=torch.float64)
    p = torch.sigmoid(layer.logits.detach())
    log_sign = torch.where(x >= 0, p, 1 - p).log().sum(1)
    ref = log_sign + math.log(4.0) + _normal_logpdf(x.abs())
    torch.testing.assert_close(flow.log_prob(x), ref)
    assert abs(grid_integral(flow.log_prob, -6.0, 6.0, n=300) - 1.0) < 1e-3


def test_inverse_samples_signs_with_learned_probabilities():
    layer = AbsSurjection(shape=(2,))
    with torch.no_grad():
        layer.logits.copy_(torch.tensor([2.0, -1.0]))
    z = torch.rand(20000, 2) + 0.1
    with torch.no_grad():
        x = layer.inverse(z)
    assert torch.equal(x.abs(), z)
    torch.testing.assert_close(layer(x)[0], z)
    freq = (x > 0).float().mean(0)
    torch.testing.assert_close(freq, torch.sigmoid(layer.logits.detach()), atol=0.015, rtol=0)


def test_sign_logits_receive_gradients():
    layer = AbsSurjection()
    flow = Flow(StandardNormal(3), [layer])
    x = torch.randn(16, 3) + 2.0  # mostly positive: the positive-sign logit should grow
    (-flow.log_prob(x).mean()).backward()
    assert layer.logits.grad is not None and layer.logits.grad.item() < 0


def test_shape_error():
    layer = AbsSurjection(shape=(2,))
    with pytest.raises(ShapeError, match=r"AbsSurjection.*\(\*, 2\).*\(4, 3\)"):
        layer(torch.randn(4, 3))


def test_fixed_fair_signs_as_the_official_layer():
    layer = AbsSurjection(shape=(2,), learn_signs=False)
    assert list(layer.parameters()) == [] and "logits" in layer.state_dict()
    x = torch.tensor([[1.0, -2.0], [-0.5, -0.1]])
    z, ldj = layer(x)
    torch.testing.assert_close(ldj, torch.full((2,), 2 * math.log(0.5)))
    flow = Flow(StandardNormal(2), [layer])
    assert flow.sample(5).shape == (5, 2)
