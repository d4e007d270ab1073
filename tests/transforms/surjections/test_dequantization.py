"""Uniform and variational dequantization: ranges, rounding inverse, analytic contributions,
and the bound against importance-weighted estimates and the exact discrete likelihood."""

import math

import pytest
import torch
from torch import nn

import survae  # noqa: F401
from survae import Flow, registry
from survae.distributions import DiagonalNormal, StandardNormal, StandardUniform
from survae.distributions.conditional import ConditionalNormal
from survae.errors import ShapeError
from survae.transforms.base import Bijection
from survae.transforms.surjections.dequantization import (
    UniformDequantization,
    VariationalDequantization,
)

K = 4  # bins in the small tests


class _CondAffine(Bijection):
    """Elementwise conditional affine map ``y = x·exp(s(c)) + t(c)`` (test helper)."""

    def __init__(self, ctx_dim, dim):
        super().__init__()
        self.net = nn.Linear(ctx_dim, 2 * dim)
        nn.init.normal_(self.net.weight, std=0.5)

    def forward(self, x, context=None):
        t, s = self.net(context).chunk(2, dim=1)
        return x * s.exp() + t, s.sum(1)

    def inverse_with_ldj(self, z, context=None):
        t, s = self.net(context).chunk(2, dim=1)
        return (z - t) * torch.exp(-s), -s.sum(1)


def _exact_log_prob_diag_normal(base: DiagonalNormal, x: torch.Tensor, bins: int):
    """log P(x) = Σ_d log ∫_{x_d/K}^{(x_d+1)/K} N(z; μ_d, σ_d) dz."""
    normal = torch.distributions.Normal(base.loc.detach(), base.log_scale.detach().exp())
    mass = normal.cdf((x + 1) / bins) - normal.cdf(x / bins)
    return mass.log().sum(1)


def _iwae(flow, x, k):
    lp = flow.log_prob(x.repeat(k, 1)).view(k, x.shape[0])
    return torch.logsumexp(lp, 0) - math.log(k)


def _toy_base():
    base = DiagonalNormal(2).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor([0.3, 0.6]))
        base.log_scale.copy_(torch.tensor([-1.5, -1.2]))
    return base


def test_uniform_ranges_rounding_and_contribution():
    layer = UniformDequantization(num_bins=256)
    x = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    z, ldj = layer(x)
    xf = x.float()
    assert z.dtype == torch.float32
    assert ((z >= xf / 256) & (z < (xf + 1) / 256)).all()
    assert torch.equal(layer.inverse(z), xf)
    torch.testing.assert_close(ldj, torch.full((5,), -48 * math.log(256)))
    for dtype in (torch.long, torch.float64):
        z2, _ = layer(x.to(dtype))
        assert torch.equal(layer.inverse(z2), x.to(z2.dtype))
    assert UniformDequantization(256, integer_output=True).inverse(z).dtype == torch.long
    assert torch.equal(
        layer.inverse(torch.tensor([[-0.1, 1.0, 0.999999]])), torch.tensor([[0.0, 255.0, 255.0]])
    )
    assert not layer.exact and layer.stochastic_forward
    assert isinstance(registry.build("layer", "uniform_dequantization"), UniformDequantization)


def test_uniform_bound_is_exact_for_a_uniform_model():
    flow = Flow(StandardUniform(3), [UniformDequantization(K)])
    x = torch.randint(0, K, (10, 3))
    torch.testing.assert_close(flow.log_prob(x), torch.full((10,), -3 * math.log(K)))


def test_uniform_bound_below_importance_weighted_and_exact():
    flow = Flow(_toy_base(), [UniformDequantization(K)])
    x = torch.tensor([[0, 0], [0, 3], [3, 1], [2, 3]], dtype=torch.float64)
    exact = _exact_log_prob_diag_normal(flow.base_dist, x, K)
    elbo = flow.log_prob(x.repeat(4000, 1)).view(4000, 4).mean(0)
    iw = torch.stack([_iwae(flow, x, 100) for _ in range(40)]).mean(0)
    assert (elbo < iw - 0.01).all() and (elbo < exact).all()
    # IWAE ≤ log P(x) in expectation; 40 repeats of k=100 leave about ±0.015 of noise
    assert (iw <= exact + 0.04).all()
    torch.testing.assert_close(iw, exact, atol=0.04, rtol=0)


def test_variational_contribution_matches_analytic_value():
    ctx_net = nn.Linear(2, 3)
    enc = ConditionalNormal(nn.Linear(3, 4))
    layer = VariationalDequantization(enc, num_bins=K, context_net=ctx_net)
    x = torch.randint(0, K, (6, 2))
    z, ldj = layer(x)
    assert ((z > x / K) & (z < (x + 1) / K)).all()
    assert torch.equal(layer.inverse(z), x.float())
    # recover the encoder's pre-sigmoid sample and evaluate log q(u | x) independently
    u = (z * K - x).double()
    y = torch.log(u) - torch.log1p(-u)
    ctx = ctx_net(x.float() * 2 / (K - 1) - 1)
    log_q_y = enc.log_prob(y.float(), ctx).double()
    log_q_u = log_q_y - (torch.log(u) + torch.log1p(-u)).sum(1)
    ref = -2 * math.log(K) - log_q_u
    torch.testing.assert_close(ldj.double(), ref, atol=2e-4, rtol=1e-4)


def test_variational_with_conditional_flow_encoder_bound_and_gradients():
    encoder = Flow(StandardNormal(2), [_CondAffine(2, 2), _CondAffine(2, 2)]).double()
    layer = VariationalDequantization(encoder, num_bins=K).double()
    flow = Flow(_toy_base(), [layer])
    x = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0]], dtype=torch.float64)
    exact = _exact_log_prob_diag_normal(flow.base_dist, x, K)
    with torch.no_grad():
        elbo = flow.log_prob(x.repeat(2000, 1)).view(2000, 4).mean(0)
        iw = torch.stack([_iwae(flow, x, 100) for _ in range(10)]).mean(0)
    assert (elbo < iw - 0.01).all()
    assert (elbo < exact).all()
    # a random q makes the importance weights noisy: IWAE may exceed log P(x) by a little
    assert (iw <= exact + 0.1).all()
    loss = -flow.log_prob(x).mean()
    loss.backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_variational_unsquashed_encoder_and_images():
    class UniformNoise(nn.Module):
        """q(u | x) = U(0, 1): log q = 0; makes the bound equal to uniform dequantization."""

        def sample_with_log_prob(self, num_samples, context=None):
            return torch.rand_like(context), context.new_zeros(context.shape[0])

    layer = VariationalDequantization(UniformNoise(), num_bins=256, squash=False)
    x = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    z, ldj = layer(x)
    assert z.shape == (3, 3, 4, 4)
    torch.testing.assert_close(ldj, torch.full((3,), -48 * math.log(256)))
    assert torch.equal(layer.inverse(z), x.float())


def test_variational_errors():
    with pytest.raises(TypeError, match="sample_with_log_prob"):
        VariationalDequantization(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="data_channels and context_channels"):
        VariationalDequantization(StandardNormal(2), context_net="mlp")
    layer = VariationalDequantization(StandardNormal(3), num_bins=K)
    with pytest.raises(ShapeError, match=r"VariationalDequantization.*\(5, 2\).*\(5, 3\)"):
        layer(torch.zeros(5, 2))
