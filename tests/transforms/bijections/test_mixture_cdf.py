"""Mixture-CDF transforms: Gaussian, logistic and censored logistic mixtures, elementwise and
in coupling and autoregressive layers."""

import math

import pytest
import torch

from survae import Flow, registry
from survae.distributions import StandardUniform
from survae.testing import assert_invertible, assert_logdet_matches_autograd, grid_integral
from survae.transforms import (
    CensoredLogisticMixtureAutoregressive,
    CensoredLogisticMixtureCoupling,
    GaussianMixtureAutoregressive,
    GaussianMixtureCoupling,
    LogisticMixtureAutoregressive,
)
from survae.transforms.bijections.mixture_cdf import (
    censored_logistic_mixture_cdf,
    gaussian_mixture_cdf,
    logistic_mixture_cdf,
)

M = 3
MLP_RANDOM = {"name": "mlp", "hidden": [16], "zero_init_output": False}
FUNCTIONS = {
    "gaussian": gaussian_mixture_cdf,
    "logistic": logistic_mixture_cdf,
    "censored": lambda x, p, inverse=False: censored_logistic_mixture_cdf(x, p, 8, inverse),
}


def _params(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, 3 * M, generator=g, dtype=torch.float64)


def _inputs(kind, shape):
    x = torch.rand(shape, dtype=torch.float64)
    return x if kind == "censored" else x * 6 - 3


def _randomize(module, std=0.3):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def test_registered():
    pairs = [
        ("gaussian_mixture_coupling", GaussianMixtureCoupling),
        ("censored_logistic_mixture_coupling", CensoredLogisticMixtureCoupling),
        ("gaussian_mixture_autoregressive", GaussianMixtureAutoregressive),
        ("logistic_mixture_autoregressive", LogisticMixtureAutoregressive),
        ("censored_logistic_mixture_autoregressive", CensoredLogisticMixtureAutoregressive),
    ]
    for name, cls in pairs:
        assert registry.get("layer", name) is cls


def test_gaussian_and_logistic_match_torch_distributions():
    x = torch.randn(4, 5, dtype=torch.float64)
    p = _params(x.shape)
    w, mu, ls = p.split(M, -1)
    pi = torch.softmax(w, -1)
    normal = torch.distributions.Normal(mu, ls.exp())
    y, ld = gaussian_mixture_cdf(x, p)
    torch.testing.assert_close(y, (pi * normal.cdf(x.unsqueeze(-1))).sum(-1))
    torch.testing.assert_close(ld, (pi * normal.log_prob(x.unsqueeze(-1)).exp()).sum(-1).log())
    y, _ = logistic_mixture_cdf(x, p)
    torch.testing.assert_close(y, (pi * torch.sigmoid((x.unsqueeze(-1) - mu) / ls.exp())).sum(-1))


@pytest.mark.parametrize("kind", sorted(FUNCTIONS))
def test_map_round_trip_derivative_and_range(kind):
    fn = FUNCTIONS[kind]
    x = _inputs(kind, (3, 40)).requires_grad_()
    p = _params(x.shape, seed=2)
    y, ld = fn(x, p)
    assert torch.all((y > 0) & (y < 1))
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(ld, grad.log(), atol=1e-9, rtol=1e-9)
    x_rec, ld_inv = fn(y.detach(), p, inverse=True)
    torch.testing.assert_close(x_rec, x.detach(), atol=1e-8, rtol=0)
    torch.testing.assert_close(ld_inv, -ld.detach(), atol=1e-7, rtol=0)


