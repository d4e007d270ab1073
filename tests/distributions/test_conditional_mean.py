"""ConditionalMeanNormal and ConditionalMeanStdNormal: the network predicts the mean only."""

import math

import pytest
import torch
from torch import nn

from survae import registry
from survae.distributions import ConditionalMeanNormal, ConditionalMeanStdNormal
from survae.errors import ShapeError


def test_registered():
    assert registry.get("distribution", "conditional_mean_normal") is ConditionalMeanNormal
    assert registry.get("distribution", "conditional_mean_std_normal") is ConditionalMeanStdNormal


def test_mean_normal_density_and_samples():
    torch.manual_seed(0)
    d = ConditionalMeanNormal(nn.Linear(3, 2), scale=0.5)
    c, x = torch.randn(6, 3), torch.randn(6, 2)
    mean = d.net(c)
    ref = (-0.5 * ((x - mean) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)).sum(1)
    torch.testing.assert_close(d.log_prob(x, c), ref)
    torch.testing.assert_close(d.mean(c), mean)
    sample, log_p = d.sample_with_log_prob(6, context=c)
    assert sample.shape == (6, 2)
    torch.testing.assert_close(log_p, d.log_prob(sample, c))
    torch.testing.assert_close(d.sample(6, context=c, temperature=0.0), mean)
    # reparameterised: gradients reach the network
    d.sample(6, context=c).sum().backward()
    assert d.net.weight.grad is not None
    big = torch.cat([d.sample(1, context=c[:1]) for _ in range(4000)])
    assert abs(big.std(0) - 0.5).max() < 0.03


def test_mean_std_normal_per_channel_images_and_spec():
    torch.manual_seed(0)
    d = ConditionalMeanStdNormal(nn.Conv2d(1, 3, 3, padding=1), event_channels=3)
    with torch.no_grad():
        d.log_scale.copy_(torch.tensor([0.0, -1.0, 0.5]))
    c, x = torch.randn(2, 1, 4, 4), torch.randn(2, 3, 4, 4)
    std = d.log_scale.exp().view(1, 3, 1, 1)
    ref = torch.distributions.Normal(d.net(c), std).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(d.log_prob(x, c), ref)
    assert d.sample(2, context=c).shape == (2, 3, 4, 4)
    # a network from a spec and a full-shape scale
    spec = ConditionalMeanStdNormal({"name": "mlp", "hidden": [8]}, (2,), 3, 2)
    c = torch.randn(5, 3)
    assert spec.sample(5, context=c).shape == (5, 2)
    spec.log_prob(torch.randn(5, 2), c).sum().backward()
    assert spec.log_scale.grad is not None and spec.log_scale.grad.shape == (2,)


def test_errors():
    with pytest.raises(ValueError, match="scale must be > 0"):
        ConditionalMeanNormal(nn.Linear(2, 2), scale=0.0)
    with pytest.raises(ValueError, match="needs event_channels"):
        ConditionalMeanStdNormal(nn.Linear(2, 2))
    d = ConditionalMeanNormal(nn.Linear(2, 3))
    with pytest.raises(ValueError, match="context"):
        d.log_prob(torch.randn(2, 3))
    with pytest.raises(ShapeError):
        d.log_prob(torch.randn(2, 4), torch.randn(2, 2))


def test_integer_context_reaches_the_network_as_floats():
    d = ConditionalMeanNormal(nn.Linear(4, 2).double())
    c = torch.randint(0, 2, (3, 4), dtype=torch.uint8)
    torch.testing.assert_close(d.mean(c), d.net(c.double()))
    assert d.log_prob(torch.zeros(3, 2, dtype=torch.float64), c).dtype == torch.float64
