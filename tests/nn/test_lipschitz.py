"""Lipschitz-constrained networks: LipSwish and the coefficient-scaled spectral normalisation."""

import torch

from survae.nn.lipschitz import LipSwish, lipschitz_mlp, spectral_norm_coeff


def test_lipswish_is_one_lipschitz():
    act = LipSwish(init_beta_raw=3.0).double()
    x = torch.linspace(-20, 20, 20001, dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(act(x).sum(), x)
    assert d.abs().max() < 1.0 and d.abs().max() > 0.9


def test_spectral_norm_scales_only_weights_above_the_coefficient():
    torch.manual_seed(0)
    big = spectral_norm_coeff(torch.nn.Linear(6, 5).double(), coeff=0.9, n_iterations=200)
    with torch.no_grad():
        big.parametrizations.weight.original.mul_(10.0)
    big.train()
    assert torch.isclose(torch.linalg.matrix_norm(big.weight, ord=2), torch.tensor(0.9).double())
    small = torch.nn.Linear(6, 5).double()
    with torch.no_grad():
        small.weight.mul_(0.01)
    raw = small.weight.detach().clone()
    spectral_norm_coeff(small, coeff=0.9)
    torch.testing.assert_close(small.weight, raw)  # norm below coeff: unchanged


def test_mlp_is_a_contraction_and_gradients_reach_the_raw_weights():
    torch.manual_seed(0)
    net = lipschitz_mlp(3, [16], coeff=0.8, n_iterations=100).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=2.0)
    net.train()
    net(torch.zeros(1, 3, dtype=torch.float64))  # refines the power iteration
    net.eval()
    x = torch.randn(4, 3, dtype=torch.float64)
    for i in range(4):
        J = torch.autograd.functional.jacobian(net, x[i : i + 1]).reshape(3, 3)
        assert torch.linalg.matrix_norm(J, ord=2) < 0.8**2 + 1e-9
    net(x).sum().backward()
    assert net[1].parametrizations.weight.original.grad.abs().sum() > 0