def test_censored_ends_first_and_last_bins_and_support():
    p = _params((2, 1), seed=5).expand(2, 5, -1)
    x = torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0], dtype=torch.float64).expand(2, -1)
    y, ld = censored_logistic_mixture_cdf(x, p, num_bins=8)
    torch.testing.assert_close(y[:, 0], torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(y[:, -1], torch.ones(2, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.all(y[:, 1:] > y[:, :-1]) and torch.isfinite(ld).all()
    _, ld_out = censored_logistic_mixture_cdf(torch.tensor([-0.1, 1.1]), _params((2,)).float(), 8)
    assert torch.all(ld_out == -math.inf)
    # [0, 1] → [0, 1] with density integrating to 1 per element
    grid = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
    _, ld = censored_logistic_mixture_cdf(grid, _params((1,), 3).expand(20000, -1), 8)
    assert math.isclose(ld.exp().mean().item(), 1.0, abs_tol=1e-4)


def test_inverse_gradient_is_implicit():
    p = _params((2, 6), seed=7).requires_grad_()
    y = torch.rand(2, 6, dtype=torch.float64) * 0.9 + 0.05
    x, _ = gaussian_mixture_cdf(y, p, inverse=True)
    (g_inv,) = torch.autograd.grad(x.sum(), p)
    xd = x.detach().requires_grad_()
    f, _ = gaussian_mixture_cdf(xd, p)
    gx, gp = torch.autograd.grad(f.sum(), (xd, p))
    torch.testing.assert_close(g_inv, -gp / gx.unsqueeze(-1), atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("cls", [GaussianMixtureCoupling, CensoredLogisticMixtureCoupling])
@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_coupling_round_trip_and_logdet(cls, mask):
    kind = "censored" if cls is CensoredLogisticMixtureCoupling else "gaussian"
    layer = _randomize(cls(4, MLP_RANDOM, num_mixtures=M, mask=mask)).double()
    x = _inputs(kind, (5, 4))
    z, ldj = assert_invertible(layer, x, atol=1e-7, rtol=1e-7)
    assert z.shape == x.shape and ldj.shape == (5,)
    assert_logdet_matches_autograd(layer, x)
    conv = cls(2, torch.nn.Conv2d(1, 3 * M, 3, padding=1), num_mixtures=M).double()
    img = _inputs(kind, (2, 2, 3, 3))
    assert_invertible(_randomize(conv), img, atol=1e-7, rtol=1e-7)
    assert_logdet_matches_autograd(conv, img)


AUTOREGRESSIVE = [
    GaussianMixtureAutoregressive,
    LogisticMixtureAutoregressive,
    CensoredLogisticMixtureAutoregressive,
]


@pytest.mark.parametrize("cls", AUTOREGRESSIVE)
def test_autoregressive_round_trip_logdet_and_context(cls):
    kind = "censored" if cls is CensoredLogisticMixtureAutoregressive else "gaussian"
    layer = _randomize(cls(3, hidden=(12,), num_mixtures=M)).double()
    x = _inputs(kind, (4, 3))
    assert_invertible(layer, x, atol=1e-7, rtol=1e-7)
    assert_logdet_matches_autograd(layer, x)
    cond = _randomize(cls(2, hidden=(8,), num_mixtures=M, context_features=2)).double()
    assert_invertible(cond, x[:, :2], torch.randn(4, 2, dtype=torch.float64), atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("cls", AUTOREGRESSIVE + [GaussianMixtureCoupling])
def test_two_d_flow_onto_the_unit_square_integrates_to_one(cls):
    # a censored layer maps [0, 1]² → [0, 1]²; the others ℝ² → (0, 1)²: a uniform base either way
    if cls is GaussianMixtureCoupling:
        layers = [
            cls(2, MLP_RANDOM, num_mixtures=M),
            cls(2, MLP_RANDOM, num_mixtures=M, reverse_mask=True),
        ]
    elif cls is CensoredLogisticMixtureAutoregressive:
        layers = [cls(2, hidden=(8,), num_mixtures=M, num_bins=8)]
    else:
        layers = [cls(2, hidden=(8,), num_mixtures=M)]
    # weights of std 0.3 keep the coupling's tails light enough for a ±20 box
    std = 0.3 if cls is GaussianMixtureCoupling else 0.5
    flow = Flow(StandardUniform(2), [_randomize(t, std) for t in layers]).double()
    # the censored density jumps at the first and last bins' edges: a grid that puts them on
    # cell edges (n a multiple of 8)
    censored = cls is CensoredLogisticMixtureAutoregressive
    low, high, n = (0.0, 1.0, 1000) if censored else (-20.0, 20.0, 800)
    total = grid_integral(flow.log_prob, low, high, n=n)
    assert math.isclose(total, 1.0, abs_tol=3e-3), total
    x = flow.float().sample(16)
    assert x.shape == (16, 2) and torch.isfinite(x).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_mixtures and num_iters must be >= 1"):
        GaussianMixtureCoupling(2, MLP_RANDOM, num_mixtures=0)
    with pytest.raises(ValueError, match="num_bins applies to the censored mixtures only"):
        GaussianMixtureAutoregressive(2, num_bins=8)
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        CensoredLogisticMixtureCoupling(2, MLP_RANDOM, num_bins=1)
    with pytest.raises(ValueError, match="expected 3·K"):
        gaussian_mixture_cdf(torch.zeros(2), torch.zeros(2, 4))
