"""Invertible residual blocks (i-ResNet, Residual Flows): Lipschitz bound after the spectral
normalisation, exact and estimated log-determinants, fixed-point inverse and its gradient."""

import math

import pytest
import torch

from survae import Flow, registry
from survae.distributions import StandardNormal
from survae.testing import assert_invertible, assert_logdet_matches_autograd, grid_integral
from survae.transforms.bijections.actnorm import ActNorm
from survae.transforms.bijections.residual import (
    ConvResidualBlock,
    FixedPointError,
    ResidualBlock,
    survival,
)


def _converge(block: torch.nn.Module) -> torch.nn.Module:
    """Run every normalisation's power iteration to convergence on its own weight."""
    for module in block.modules():
        plist = getattr(module, "parametrizations", None)
        if plist is not None:
            for norm in plist.weight:
                norm.power_iteration(plist.weight.original.detach(), 1000)
    return block.eval()


def _vector_block(**kw):
    torch.manual_seed(0)
    block = ResidualBlock(3, hidden=(16, 16), **kw).double()
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("original"):
                p.mul_(8.0)  # every layer's raw norm above coeff: the normalisation acts
    return _converge(block)


def test_registered():
    assert registry.get("layer", "residual_block") is ResidualBlock
    assert registry.get("layer", "conv_residual_block") is ConvResidualBlock


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_normalised_operators_have_norm_at_most_coeff_and_g_is_a_contraction(kind):
    if kind == "linear":
        block = _vector_block(logdet="exact")
        x = torch.randn(4, 3, dtype=torch.float64)
    else:
        torch.manual_seed(0)
        block = ConvResidualBlock(2, (4, 4), hidden=6, coeff=0.9, logdet="exact").double()
        with torch.no_grad():
            for name, p in block.named_parameters():
                if name.endswith("original"):
                    p.mul_(8.0)
        _converge(block)
        x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    layers = [m for m in block.net if hasattr(m, "parametrizations")]
    assert len(layers) == 3
    for layer in layers:
        norm = layer.parametrizations.weight[0]
        raw = layer.parametrizations.weight.original
        assert norm.sigma(raw.detach()) > norm.coeff  # the scaling is active
        if not norm.conv:  # dense, or a 1×1 convolution: the norm of its matrix
            true = torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2)
        else:  # the convolution as a matrix on 4×4 images, bias excluded
            n = math.prod(norm._v.shape)
            basis = torch.eye(n, dtype=torch.float64).view(n, *norm._v.shape[1:])
            cols = torch.nn.functional.conv2d(basis, layer.weight, padding=layer.padding)
            true = torch.linalg.matrix_norm(cols.reshape(n, -1), ord=2)
        assert true <= norm.coeff * (1 + 1e-6), (true, norm.coeff)
        assert true >= norm.coeff * (1 - 1e-3)
    # Lip(g) <= coeff^3 < 1: the Jacobian of g has spectral norm below 1 everywhere tried
    J = torch.autograd.functional.jacobian(lambda v: block.net(v), x)
    B, D = x.shape[0], x[0].numel()
    J = J.reshape(B, D, B, D)
    for i in range(B):
        assert (
            torch.linalg.matrix_norm(J[i, :, i], ord=2)
            < block.net[1].parametrizations.weight[0].coeff ** 3 + 1e-9
        )


def test_power_iteration_runs_in_training_and_stops_in_eval():
    block = ResidualBlock(3, hidden=(8,), n_power_iterations=1)
    norm = block.net[1].parametrizations.weight[0]
    with torch.no_grad():
        block.net[1].parametrizations.weight.original.mul_(5.0)
    u0 = norm._u.clone()
    block.eval()
    block(torch.randn(2, 3))
    assert torch.equal(norm._u, u0)
    block.train()
    block(torch.randn(2, 3))
    assert not torch.equal(norm._u, u0)


