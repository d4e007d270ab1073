"""Slice: contribution = log-density of the dropped channels; sampling inverse; errors."""

import math

import pytest
import torch
from torch import nn

import survae  # noqa: F401
from survae import Flow, registry
from survae.distributions import StandardNormal
from survae.distributions.conditional import ConditionalNormal
from survae.errors import ShapeError
from survae.transforms.surjections.slicing import Slice


def _normal_logpdf(x):
    return (-0.5 * x**2 - 0.5 * math.log(2 * math.pi)).reshape(x.shape[0], -1).sum(1)


def test_standard_normal_contribution_images():
    layer = Slice(num_channels=5, num_keep=2)
    x = torch.randn(3, 5, 4, 4)
    z, ldj = layer(x)
    assert torch.equal(z, x[:, :2])
    torch.testing.assert_close(ldj, _normal_logpdf(x[:, 2:]))
    assert layer.exact and not layer.invertible


def test_flow_with_slice_equals_joint_normal():
    flow = Flow(StandardNormal(2), [Slice(3, 2)])
    x = torch.randn(10, 3)
    torch.testing.assert_close(flow.log_prob(x), _normal_logpdf(x))


def test_learned_decoder_contribution_and_spec():
    net = nn.Linear(2, 2)
    nn.init.normal_(net.weight)
    dec = ConditionalNormal(net)
    layer = Slice(3, 2, decoder=dec)
    x = torch.randn(8, 3)
    z, ldj = layer(x)
    mean, log_std = net(x[:, :2]).chunk(2, dim=1)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(x[:, 2:]).sum(1)
    torch.testing.assert_close(ldj, ref)

    built = Slice(4, 1, decoder={"name": "mlp", "hidden": [8]})
    assert isinstance(built.decoder, ConditionalNormal)
    assert built.decoder.net(torch.randn(2, 1)).shape == (2, 6)
    # the zero-initialised output layer makes the learned prior start at N(0, I)
    x = torch.randn(5, 4)
    torch.testing.assert_close(built(x)[1], _normal_logpdf(x[:, 1:]))
    assert isinstance(registry.build("layer", "slice", num_channels=4, num_keep=2), Slice)


def test_inverse_samples_dropped_part_and_right_inverse():
    layer = Slice(6, 2)
    z = torch.randn(4, 2, 3, 3)
    x = layer.inverse(z)
    assert x.shape == (4, 6, 3, 3)
    torch.testing.assert_close(layer(x)[0], z)
    layer.temperature = 0.0
    assert torch.equal(layer.inverse(z)[:, 2:], torch.zeros(4, 4, 3, 3))

    dec_layer = Slice(3, 1, decoder=ConditionalNormal(nn.Linear(1, 4)))
    z = torch.randn(2000, 1)
    with torch.no_grad():
        x = dec_layer.inverse(z)
        mean, log_std = dec_layer.decoder.mean_and_log_std(z)
    assert x.shape == (2000, 3)
    torch.testing.assert_close(dec_layer(x)[0], z)
    # dropped values are drawn from the decoder: standardised residuals are N(0, 1)
    r = (x[:, 1:] - mean) / log_std.exp()
    assert r.mean().abs() < 0.06 and (r.std() - 1).abs() < 0.05


def test_slice_errors():
    with pytest.raises(ValueError, match="num_keep"):
        Slice(3, 3)
    layer = Slice(4, 2)
    with pytest.raises(ShapeError, match=r"Slice.*4 channels.*\(2, 3, 5\)"):
        layer(torch.randn(2, 3, 5))
    with pytest.raises(ShapeError, match=r"Slice.*2 channels.*\(2, 3\)"):
        layer.inverse(torch.randn(2, 3))


@pytest.mark.parametrize("dim", [2, 3])
def test_slice_along_another_dim(dim):
    layer = Slice(num_channels=4, num_keep=1, dim=dim)
    x = torch.randn(3, 2, 4, 4)
    z, ldj = layer(x)
    kept, dropped = x.split((1, 3), dim=dim)
    assert torch.equal(z, kept)
    torch.testing.assert_close(ldj, _normal_logpdf(dropped))
    back = layer.inverse(z)
    assert back.shape == x.shape and torch.equal(back.narrow(dim, 0, 1), z)
    # a flow sliced along the width: log p = the joint standard normal of x
    flow = Flow(StandardNormal((2, 4, 1) if dim == 3 else (2, 1, 4)), [layer])
    torch.testing.assert_close(flow.log_prob(x), _normal_logpdf(x))
    assert flow.sample(5).shape == (5, 2, 4, 4)
    fixed = Slice(4, 1, decoder=StandardNormal((2, 3, 4) if dim == 2 else (2, 4, 3)), dim=dim)
    torch.testing.assert_close(fixed(x)[1], ldj)


def test_slice_dim_errors():
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        Slice(4, 2, dim=0)
    with pytest.raises(ValueError, match="needs dim=1"):
        Slice(4, 2, decoder={"name": "mlp", "hidden": [4]}, dim=2)
    with pytest.raises(ShapeError, match=r"4 channels along dim 2.*\(\*, \*, 4\).*\(2, 3, 5\)"):
        Slice(4, 2, dim=2)(torch.randn(2, 3, 5))
    with pytest.raises(ShapeError):
        Slice(4, 2, dim=2)(torch.randn(2, 4))
