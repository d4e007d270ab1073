"""BatchNormBijection: statistics, running averages, invertibility, ldj."""

import pytest
import torch

from survae import registry
from survae.errors import ShapeError
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.bijections.batchnorm import BatchNormBijection

SHAPES = [(16, 3), (4, 3, 5), (4, 3, 4, 4)]


def _randomise(layer):
    with torch.no_grad():
        layer.log_gamma.normal_(0, 0.5)
        layer.beta.normal_(0, 1)
        layer.running_mean.normal_(0, 1)
        layer.running_var.uniform_(0.5, 2.0)
    return layer


def test_registered():
    assert registry.get("layer", "batch_norm") is BatchNormBijection


@pytest.mark.parametrize("shape", SHAPES)
def test_training_normalises_batch_and_updates_running_stats(shape):
    layer = BatchNormBijection(3, momentum=0.2)
    view = (1, 3, *[1] * (len(shape) - 2))
    x = torch.randn(shape) * torch.tensor([2.0, 0.5, 3.0]).view(view) + torch.tensor(
        [1.0, -4.0, 0.3]
    ).view(view)
    z, ldj = layer(x)
    dims = [0, *range(2, len(shape))]
    torch.testing.assert_close(z.mean(dims), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dims, correction=0), torch.ones(3), atol=1e-3, rtol=0)
    n = x.numel() // 3
    var = x.var(dims, correction=0)
    torch.testing.assert_close(layer.running_mean, 0.2 * x.mean(dims))
    torch.testing.assert_close(layer.running_var, 0.8 + 0.2 * var * n / (n - 1))
    spatial = n // shape[0]
    torch.testing.assert_close(ldj, (-0.5 * spatial * torch.log(var + 1e-5).sum()).expand(shape[0]))


@pytest.mark.parametrize("shape", [(3, 3), (2, 3, 4), (2, 3, 4, 4)])
def test_invertible_train_and_eval(shape):
    layer = _randomise(BatchNormBijection(3)).double()
    x = torch.randn(shape, dtype=torch.float64) * 2 + 1
    layer.train()
    running = layer.running_mean.clone()
    assert_invertible(layer, x, atol=1e-9, rtol=1e-9)  # inverse uses the last batch stats
    assert not torch.equal(layer.running_mean, running)
    layer.eval()
    frozen = layer.running_mean.clone()
    assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    assert torch.equal(layer.running_mean, frozen)  # eval does not update


@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 3), (2, 4, 4, 4)])
def test_logdet_matches_autograd_in_eval(shape):
    layer = _randomise(BatchNormBijection(4)).double().eval()
    x = torch.randn(shape, dtype=torch.float64)
    assert_logdet_matches_autograd(layer, x)
    _, ldj = layer(x)
    assert ldj.abs().min() > 1e-3


def test_eval_uses_running_stats():
    layer = _randomise(BatchNormBijection(2)).eval()
    x = torch.randn(5, 2)
    z, _ = layer(x)
    ref = (x - layer.running_mean) / torch.sqrt(layer.running_var + 1e-5)
    torch.testing.assert_close(z, ref * layer.log_gamma.exp() + layer.beta)


def test_training_inverse_without_batch_falls_back_to_running():
    layer = _randomise(BatchNormBijection(2))
    z = torch.randn(4, 2)
    x_train = layer.inverse(z)
    x_eval = layer.eval().inverse(z)
    torch.testing.assert_close(x_train, x_eval)


def test_gradients_reach_parameters():
    layer = BatchNormBijection(3)
    z, ldj = layer(torch.randn(8, 3, 2, 2))
    (z.square().sum() - ldj.sum()).backward()
    assert layer.log_gamma.grad is not None and layer.beta.grad is not None


def test_errors():
    layer = BatchNormBijection(3)
    with pytest.raises(ShapeError, match=r"BatchNormBijection.*\(\*, 3\).*\(4, 2\)"):
        layer(torch.randn(4, 2))
    with pytest.raises(ValueError, match="momentum"):
        BatchNormBijection(3, momentum=0.0)


def _reference_forward(layer, x):
    """The layer's definition written out: batch statistics, running averages, affine map."""
    dims = [0, *range(2, x.dim())]
    view = (1, -1, *[1] * (x.dim() - 2))
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    n = x.numel() // x.shape[1]
    with torch.no_grad():
        m = layer.momentum
        layer.running_mean.mul_(1 - m).add_(m * mean)
        layer.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
    z = (x - mean.view(view)) / torch.sqrt(var.view(view) + layer.eps)
    z = z * layer.log_gamma.exp().view(view) + layer.beta.view(view)
    ldj = (layer.log_gamma - 0.5 * torch.log(var + layer.eps)).sum() * (n // x.shape[0])
    return z, ldj.expand(x.shape[0])


@pytest.mark.parametrize("shape", SHAPES)
def test_fused_training_pass_equals_the_definition(shape):
    """The fused training pass gives the definition's output, log-determinant, gradients
    (through the batch statistics too) and running averages."""
    torch.manual_seed(0)
    fused = _randomise(BatchNormBijection(3, momentum=0.3)).double()
    reference = BatchNormBijection(3, momentum=0.3).double()
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(shape, dtype=torch.float64) * 3 + 2
    weights = torch.randn(shape, dtype=torch.float64)
    results = []
    for layer, fn in ((fused, fused), (reference, lambda v: _reference_forward(reference, v))):
        xi = x.clone().requires_grad_(True)
        z, ldj = fn(xi)
        loss = (z * weights).sum() + (ldj * torch.arange(1.0, shape[0] + 1)).sum()
        grads = torch.autograd.grad(loss, [xi, layer.log_gamma, layer.beta])
        results.append([z, ldj, *grads, layer.running_mean, layer.running_var])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    inv, _ = fused.inverse_with_ldj(results[0][0].detach())
    torch.testing.assert_close(inv, x, rtol=1e-10, atol=1e-10)


def test_single_value_per_channel_still_works_in_training():
    layer = BatchNormBijection(3)
    z, ldj = layer(torch.randn(1, 3))
    assert torch.isfinite(z).all() and torch.isfinite(ldj).all()
