"""VAE layer: contribution log p(x|z) − log q(z|x), exactness with the true posterior of a
linear-Gaussian model, bound below the importance-weighted estimate, sampling, specs."""

import math

import pytest
import torch
from torch import nn

import survae  # noqa: F401
from survae import Flow, registry
from survae.distributions import StandardNormal
from survae.distributions.conditional import ConditionalBernoulli, ConditionalNormal
from survae.transforms.stochastic.vae import VAE

W = torch.tensor([[1.5], [-0.8]], dtype=torch.float64)  # decoder mean weight, D=2, L=1
B = torch.tensor([0.3, -0.2], dtype=torch.float64)
LOG_STD = torch.tensor([-0.5, 0.2], dtype=torch.float64)


def _decoder():
    net = nn.Linear(1, 4).double()
    with torch.no_grad():
        net.weight.zero_()
        net.weight[:2] = W
        net.bias.copy_(torch.cat([B, LOG_STD]))
    return ConditionalNormal(net)


def _exact_log_marginal(x):
    cov = W @ W.T + torch.diag(torch.exp(2 * LOG_STD))
    return torch.distributions.MultivariateNormal(B, cov).log_prob(x)


def _posterior_encoder():
    """The exact posterior q(z|x) = p(z|x) = N(a·(x − b), s²) of the linear-Gaussian model."""
    psi_inv = torch.exp(-2 * LOG_STD)
    s2 = 1.0 / (1.0 + (W[:, 0] ** 2 * psi_inv).sum())
    a = s2 * W[:, 0] * psi_inv
    net = nn.Linear(2, 2).double()
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0] = a
        net.bias.copy_(torch.stack([-(a * B).sum(), 0.5 * torch.log(s2)]))
    return ConditionalNormal(net)


def test_contribution_is_log_p_minus_log_q():
    enc = ConditionalNormal(nn.Linear(2, 2).double())
    dec = _decoder()
    layer = VAE(enc, dec)
    x = torch.randn(6, 2, dtype=torch.float64)
    z, ldj = layer(x)
    assert z.shape == (6, 1)
    ref = dec.log_prob(x, context=z) - enc.log_prob(z, context=x)
    torch.testing.assert_close(ldj, ref)
    assert not layer.exact and not layer.invertible


def test_true_posterior_makes_every_draw_exact():
    flow = Flow(StandardNormal(1).double(), [VAE(_posterior_encoder(), _decoder())])
    x = torch.randn(8, 2, dtype=torch.float64) * 2
    for _ in range(3):
        torch.testing.assert_close(flow.log_prob(x), _exact_log_marginal(x))


def test_bound_below_importance_weighted_estimate():
    # an encoder near (not at) the true posterior: a too-wide q with a perturbed mean
    enc = _posterior_encoder()
    enc_net = enc.net
    with torch.no_grad():
        enc_net.weight[0] += 0.05 * torch.randn(2, dtype=torch.float64)
        enc_net.bias += torch.tensor([0.1 * torch.randn(()).item(), 0.5], dtype=torch.float64)
    flow = Flow(StandardNormal(1).double(), [VAE(enc, _decoder())])
    x = torch.randn(5, 2, dtype=torch.float64)
    exact = _exact_log_marginal(x)
    with torch.no_grad():
        elbo = flow.log_prob(x.repeat(2000, 1)).view(2000, 5).mean(0)
        iw = torch.stack(
            [
                torch.logsumexp(flow.log_prob(x.repeat(100, 1)).view(100, 5), 0) - math.log(100)
                for _ in range(40)
            ]
        ).mean(0)
    assert (elbo < iw - 0.2).all()  # KL(q || posterior) ≥ 0.36 from the scale alone
    # IWAE ≤ log p(x) in expectation; 40 repeats of k=100 leave about ±0.01 of noise
    assert (iw <= exact + 0.04).all()
    torch.testing.assert_close(iw, exact, atol=0.05, rtol=0)
    loss = -flow.log_prob(x).mean()
    loss.backward()  # reparameterised: gradients reach the encoder
    assert enc_net.weight.grad is not None and enc_net.weight.grad.abs().sum() > 0


def test_inverse_sampling_mean_and_temperature():
    layer = VAE(_posterior_encoder(), _decoder())
    z = torch.randn(3000, 1, dtype=torch.float64)
    with torch.no_grad():
        x = layer.inverse(z)
        mean = layer.decoder.mean(z)
    assert x.shape == (3000, 2)
    r = (x - mean) / LOG_STD.exp()
    assert r.mean().abs() < 0.05 and (r.std() - 1).abs() < 0.05
    layer.temperature = 0.0
    torch.testing.assert_close(layer.inverse(z), mean)
    layer_mean = VAE(_posterior_encoder(), _decoder(), sample_mean=True)
    torch.testing.assert_close(layer_mean.inverse(z), mean)


def test_specs_and_bernoulli_decoder_on_images():
    layer = registry.build(
        "layer",
        "vae",
        encoder={
            "name": "conditional_normal",
            "net": {"name": "mlp", "hidden": [16]},
            "context_channels": 6,
            "event_channels": 3,
        },
        decoder={
            "name": "conditional_normal",
            "net": "mlp",
            "context_channels": 3,
            "event_channels": 6,
        },
    )
    x = torch.randn(4, 6)
    z, ldj = layer(x)
    assert z.shape == (4, 3) and ldj.shape == (4,)
    assert layer.inverse(z).shape == (4, 6)

    enc = ConditionalNormal(nn.Conv2d(1, 4, 3, padding=1))  # 2 latent channels
    dec = ConditionalBernoulli(nn.Conv2d(2, 1, 3, padding=1))
    layer = VAE(enc, dec)
    x = (torch.rand(3, 1, 6, 6) < 0.5).float()
    z, ldj = layer(x)
    assert z.shape == (3, 2, 6, 6) and torch.isfinite(ldj).all()
    s = layer.inverse(z)
    assert s.shape == x.shape and set(s.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(TypeError, match="encoder"):
        VAE(nn.Linear(2, 2), dec)
