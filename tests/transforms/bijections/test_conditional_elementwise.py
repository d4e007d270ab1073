"""ConditionalAffine and ConditionalAdditive: parameters from the context only."""

import pytest
import torch

from survae import registry
from survae.distributions import StandardNormal
from survae.errors import ShapeError
from survae.flows import Flow
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms import ConditionalAdditive, ConditionalAffine

MLP = {"name": "mlp", "hidden": [8]}


def _randomize(layer):
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return layer


def test_registered():
    assert registry.get("layer", "conditional_affine") is ConditionalAffine
    assert registry.get("layer", "conditional_additive") is ConditionalAdditive


@pytest.mark.parametrize("cls", [ConditionalAffine, ConditionalAdditive])
def test_vectors_invertible_and_logdet(cls):
    torch.manual_seed(0)
    layer = _randomize(cls(3, 2, MLP)).double()
    x, c = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    z, ldj = assert_invertible(layer, x, c, atol=1e-10, rtol=1e-10)
    assert_logdet_matches_autograd(layer, x, c)
    params = layer.net(c)
    if cls is ConditionalAffine:
        shift, log_scale = params.chunk(2, dim=1)
        torch.testing.assert_close(z, shift + log_scale.exp() * x)
        torch.testing.assert_close(ldj, log_scale.sum(1))
    else:
        torch.testing.assert_close(z, x + params)
        assert torch.equal(ldj, torch.zeros(4, dtype=torch.float64))


def test_images_with_a_conv_net_and_sampling():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 4, 3, padding=1)
    layer = _randomize(ConditionalAffine(2, 1, net)).double()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    c = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    assert_invertible(layer, x, c, atol=1e-10, rtol=1e-10)
    assert_logdet_matches_autograd(layer, x, c)
    flow = Flow(StandardNormal((2, 3, 3)), [layer]).float()
    c = c.float()
    x, log_p = flow.sample_with_log_prob(2, context=c)
    assert x.shape == (2, 2, 3, 3)
    torch.testing.assert_close(log_p, flow.log_prob(x, c), atol=1e-4, rtol=1e-4)


def test_needs_context_and_right_output():
    layer = ConditionalAdditive(3, 2, MLP)
    with pytest.raises(ValueError, match="conditional: pass context"):
        layer(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="network output"):
        ConditionalAdditive(3, 2, torch.nn.Linear(2, 4))(torch.randn(2, 3), torch.randn(2, 2))
    with pytest.raises(ValueError, match=">= 1"):
        ConditionalAffine(0, 2, MLP)
