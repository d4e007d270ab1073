"""Augment (ANF / VFlow): contribution −log q(e|x), inverse, and the bound of a tiny ANF model
against the importance-weighted estimate and the exact marginal likelihood."""

import math

import pytest
import torch
from torch import nn

import survae  # noqa: F401
from survae import Flow, registry
from survae.distributions import StandardNormal
from survae.distributions.conditional import ConditionalNormal
from survae.errors import ShapeError
from survae.transforms.base import Bijection
from survae.transforms.surjections.augment import Augment


def _normal_logpdf(x):
    return (-0.5 * x**2 - 0.5 * math.log(2 * math.pi)).reshape(x.shape[0], -1).sum(1)


class _Linear(Bijection):
    """z = x Aᵀ with a fixed invertible A (test helper mixing data and noise)."""

    def __init__(self, A):
        super().__init__()
        self.register_buffer("A", A)

    def forward(self, x, context=None):
        return x @ self.A.T, torch.linalg.slogdet(self.A)[1].expand(x.shape[0])

    def inverse_with_ldj(self, z, context=None):
        x = torch.linalg.solve(self.A, z.T).T
        return x, -torch.linalg.slogdet(self.A)[1].expand(z.shape[0])


def test_anf_contribution_and_inverse_images():
    layer = Augment(in_channels=3, aug_channels=2)
    x = torch.randn(4, 3, 5, 5)
    z, ldj = layer(x)
    assert z.shape == (4, 5, 5, 5)
    assert torch.equal(z[:, :3], x)
    torch.testing.assert_close(ldj, -_normal_logpdf(z[:, 3:]))
    assert torch.equal(layer.inverse(z), x)
    assert not layer.exact and layer.stochastic_forward
    assert isinstance(registry.build("layer", "augment", in_channels=1, aug_channels=1), Augment)


def test_vflow_contribution_with_conditional_normal_encoder():
    net = nn.Linear(2, 6)
    nn.init.normal_(net.weight)
    enc = ConditionalNormal(net)
    layer = Augment(2, 3, encoder=enc)
    x = torch.randn(7, 2)
    z, ldj = layer(x)
    e = z[:, 2:]
    torch.testing.assert_close(ldj, -enc.log_prob(e, context=x))
    ldj.sum().backward()  # reparameterised: the encoder gets gradients
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0

    built = Augment(2, 3, encoder={"name": "mlp", "hidden": [8]})
    assert isinstance(built.encoder, ConditionalNormal)
    assert built(x)[0].shape == (7, 5)


def test_anf_bound_below_importance_weighted_and_exact_marginal():
    torch.manual_seed(1)
    A = 0.3 * torch.randn(4, 4, dtype=torch.float64) + torch.eye(4, dtype=torch.float64)
    flow = Flow(StandardNormal(4), [Augment(2, 2), _Linear(A)]).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    cov = torch.linalg.inv(A.T @ A)[:2, :2]
    exact = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov)
    exact = exact.log_prob(x)
    with torch.no_grad():
        elbo = flow.log_prob(x.repeat(4000, 1)).view(4000, 5).mean(0)
        iw = torch.stack(
            [
                torch.logsumexp(flow.log_prob(x.repeat(100, 1)).view(100, 5), 0) - math.log(100)
                for _ in range(40)
            ]
        ).mean(0)
    assert (elbo < iw - 0.1).all()  # the ANF posterior N(0, I) is far from the true one
    # IWAE ≤ log p(x) in expectation; 40 repeats leave a few hundredths of noise
    assert (iw <= exact + 0.04).all()
    torch.testing.assert_close(iw, exact, atol=0.06, rtol=0)


def test_augment_without_mixing_is_exact():
    # p(x, e) = N(x) N(e) and q(e|x) = N(e): the bound is tight for every draw
    flow = Flow(StandardNormal(3), [Augment(1, 2)])
    x = torch.randn(6, 1)
    torch.testing.assert_close(flow.log_prob(x), _normal_logpdf(x))


def test_augment_errors():
    layer = Augment(3, 2)
    with pytest.raises(ShapeError, match=r"Augment.*\(\*, 3, \*, \*\).*\(2, 4, 5, 5\)"):
        layer(torch.randn(2, 4, 5, 5))
    with pytest.raises(ShapeError, match=r"Augment.*\(\*, 5\).*\(2, 3\)"):
        layer.inverse(torch.randn(2, 3))
    bad = Augment(2, 3, encoder=ConditionalNormal(nn.Linear(2, 4)))  # produces 2 channels
    with pytest.raises(ShapeError, match=r"augmentation noise.*\(6, 3\).*\(6, 2\)"):
        bad(torch.randn(6, 2))


@pytest.mark.parametrize("dim", [2, 3])
def test_augment_along_another_dim(dim):
    torch.manual_seed(0)
    layer = Augment(3, 2, dim=dim)
    x = torch.randn(4, 1, 3, 3)
    z, ldj = layer(x)
    assert z.shape == ((4, 1, 5, 3) if dim == 2 else (4, 1, 3, 5))
    assert torch.equal(z.narrow(dim, 0, 3), x)
    torch.testing.assert_close(ldj, -_normal_logpdf(z.narrow(dim, 3, 2)))
    assert torch.equal(layer.inverse(z), x)
    flow = Flow(StandardNormal(tuple(z.shape[1:])), [layer])
    assert flow.sample(6).shape == (6, 1, 3, 3)
    # the bound with a standard-normal base: log p(x) exactly, since log N(e) cancels −log q(e)
    torch.testing.assert_close(flow.log_prob(x), _normal_logpdf(x))


def test_augment_dim_errors():
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        Augment(3, 2, dim=0)
    with pytest.raises(ValueError, match="needs dim=1"):
        Augment(3, 2, encoder={"name": "mlp", "hidden": [4]}, dim=2)
    with pytest.raises(ShapeError, match=r"Augment.*\(\*, \*, 3\).*\(2, 3, 4\)"):
        Augment(3, 2, dim=2)(torch.randn(2, 3, 4))


def test_augment_with_a_registered_distribution_as_encoder():
    from survae.distributions import StandardUniform

    layer = Augment(3, 3, encoder={"name": "standard_uniform", "shape": [3, 4, 4]})
    assert isinstance(layer.encoder, StandardUniform)
    x = torch.rand(2, 3, 4, 4)
    z, ldj = layer(x)
    noise = z[:, 3:]
    assert z.shape == (2, 6, 4, 4) and torch.all((noise >= 0) & (noise < 1))
    assert torch.equal(ldj, torch.zeros(2))  # −log q of U[0, 1) noise is 0
    assert torch.equal(layer.inverse(z), x)
