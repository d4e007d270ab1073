"""Invertible 1×1 convolutions (plain and LU): invertibility, ldj, cache behaviour."""

import pytest
import torch

from survae import registry
from survae.errors import ShapeError
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.bijections.conv1x1 import Conv1x1, Conv1x1LU

CLASSES = [Conv1x1, Conv1x1LU]
SHAPES = [(3, 4), (2, 4, 3), (2, 4, 4, 4)]


def _perturb(layer):
    """Move the weights away from an orthogonal matrix so log|det W| is not 0."""
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def test_registered():
    assert registry.get("layer", "conv1x1") is Conv1x1
    assert registry.get("layer", "conv1x1_lu") is Conv1x1LU


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("shape", SHAPES)
def test_invertible_and_logdet(cls, shape):
    layer = _perturb(cls(4).double())
    x = torch.randn(shape, dtype=torch.float64)
    for mode in (True, False):
        layer.train(mode)
        z, ldj = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
        assert z.shape == x.shape
        assert ldj.abs().min() > 1e-3  # non-trivial determinant
        assert_logdet_matches_autograd(layer, x)


@pytest.mark.parametrize("cls", CLASSES)
def test_init_is_orthogonal(cls):
    layer = cls(5)
    W = layer._compute()[0]
    torch.testing.assert_close(W @ W.t(), torch.eye(5), atol=1e-5, rtol=0)
    z, ldj = layer(torch.randn(2, 5, 3, 3))
    torch.testing.assert_close(ldj, torch.zeros(2), atol=1e-4, rtol=0)


def test_lu_weight_matches_factors():
    layer = _perturb(Conv1x1LU(4).double())
    W, W_inv, logdet = layer._compute()
    torch.testing.assert_close(W @ W_inv, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(logdet, torch.linalg.slogdet(W)[1])
    # the masked parts of lower/upper must not matter
    with torch.no_grad():
        layer.lower.add_(torch.triu(torch.ones(4, 4, dtype=torch.float64)))
        layer.upper.add_(torch.tril(torch.ones(4, 4, dtype=torch.float64)))
    torch.testing.assert_close(layer._compute()[0], W)


@pytest.mark.parametrize("cls", CLASSES)
def test_cache_used_only_in_eval_without_grad(cls):
    layer = _perturb(cls(4))
    x = torch.randn(2, 4, 3, 3)
    layer.train()
    with torch.no_grad():
        layer(x)
    assert layer._cache is None  # never in training
    layer.eval()
    z_uncached, ldj_uncached = layer(x)  # grad enabled and params require grad: no cache
    assert layer._cache is None
    with torch.no_grad():
        z_cached, ldj_cached = layer(x)
        assert layer._cache is not None
        cached = layer._cache[1]
        z_again, _ = layer(x)
        assert layer._cache[1] is cached  # reused
        x_rec = layer.inverse(z_cached)
    assert torch.equal(z_cached, z_uncached.detach())
    assert torch.equal(ldj_cached, ldj_uncached.detach())
    assert torch.equal(z_again, z_cached)
    torch.testing.assert_close(x_rec, x, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        z_inf, _ = layer(x)
    assert torch.equal(z_inf, z_cached)


@pytest.mark.parametrize("cls", CLASSES)
def test_optimizer_step_invalidates_cache(cls):
    layer = _perturb(cls(4))
    x = torch.randn(2, 4, 3, 3)
    layer.eval()
    with torch.no_grad():
        z_before, ldj_before = layer(x)
    # an optimiser step (in training mode, then back to eval)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.train()
    z, ldj = layer(x)
    (z.square().sum() - ldj.sum()).backward()
    opt.step()
    layer.eval()
    with torch.no_grad():
        z_after, ldj_after = layer(x)
    assert not torch.allclose(z_after, z_before)
    # also without going through train(): editing a parameter in place bumps its version
    with torch.no_grad():
        next(layer.parameters()).mul_(1.5)
        z_edit, ldj_edit = layer(x)
    layer.clear_cache()
    with torch.no_grad():
        z_ref, ldj_ref = layer(x)
    assert not torch.allclose(z_edit, z_after)
    assert torch.equal(z_edit, z_ref) and torch.equal(ldj_edit, ldj_ref)


@pytest.mark.parametrize("cls", CLASSES)
def test_load_state_dict_invalidates_cache(cls):
    a, b = _perturb(cls(3)).eval(), _perturb(cls(3)).eval()
    x = torch.randn(4, 3)
    with torch.no_grad():
        a(x)
        a.load_state_dict(b.state_dict())
        torch.testing.assert_close(a(x)[0], b(x)[0])


def test_frozen_params_cache_with_grad_enabled():
    layer = _perturb(Conv1x1(3)).eval().requires_grad_(False)
    x = torch.randn(4, 3, requires_grad=True)
    z, _ = layer(x)
    assert layer._cache is not None
    z.sum().backward()  # gradient w.r.t. the input still works through the cached weight
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand(4, 3))


@pytest.mark.parametrize("cls", CLASSES)
def test_wrong_shape(cls):
    layer = cls(4)
    with pytest.raises(ShapeError, match=rf"{cls.__name__}.*\(\*, 4, 2, 2\).*\(2, 3, 2, 2\)"):
        layer(torch.randn(2, 3, 2, 2))
    with pytest.raises(ShapeError, match=rf"{cls.__name__}.*latent"):
        layer.inverse(torch.randn(2, 5))


def test_bad_num_channels():
    with pytest.raises(ValueError, match="num_channels"):
        Conv1x1(0)
