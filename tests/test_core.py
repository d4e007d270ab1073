"""Registry, base distributions and the Flow container."""

import math

import pytest
import torch

import survae
from survae import registry
from survae.distributions import DiagonalNormal, StandardHalfNormal, StandardNormal, StandardUniform
from survae.errors import ShapeError


def test_unknown_name_lists_valid_names():
    with pytest.raises(registry.UnknownNameError) as info:
        registry.build("distribution", "standard_normall", shape=2)
    msg = str(info.value)
    assert "standard_normal" in msg and "Did you mean" in msg and "diagonal_normal" in msg


def test_unknown_kind_lists_kinds():
    with pytest.raises(registry.UnknownNameError, match="layer"):
        registry.available("layers")


def test_build_from_spec_merges_and_rejects_clashes():
    net = registry.build_from_spec(
        "network", {"name": "mlp", "hidden": [8]}, in_channels=3, out_channels=2
    )
    assert net(torch.randn(5, 3)).shape == (5, 2)
    with pytest.raises(ValueError, match="in_channels"):
        registry.build_from_spec(
            "network", {"name": "mlp", "in_channels": 4}, in_channels=3, out_channels=2
        )


def test_standard_normal_log_prob_matches_torch():
    d = StandardNormal((2, 3))
    x = torch.randn(4, 2, 3)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum((1, 2))
    torch.testing.assert_close(d.log_prob(x), ref)
    assert d.sample(7).shape == (7, 2, 3)
    torch.manual_seed(1)
    a = d.sample(1000, temperature=0.5)
    assert 0.4 < a.std().item() < 0.6


def test_diagonal_normal_matches_torch():
    d = DiagonalNormal(3)
    with torch.no_grad():
        d.loc.copy_(torch.tensor([0.5, -1.0, 2.0]))
        d.log_scale.copy_(torch.tensor([0.1, -0.3, 0.7]))
    x = torch.randn(6, 3)
    ref = torch.distributions.Normal(d.loc, d.log_scale.exp()).log_prob(x).sum(1)
    torch.testing.assert_close(d.log_prob(x), ref)


def test_half_normal_and_uniform():
    hn = StandardHalfNormal(1)
    x = torch.tensor([[0.5], [-0.5]])
    lp = hn.log_prob(x)
    torch.testing.assert_close(
        lp[0], torch.tensor(math.log(2) - 0.125 - 0.5 * math.log(2 * math.pi))
    )
    assert lp[1] == -math.inf
    assert (hn.sample(100) >= 0).all()
    u = StandardUniform(2)
    torch.testing.assert_close(
        u.log_prob(torch.tensor([[0.2, 0.9], [1.2, 0.1]])), torch.tensor([0.0, -math.inf])
    )


def test_shape_error_names_layer_and_shapes():
    with pytest.raises(ShapeError, match=r"StandardNormal.*\(\*, 2\).*\(4, 3\)"):
        StandardNormal(2).log_prob(torch.randn(4, 3))


def test_flow_with_no_layers_is_its_base():
    flow = survae.Flow(StandardNormal(2), [])
    x = torch.randn(5, 2)
    torch.testing.assert_close(flow.log_prob(x), StandardNormal(2).log_prob(x))
    assert flow.exact and flow.sample(3).shape == (3, 2)


def test_inverse_bijection_reports_its_own_log_determinant():
    from survae.testing import assert_invertible, assert_logdet_matches_autograd
    from survae.transforms import InverseBijection
    from survae.transforms.bijections.elementwise import Logit

    layer = InverseBijection(Logit(eps=0.0)).double()  # forward = sigmoid
    x = torch.randn(4, 3, dtype=torch.float64)
    assert_invertible(layer, x)
    assert_logdet_matches_autograd(layer, x)
    assert (layer(x)[0] > 0).all() and (layer(x)[0] < 1).all()


def test_sample_temperature_reaches_sampling_layers_and_is_restored():
    from survae.transforms.surjections.slicing import Slice

    split = Slice(num_channels=4, num_keep=1)
    flow = survae.Flow(StandardNormal(1), [split])
    torch.manual_seed(0)
    x = flow.sample(20_000, temperature=0.5)
    assert x.shape == (20_000, 4)
    stds = x.std(0)
    assert torch.allclose(stds, torch.full((4,), 0.5), atol=0.02), stds
    assert split.temperature == 1.0


@pytest.mark.parametrize("arch", ["abs_flow_2d", "plain_flow_2d"])
def test_sampling_is_deterministic_under_a_fixed_seed(arch):
    flow = registry.build("architecture", arch)
    torch.manual_seed(123)
    a = flow.sample(64)
    torch.manual_seed(123)
    b = flow.sample(64)
    torch.manual_seed(124)
    c = flow.sample(64)
    assert a.shape == (64, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_stochastic_layers_are_deterministic_under_a_fixed_seed():
    from survae.transforms.surjections.dequantization import UniformDequantization

    flow = survae.Flow(StandardNormal((1, 4, 4)), [UniformDequantization(num_bins=256)])
    x = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    torch.manual_seed(5)
    first = flow.log_prob(x)
    torch.manual_seed(5)
    torch.testing.assert_close(flow.log_prob(x), first, rtol=0, atol=0)
    assert not flow.exact
