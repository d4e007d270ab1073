"""Mixture-of-Gaussians and context-dependent Gaussian base distributions."""

import math

import pytest
import torch

from survae import Flow, registry
from survae.distributions import ConditionalMixtureOfGaussians, ContextNormal, MixtureOfGaussians
from survae.errors import ShapeError
from survae.models import build_model
from survae.testing import grid_integral
from survae.transforms.bijections.coupling import AffineCoupling


def _randomize(module: torch.nn.Module, std: float = 0.5) -> torch.nn.Module:
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def test_registered():
    assert registry.get("distribution", "mixture_of_gaussians") is MixtureOfGaussians
    assert (
        registry.get("distribution", "conditional_mixture_of_gaussians")
        is ConditionalMixtureOfGaussians
    )
    assert registry.get("distribution", "context_normal") is ContextNormal


def test_log_prob_matches_a_direct_sum():
    mog = _randomize(MixtureOfGaussians(3, num_components=4))
    x = torch.randn(5, 3)
    w = torch.softmax(mog.logits, 0)
    dens = torch.zeros(5)
    for k in range(4):
        normal = torch.distributions.Normal(mog.means[k], mog.log_scales[k].exp())
        dens = dens + w[k] * normal.log_prob(x).sum(1).exp()
    torch.testing.assert_close(mog.log_prob(x), dens.log())


def test_two_d_density_integrates_to_one_and_samples_follow_it():
    torch.manual_seed(0)
    mog = MixtureOfGaussians(2, num_components=3, init_spread=2.0, init_scale=0.5).double()
    with torch.no_grad():
        mog.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
    total = grid_integral(mog.log_prob, -10.0, 10.0, n=400)
    assert math.isclose(total, 1.0, abs_tol=1e-4), total
    x = mog.sample(20_000)
    assert x.shape == (20_000, 2)
    # each sample's nearest mean: frequencies match the weights
    nearest = torch.cdist(x, mog.means).argmin(1)
    freq = torch.bincount(nearest, minlength=3).double() / len(x)
    torch.testing.assert_close(freq, torch.softmax(mog.logits, 0), atol=0.03, rtol=0)


def test_temperature_scales_the_spread():
    mog = MixtureOfGaussians(2, num_components=1, init_spread=0.0)
    torch.manual_seed(0)
    assert mog.sample(4000, temperature=0.5).std().item() == pytest.approx(0.5, rel=0.08)


def test_trains_to_two_modes():
    torch.manual_seed(0)
    data = torch.cat([torch.randn(500, 1) * 0.2 - 3, torch.randn(500, 1) * 0.2 + 3])
    mog = MixtureOfGaussians(1, num_components=2, init_spread=1.0)
    opt = torch.optim.Adam(mog.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        (-mog.log_prob(data).mean()).backward()
        opt.step()
    means = mog.means.detach().view(-1).sort().values
    torch.testing.assert_close(means, torch.tensor([-3.0, 3.0]), atol=0.15, rtol=0)
    torch.testing.assert_close(mog.log_scales.detach().exp().view(-1), torch.full((2,), 0.2),
                               atol=0.03, rtol=0)  # fmt: skip
    # optimum: entropy of two N(±3, 0.2²) halves, 0.5 log(2πe·0.04) + log 2 ≈ 0.50 nats
    assert -mog.log_prob(data).mean().item() < 0.6


def test_usable_as_a_config_base():
    spec = {
        "layers": [{"name": "affine_coupling", "num_channels": 2, "net": "mlp", "scale_fn": "exp"}],
        "base": {"name": "mixture_of_gaussians", "num_components": 4},
    }
    flow = build_model(spec, (2,))
    assert isinstance(flow.base_dist, MixtureOfGaussians) and flow.base_dist.shape == (2,)
    assert flow.log_prob(torch.randn(3, 2)).shape == (3,)
    assert flow.sample(5).shape == (5, 2)


def test_shape_errors_are_named():
    with pytest.raises(ShapeError, match="MixtureOfGaussians"):
        MixtureOfGaussians(2).log_prob(torch.randn(3, 3))
    with pytest.raises(ValueError, match="num_components"):
        MixtureOfGaussians(2, num_components=0)


@pytest.mark.parametrize("hidden", [(), (16,)])
def test_conditional_mixture_per_context(hidden):
    cmog = ConditionalMixtureOfGaussians(2, context_features=3, num_components=3, hidden=hidden)
    c = torch.eye(3)
    # starts independent of the context, equal to the unconditional mixture
    mog = MixtureOfGaussians(2, num_components=3)
    x = torch.randn(3, 2)
    torch.testing.assert_close(cmog.log_prob(x, c), mog.log_prob(x))
    _randomize(cmog)
    cmog = cmog.double()
    for i in range(3):
        ctx = c[i : i + 1].double()

        def lp(p, ctx=ctx):
            return cmog.log_prob(p, ctx.expand(p.shape[0], -1))

        assert math.isclose(grid_integral(lp, -12.0, 12.0, n=400), 1.0, abs_tol=1e-3)
    assert not torch.allclose(cmog.log_prob(x.double(), c.double()[[0, 0, 0]]),
                              cmog.log_prob(x.double(), c.double()[[1, 1, 1]]))  # fmt: skip
    s = cmog.sample(999, context=c.double()[[0, 1]])
    assert s.shape == (2, 2)  # the batch comes from the context
    with pytest.raises(ValueError, match="context"):
        cmog.log_prob(x.double())


def test_context_normal_is_a_per_class_gaussian():
    cn = ContextNormal((2, 2), context_features=2)
    x = torch.randn(4, 2, 2)
    c = torch.eye(2)[[0, 1, 0, 1]]
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum((1, 2))
    torch.testing.assert_close(cn.log_prob(x, c), ref)  # N(0, I) at the start
    with torch.no_grad():
        cn.params.net.weight.copy_(torch.tensor([[1.0, -1.0]] * 4 + [[0.0, 0.5]] * 4))
    mean, log_scale = cn.mean_and_log_scale(c)
    torch.testing.assert_close(mean[0], torch.ones(2, 2))
    torch.testing.assert_close(mean[1], -torch.ones(2, 2))
    torch.testing.assert_close(log_scale[1], torch.full((2, 2), 0.5))
    torch.manual_seed(0)
    s = cn.sample(0, context=torch.eye(2)[[1] * 4000])
    torch.testing.assert_close(s.mean(0), -torch.ones(2, 2), atol=0.1, rtol=0)
    torch.testing.assert_close(s.std(0), torch.full((2, 2), math.exp(0.5)), atol=0.1, rtol=0)


def test_conditional_flow_with_context_base_integrates_per_class():
    torch.manual_seed(0)
    layer = AffineCoupling(
        2, {"name": "mlp", "hidden": [8], "zero_init_output": False}, scale_fn="tanh_exp",
        context_channels=2,
    )  # fmt: skip
    flow = Flow(_randomize(ContextNormal(2, context_features=2), 0.3), [layer]).double()
    for i in range(2):
        ctx = torch.eye(2, dtype=torch.float64)[i : i + 1]

        def lp(p, ctx=ctx):
            return flow.log_prob(p, ctx.expand(p.shape[0], -1))

        assert math.isclose(grid_integral(lp, -10.0, 10.0, n=300), 1.0, abs_tol=2e-3)
