"""Conditional distributions: densities against torch.distributions, sampling, layouts, errors."""

import pytest
import torch
from torch import nn

import survae  # noqa: F401
from survae import registry
from survae.distributions.conditional import (
    ConditionalBernoulli,
    ConditionalCategorical,
    ConditionalNormal,
)
from survae.errors import ShapeError


def _linear(i, o, scale=0.5):
    net = nn.Linear(i, o)
    with torch.no_grad():
        net.weight.mul_(scale * 4)
        net.bias.normal_()
    return net


def test_conditional_normal_vector_matches_torch():
    d = ConditionalNormal(_linear(3, 4))
    c = torch.randn(6, 3)
    x = torch.randn(6, 2)
    mean, log_std = d.net(c).chunk(2, dim=1)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(x).sum(1)
    torch.testing.assert_close(d.log_prob(x, context=c), ref)
    torch.testing.assert_close(d.mean(c), mean)
    torch.testing.assert_close(d.mode(c), mean)


def test_conditional_normal_image_matches_torch():
    net = nn.Conv2d(2, 6, 3, padding=1)  # 3 event channels: 3 means + 3 log-stds
    d = ConditionalNormal(net)
    c = torch.randn(4, 2, 5, 5)
    x = torch.randn(4, 3, 5, 5)
    p = net(c)
    ref = torch.distributions.Normal(p[:, :3], p[:, 3:].exp()).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(d.log_prob(x, c), ref)
    s = d.sample(999, context=c)  # num_samples is ignored: the shape comes from the context
    assert s.shape == (4, 3, 5, 5)


def test_conditional_normal_sampling_statistics_and_temperature():
    d = ConditionalNormal(_linear(1, 2))
    c = torch.full((20000, 1), 0.7)
    mean, log_std = d.net(c[:1]).chunk(2, dim=1)
    with torch.no_grad():
        s = d.sample(1, context=c)
        s_cold = d.sample(1, context=c, temperature=0.5)
    assert abs(s.mean() - mean.item()) < 0.05 * log_std.exp().item() + 0.01
    torch.testing.assert_close(s.std(), log_std.exp()[0, 0], rtol=0.03, atol=0.0)
    torch.testing.assert_close(s_cold.std(), 0.5 * log_std.exp()[0, 0], rtol=0.03, atol=0.0)


def test_conditional_normal_sample_with_log_prob_is_consistent_and_reparameterised():
    d = ConditionalNormal(_linear(3, 8))
    c = torch.randn(5, 3)
    x, lp = d.sample_with_log_prob(5, context=c)
    torch.testing.assert_close(lp, d.log_prob(x, c))
    x.sum().backward()
    assert d.net.weight.grad is not None and d.net.weight.grad.abs().sum() > 0


def test_conditional_normal_built_from_spec_and_registry():
    d = ConditionalNormal({"name": "mlp", "hidden": [8]}, context_channels=3, event_channels=2)
    assert d.net(torch.randn(1, 3)).shape == (1, 4)
    d2 = registry.build(
        "distribution", "conditional_normal", net="mlp", context_channels=3, event_channels=2
    )
    assert isinstance(d2, ConditionalNormal)
    with pytest.raises(ValueError, match="context_channels and event_channels"):
        ConditionalNormal("mlp")


def test_conditional_errors():
    d = ConditionalNormal(_linear(3, 4))
    with pytest.raises(ValueError, match="conditional"):
        d.log_prob(torch.randn(2, 2))
    with pytest.raises(ShapeError, match=r"ConditionalNormal.*\(2, 2\).*\(2, 3\)"):
        d.log_prob(torch.randn(2, 3), context=torch.randn(2, 3))
    odd = ConditionalNormal(_linear(3, 3))
    with pytest.raises(ShapeError, match="even"):
        odd.log_prob(torch.randn(2, 1), context=torch.randn(2, 3))


def test_conditional_bernoulli_matches_torch_and_samples():
    d = ConditionalBernoulli(_linear(3, 4))
    c = torch.randn(7, 3)
    logits = d.net(c)
    x = (torch.rand(7, 4) < 0.5).float()
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(1)
    torch.testing.assert_close(d.log_prob(x, c), ref)
    torch.testing.assert_close(d.mean(c), torch.sigmoid(logits))
    assert torch.equal(d.mode(c), (logits > 0).float())
    cc = c[:1].expand(20000, 3)
    with torch.no_grad():
        s = d.sample(1, context=cc)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(s.mean(0), torch.sigmoid(logits[0]).detach(), atol=0.015, rtol=0)


def test_conditional_categorical_flat_layout_images():
    K, C = 5, 2
    net = nn.Conv2d(3, C * K, 1)
    d = ConditionalCategorical(net, num_categories=K)
    c = torch.randn(4, 3, 2, 3)
    x = torch.randint(0, K, (4, C, 2, 3))
    out = net(c)
    ref = torch.zeros(4)
    for ch in range(C):  # channel ch owns logits ch*K ... ch*K + K - 1
        logits_ch = out[:, ch * K : (ch + 1) * K].permute(0, 2, 3, 1)
        ref = ref + torch.distributions.Categorical(logits=logits_ch).log_prob(x[:, ch]).sum((1, 2))
    torch.testing.assert_close(d.log_prob(x, c), ref)
    torch.testing.assert_close(d.log_prob(x.to(torch.uint8), c), ref)
    torch.testing.assert_close(d.log_prob(x.float(), c), ref)
    s = d.sample(1, context=c)
    assert s.shape == x.shape and s.dtype == torch.long
    assert d.mode(c).shape == x.shape and d.mean(c).shape == x.shape


def test_conditional_categorical_split_layout_and_sampling_frequencies():
    K, D = 4, 3

    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = _linear(2, D * K)

        def forward(self, c):
            return self.lin(c).view(-1, D, K)

    d = ConditionalCategorical(Split(), num_categories=K, logits_layout="split")
    c = torch.randn(1, 2).expand(30000, 2)
    probs = d.probs(c[:1])[0].detach()  # [D, K]
    with torch.no_grad():
        s = d.sample(1, context=c)
    freq = torch.stack([(s == k).float().mean(0) for k in range(K)], dim=1)
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
    x = torch.randint(0, K, (30000, D))
    ref = torch.distributions.Categorical(probs=probs).log_prob(x).sum(1)
    torch.testing.assert_close(d.log_prob(x, c), ref, atol=1e-5, rtol=1e-5)
    expected_mean = (probs * torch.arange(K).float()).sum(1)
    torch.testing.assert_close(d.mean(c[:1])[0], expected_mean)
    assert torch.equal(d.mode(c[:1])[0], probs.argmax(1))


def test_conditional_categorical_errors():
    with pytest.raises(ValueError, match="logits_layout"):
        ConditionalCategorical(_linear(2, 8), 4, logits_layout="wide")
    d = ConditionalCategorical(_linear(2, 7), 4)
    with pytest.raises(ShapeError, match="multiple of num_categories=4"):
        d.log_prob(torch.zeros(3, 2), torch.randn(3, 2))
    d = ConditionalCategorical(_linear(2, 8), 4)
    with pytest.raises(ShapeError, match=r"\(3, 2\).*\(3, 3\)"):
        d.log_prob(torch.zeros(3, 3), torch.randn(3, 2))
