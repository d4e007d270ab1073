"""LinearLowRank: diagonal plus low-rank dense map."""

import math

import pytest
import torch

from survae import registry
from survae.distributions import StandardNormal
from survae.errors import ShapeError
from survae.flows import Flow
from survae.testing import assert_invertible, assert_logdet_matches_autograd, grid_integral
from survae.transforms import LinearLowRank


def _random(D, r, bias):
    torch.manual_seed(0)
    layer = LinearLowRank(D, r, bias=bias).double()
    with torch.no_grad():
        layer.d.copy_(torch.rand(D) + 0.5)
        layer.d[0] *= -1  # a negative diagonal entry: |det| still right
        layer.U.normal_()
        layer.V.normal_(std=0.5)
        if bias:
            layer.bias.normal_()
    return layer


def test_registered():
    assert registry.get("layer", "linear_lowrank") is LinearLowRank


@pytest.mark.parametrize("rank", [1, 2, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_invertible_and_logdet(rank, bias):
    layer = _random(4, rank, bias)
    x = torch.randn(5, 4, dtype=torch.float64)
    z, ldj = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    W = torch.diag(layer.d) + layer.U @ layer.V
    torch.testing.assert_close(z, x @ W.T + (layer.bias if bias else 0))
    torch.testing.assert_close(ldj, torch.linalg.slogdet(W)[1].expand(5))
    assert_logdet_matches_autograd(layer, x)


def test_starts_near_identity_and_flow_integrates():
    layer = LinearLowRank(3, 2)
    x = torch.randn(2, 3)
    torch.testing.assert_close(layer(x)[0], x, atol=1e-2, rtol=0)
    flow = Flow(StandardNormal(2), [_random(2, 1, True)]).double()
    total = grid_integral(flow.log_prob, -15.0, 15.0, n=300)
    assert math.isclose(total, 1.0, abs_tol=2e-3), total
    flow = flow.float()
    samples, log_p = flow.sample_with_log_prob(7)
    assert samples.shape == (7, 2)
    torch.testing.assert_close(log_p, flow.log_prob(samples))


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank <= num_features"):
        LinearLowRank(3, 4)
    with pytest.raises(ShapeError):
        LinearLowRank(3, 1)(torch.randn(2, 4))
