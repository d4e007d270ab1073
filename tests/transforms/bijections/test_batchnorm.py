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