def test_exact_logdet_round_trip_and_shapes():
    block = _vector_block(logdet="exact")
    x = torch.randn(6, 3, dtype=torch.float64) * 2
    z, ldj = assert_invertible(block, x, atol=1e-8, rtol=1e-8)
    assert z.shape == x.shape and ldj.shape == (6,)
    assert ldj.abs().max() > 0.02  # a non-trivial Jacobian
    assert_logdet_matches_autograd(block, x, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("logdet", ["exact", "roulette"])
def test_logdet_under_inference_mode_as_in_validation(logdet):
    block = _vector_block(logdet=logdet)
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.manual_seed(5)
    z, ldj = block(x)
    with torch.inference_mode():
        torch.manual_seed(5)
        z2, ldj2 = block(x.clone())
        x2 = block.inverse(z2)
    torch.testing.assert_close(z2, z.detach())
    torch.testing.assert_close(ldj2, ldj.detach())
    torch.testing.assert_close(x2, x, atol=1e-5, rtol=1e-5)
    assert not ldj2.requires_grad


def test_conv_block_round_trip_and_exact_logdet():
    torch.manual_seed(1)
    block = ConvResidualBlock(2, (3, 3), hidden=5, logdet="exact").double()
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("original"):
                p.mul_(8.0)
    _converge(block)
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    z, _ = assert_invertible(block, x, atol=1e-8, rtol=1e-8)
    assert z.shape == x.shape
    assert_logdet_matches_autograd(block, x, atol=1e-10, rtol=1e-10)


def _draws(block: ResidualBlock, x: torch.Tensor, calls: int, copies: int) -> torch.Tensor:
    """``calls`` independent estimates (each the mean over ``copies`` probe vectors)."""
    with torch.no_grad():
        return torch.stack([block(x.expand(copies, -1))[1].mean() for _ in range(calls)])


@pytest.mark.parametrize("logdet", ["roulette", "series"])
def test_estimators_match_the_exact_logdet(logdet):
    """The Russian-roulette estimate is unbiased: its mean over draws lies within 5 standard
    errors of the exact value. The truncated series (n = 12 terms at Lip(g) ≤ 0.98³) has a
    bias below 0.94^13/13 ≈ 0.034 times the dimension."""
    torch.manual_seed(0)
    block = _vector_block(logdet="exact")
    x = torch.randn(1, 3, dtype=torch.float64)
    exact = block(x)[1].item()
    block.eval_logdet, block.eval_exact_terms, block.n_terms = logdet, 1, 12
    draws = _draws(block, x, calls=200, copies=64)
    mean, se = draws.mean().item(), draws.std().item() / math.sqrt(len(draws))
    if logdet == "roulette":
        assert abs(mean - exact) < 5 * se + 1e-12, (mean, exact, se)
        assert se < 0.05 * max(abs(exact), 0.1)
    else:
        assert abs(mean - exact) < 5 * se + 3 * 0.034, (mean, exact, se)


def test_survival_function_of_the_term_counts():
    assert survival(2, 2, "poisson", 2.0) == 1.0
    # P(N >= 1) for N ~ Poisson(2): 1 - e^-2; P(N >= 3) = 1 - e^-2 (1 + 2 + 2)
    assert math.isclose(survival(3, 2, "poisson", 2.0), 1 - math.exp(-2), rel_tol=1e-6)
    assert math.isclose(survival(5, 2, "poisson", 2.0), 1 - 5 * math.exp(-2), rel_tol=1e-6)
    assert math.isclose(survival(4, 1, "geometric", 0.5), 0.125)


def test_neumann_gradient_is_unbiased():
    """The mean of the Neumann-series gradient over draws matches the gradient of the exact
    log-determinant (every parameter within 5 standard errors)."""
    torch.manual_seed(0)
    block = _vector_block(logdet="exact")
    block.n_exact_terms = 1
    # the last bias does not change the Jacobian
    params = [
        p for n, p in block.named_parameters() if not n.endswith(f"{len(block.net) - 1}.bias")
    ]
    x = torch.randn(1, 3, dtype=torch.float64)
    exact = torch.autograd.grad(block(x)[1].sum(), params)
    exact = torch.cat([g.flatten() for g in exact])
    block.eval_logdet = "roulette"
    block.neumann_grad = True
    # eval mode: fixed weights; the roulette draws as in training (n_exact_terms=1)
    block.eval_exact_terms = 1
    grads = []
    for _ in range(150):
        gs = torch.autograd.grad(block(x.expand(32, -1))[1].mean(), params)
        grads.append(torch.cat([g.flatten() for g in gs]))
    grads = torch.stack(grads)
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(len(grads))
    z = (mean - exact).abs() / (se + 1e-9 * exact.abs().max())
    assert z.max() < 5.5, z.max()
    assert (mean - exact).norm() < 0.1 * exact.norm()


def test_backprop_through_the_series_gives_the_series_gradient():
    torch.manual_seed(0)
    block = _vector_block(logdet="exact")
    block.eval_logdet, block.n_terms, block.neumann_grad = "series", 30, False
    x = torch.randn(1, 3, dtype=torch.float64)
    torch.manual_seed(3)
    est = block(x.expand(2000, -1))[1].mean()
    (g_est,) = torch.autograd.grad(est, [block.net[1].parametrizations.weight.original])
    block.eval_logdet = "exact"
    (g_ref,) = torch.autograd.grad(
        block(x)[1].sum(), [block.net[1].parametrizations.weight.original]
    )
    assert (g_est - g_ref).norm() < 0.15 * g_ref.norm()


def test_inverse_carries_the_implicit_gradient():
    """``F(F⁻¹(z; θ); θ) = z`` for every θ: the round trip has zero gradient in θ, while the
    inverse itself depends on θ and z."""
    block = _vector_block(logdet="exact")
    z = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    x, _ = block.inverse_with_ldj(z)
    w = torch.randn_like(z)
    params = list(block.parameters())
    round_trip = (block(x)[0] * w).sum()
    grads = torch.autograd.grad(round_trip, [z, *params], allow_unused=True, retain_graph=True)
    torch.testing.assert_close(grads[0], w, atol=1e-6, rtol=1e-6)
    assert max(g.abs().max().item() for g in grads[1:] if g is not None) < 1e-6
    # d x / d z = (I + J)^-1: compare with the autograd Jacobian inverse at one example
    J = torch.autograd.functional.jacobian(lambda v: block(v)[0], x[:1].detach()).view(3, 3)
    (gz,) = torch.autograd.grad((x[:1] * w[:1]).sum(), z)
    torch.testing.assert_close(gz[0], torch.linalg.solve(J.T, w[0]), atol=1e-6, rtol=1e-6)


def test_fixed_point_that_does_not_converge_is_named():
    block = _vector_block(logdet="exact", atol=1e-14, max_iterations=2)
    with pytest.raises(FixedPointError, match="ResidualBlock.*did not converge in 2"):
        block.inverse(torch.randn(2, 3, dtype=torch.float64) * 3)


def test_two_d_flow_with_actnorm_integrates_to_one_and_samples_with_log_prob():
    torch.manual_seed(0)
    layers = []
    for _ in range(3):
        block = ResidualBlock(2, hidden=(16, 16), logdet="roulette", eval_logdet="exact")
        with torch.no_grad():
            for name, p in block.named_parameters():
                if name.endswith("original"):
                    p.mul_(6.0)
        layers += [block, ActNorm(2)]
    flow = Flow(StandardNormal(2), layers).double()
    flow.train()
    flow.log_prob(torch.randn(64, 2, dtype=torch.float64) * 2)  # ActNorm data init
    for block in layers[::2]:
        _converge(block)
    flow.eval()
    assert flow.exact
    total = grid_integral(flow.log_prob, -12.0, 12.0, n=300)
    assert math.isclose(total, 1.0, abs_tol=5e-3), total
    x, log_p = flow.sample_with_log_prob(16)
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-7, rtol=1e-7)
    flow.train()
    assert flow.exact  # what evaluation reports (eval_logdet), also while training


def test_training_step_runs_with_each_estimator():
    for logdet in ("roulette", "series"):
        torch.manual_seed(0)
        flow = Flow(StandardNormal(3), [ResidualBlock(3, hidden=(8,), logdet=logdet)])
        loss = -flow.log_prob(torch.randn(8, 3)).mean()
        loss.backward()
        grads = [p.grad for p in flow.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="ResidualBlock: unknown logdet"):
        ResidualBlock(2, logdet="taylor")
    with pytest.raises(ValueError, match="geometric rate"):
        ResidualBlock(2, distribution="geometric", rate=2.0)
    with pytest.raises(ValueError, match="image_size"):
        ConvResidualBlock(2, (4,))
    with pytest.raises(ValueError, match="odd"):
        ConvResidualBlock(2, (4, 4), kernels=(3, 2, 3))
