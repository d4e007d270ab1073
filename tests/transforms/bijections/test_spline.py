"""Rational-quadratic splines (NSF): the elementwise map, its coupling and autoregressive layers."""

import math

import pytest
import torch

from survae import Flow, registry
from survae.distributions import StandardNormal
from survae.errors import ShapeError
from survae.nn.resmlp import ResidualMLP
from survae.testing import assert_invertible, assert_logdet_matches_autograd, grid_integral
from survae.transforms.bijections.spline import (
    RQSplineAutoregressive,
    RQSplineCoupling,
    rational_quadratic_spline,
)

K = 5
MLP_RANDOM = {"name": "mlp", "hidden": [16], "zero_init_output": False}


def _params(shape, k=K, scale=1.5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, k, generator=g, dtype=dtype) * scale
    h = torch.randn(*shape, k, generator=g, dtype=dtype) * scale
    d = torch.randn(*shape, k - 1, generator=g, dtype=dtype) * scale
    return w, h, d


def _randomize(module: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


# ------------------------------------------------------------------ the elementwise spline
def test_round_trip_and_inverse_logdet():
    x = torch.linspace(-4, 4, 401, dtype=torch.float64).view(1, -1).expand(3, -1)
    w, h, d = _params(x.shape)
    y, ld = rational_quadratic_spline(x, w, h, d, tail_bound=3.0)
    x_rec, ld_inv = rational_quadratic_spline(y, w, h, d, inverse=True, tail_bound=3.0)
    torch.testing.assert_close(x_rec, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(ld_inv, -ld, atol=1e-9, rtol=0)


def test_logdet_is_the_derivative():
    x = (torch.rand(4, 50, dtype=torch.float64) * 6 - 3).requires_grad_()
    w, h, d = _params(x.shape, seed=3)
    y, ld = rational_quadratic_spline(x, w, h, d)
    (grad,) = torch.autograd.grad(y.sum(), x)  # elementwise map: the Jacobian is diagonal
    torch.testing.assert_close(ld, grad.log(), atol=1e-10, rtol=1e-10)


def test_monotone_and_maps_the_box_onto_itself():
    x = torch.linspace(-3, 3, 2001, dtype=torch.float64).view(1, -1).expand(4, -1)
    w, h, d = _params(x.shape[:1], scale=3.0, seed=5)
    w, h, d = (t.unsqueeze(1).expand(-1, x.shape[1], -1) for t in (w, h, d))
    y, ld = rational_quadratic_spline(x, w, h, d, tail_bound=3.0)
    assert (y.diff(dim=1) > 0).all()
    assert torch.isfinite(ld).all()
    torch.testing.assert_close(y[:, 0], torch.full((4,), -3.0, dtype=torch.float64))
    torch.testing.assert_close(y[:, -1], torch.full((4,), 3.0, dtype=torch.float64))


def test_linear_tails_are_the_identity():
    x = torch.tensor([[-50.0, -3.0001, 3.0001, 7.0, 1e4]], dtype=torch.float64)
    w, h, d = _params(x.shape, seed=2)
    y, ld = rational_quadratic_spline(x, w, h, d, tail_bound=3.0)
    assert torch.equal(y, x)
    assert torch.equal(ld, torch.zeros_like(ld))
    x_rec, ld_inv = rational_quadratic_spline(x, w, h, d, inverse=True, tail_bound=3.0)
    assert torch.equal(x_rec, x) and torch.equal(ld_inv, torch.zeros_like(ld))


def test_continuous_with_slope_one_at_the_tail_bound():
    B = 2.0
    eps = 1e-10
    x = torch.tensor([[-B - eps, -B + eps, B - eps, B + eps]], dtype=torch.float64)
    w, h, d = _params((1, 1), scale=2.0, seed=7)
    w, h, d = (t.expand(1, 4, -1) for t in (w, h, d))
    y, ld = rational_quadratic_spline(x, w, h, d, tail_bound=B)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)  # value continuous at ±B
    torch.testing.assert_close(ld, torch.zeros_like(ld), atol=1e-6, rtol=0)  # slope 1 at ±B


def test_bin_edges_value_and_derivative_continuous():
    w, h, d = _params((1,), k=4, scale=2.0, seed=11)
    B = 3.0
    K4 = 4
    widths = 1e-3 + (1 - 1e-3 * K4) * torch.softmax(w, -1)
    edges = (torch.cumsum(widths, -1)[..., :-1] * 2 * B - B).view(-1)
    eps = 1e-11  # one-sided values converge linearly in eps when the map is C¹
    x = torch.stack([edges - eps, edges, edges + eps], dim=1).view(1, -1)
    params = [t.unsqueeze(1).expand(1, x.shape[1], -1) for t in (w, h, d)]
    y, ld = rational_quadratic_spline(x, *params, tail_bound=B)
    y, ld = y.view(-1, 3), ld.view(-1, 3)
    torch.testing.assert_close(y[:, 0], y[:, 2], atol=1e-6, rtol=0)
    torch.testing.assert_close(ld[:, 0], ld[:, 2], atol=1e-6, rtol=0)
    x_rec, _ = rational_quadratic_spline(y.reshape(1, -1), *params, inverse=True, tail_bound=B)
    torch.testing.assert_close(x_rec, x, atol=1e-9, rtol=0)


def test_zero_parameters_are_the_identity():
    x = torch.randn(5, 7) * 2
    zeros = torch.zeros(5, 7, K)
    y, ld = rational_quadratic_spline(x, zeros, zeros, zeros[..., 1:])
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ld, torch.zeros_like(ld))


def test_float32_agrees_with_float64():
    x64 = torch.rand(6, 40, dtype=torch.float64) * 7 - 3.5
    p64 = _params(x64.shape, scale=0.7, seed=4)  # slopes of order one: a well-posed inverse
    y64, ld64 = rational_quadratic_spline(x64, *p64)
    y32, ld32 = rational_quadratic_spline(x64.float(), *(p.float() for p in p64))
    torch.testing.assert_close(y32.double(), y64, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ld32.double(), ld64, atol=1e-4, rtol=1e-4)
    back32, _ = rational_quadratic_spline(y32, *(p.float() for p in p64), inverse=True)
    torch.testing.assert_close(back32.double(), x64, atol=1e-4, rtol=1e-4)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="min_bin_width"):
        RQSplineCoupling(4, "mlp", num_bins=8, min_bin_width=0.2)
    with pytest.raises(ValueError, match="tail_bound"):
        RQSplineAutoregressive(3, hidden=(8,), tail_bound=0.0)
    with pytest.raises(ValueError, match="num_bins"):
        RQSplineAutoregressive(3, hidden=(8,), num_bins=0)


# ------------------------------------------------------------------ layers
def test_registered():
    assert registry.get("layer", "rq_spline_coupling") is RQSplineCoupling
    assert registry.get("layer", "rq_spline_autoregressive") is RQSplineAutoregressive
    assert registry.get("network", "residual_mlp") is ResidualMLP


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
@pytest.mark.parametrize("reverse_mask", [False, True])
def test_coupling_vector_round_trip_and_logdet(mask, reverse_mask):
    layer = RQSplineCoupling(
        4, MLP_RANDOM, num_bins=K, tail_bound=2.0, mask=mask, reverse_mask=reverse_mask
    ).double()
    x = torch.randn(3, 4, dtype=torch.float64) * 1.5
    x[0, 0] = 5.0  # one element in the tails
    z, _ = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    assert not torch.allclose(z, x)
    assert_logdet_matches_autograd(layer, x)


def test_coupling_image_round_trip_and_logdet():
    net = torch.nn.Conv2d(2, 2 * (3 * K - 1), 3, padding=1).double()
    layer = RQSplineCoupling(4, net, num_bins=K, tail_bound=2.0).double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    assert_logdet_matches_autograd(layer, x)
    cb_net = torch.nn.Conv2d(1, 3 * K - 1, 3, padding=1).double()
    cb = RQSplineCoupling(1, cb_net, num_bins=K, mask="checkerboard").double()
    x1 = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    z, _ = assert_invertible(cb, x1, atol=1e-9, rtol=1e-9)
    assert torch.equal(z[:, :, 0, 0], x1[:, :, 0, 0])  # (0, 0) conditions
    assert_logdet_matches_autograd(cb, x1)


def test_coupling_with_residual_mlp_and_context():
    net = {"name": "residual_mlp", "hidden": 16, "num_blocks": 2, "zero_init_output": False}
    layer = RQSplineCoupling(3, net, num_bins=4, split_sizes=(1, 2), context_channels=2).double()
    _randomize(layer.net)
    x = torch.randn(4, 3, dtype=torch.float64)
    c = torch.randn(4, 2, dtype=torch.float64)
    z, _ = assert_invertible(layer, x, c, atol=1e-9, rtol=1e-9)
    assert_logdet_matches_autograd(layer, x, c)
    z_other, _ = layer(x, c + 1.0)
    assert not torch.allclose(z, z_other)  # the context matters
    with pytest.raises(ValueError, match="context"):
        layer(x)


def test_coupling_identity_at_init():
    layer = RQSplineCoupling(6, {"name": "residual_mlp", "hidden": 8}, num_bins=8)
    x = torch.randn(5, 6) * 2
    z, ldj = layer(x)
    torch.testing.assert_close(z, x)
    torch.testing.assert_close(ldj, torch.zeros(5))


def test_coupling_network_output_checked():
    layer = RQSplineCoupling(4, torch.nn.Linear(2, 5), num_bins=K)
    with pytest.raises(ShapeError, match="network output"):
        layer(torch.randn(2, 4))


@pytest.mark.parametrize("kwargs", [{}, {"random_order": True, "seed": 3}, {"residual": True}])
def test_autoregressive_round_trip_and_logdet(kwargs):
    layer = _randomize(RQSplineAutoregressive(4, hidden=(12, 12), num_bins=K, **kwargs)).double()
    x = torch.randn(5, 4, dtype=torch.float64) * 1.5
    z, _ = assert_invertible(layer, x, atol=1e-8, rtol=1e-8)
    assert (z - x).abs().max() > 1e-2
    assert_logdet_matches_autograd(layer, x)


def test_autoregressive_jacobian_is_triangular_in_the_order():
    layer = _randomize(RQSplineAutoregressive(4, hidden=(16,), num_bins=K)).double()
    x = torch.randn(1, 4, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x).view(4, 4)
    assert torch.all(J.triu(1) == 0)
    assert (J.diagonal() > 0).all()


def test_autoregressive_context():
    layer = _randomize(RQSplineAutoregressive(3, hidden=(16,), num_bins=4, context_features=2))
    layer = layer.double()
    x = torch.randn(4, 3, dtype=torch.float64)
    c = torch.randn(4, 2, dtype=torch.float64)
    assert_invertible(layer, x, c, atol=1e-8, rtol=1e-8)
    assert_logdet_matches_autograd(layer, x, c)
    with pytest.raises(ValueError, match="context"):
        layer(x)
    with pytest.raises(ShapeError):
        layer(x, torch.randn(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["coupling", "autoregressive"])
def test_two_d_flow_density_integrates_to_one(kind):
    torch.manual_seed(0)
    if kind == "coupling":
        layers = [
            RQSplineCoupling(2, MLP_RANDOM, num_bins=6, tail_bound=2.5),
            RQSplineCoupling(2, MLP_RANDOM, num_bins=6, tail_bound=2.5, reverse_mask=True),
        ]
    else:
        layers = [_randomize(RQSplineAutoregressive(2, hidden=(16,), num_bins=6))]
    flow = Flow(StandardNormal(2), layers).double()
    total = grid_integral(flow.log_prob, -9.0, 9.0, n=300)
    assert math.isclose(total, 1.0, abs_tol=2e-3), total
    flow = flow.float()
    x, log_p = flow.sample_with_log_prob(64)
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ NSF's residual MADE
def test_residual_made_is_registered_and_autoregressive():
    from survae.nn.resmade import ResidualMADE

    assert registry.get("network", "residual_made") is ResidualMADE
    D, P = 5, 3
    net = _randomize(ResidualMADE(D, D * P, hidden=12, num_blocks=2, reverse_order=True)).double()
    x = torch.randn(1, D, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda v: net(v), x).view(D, P, D)
    order = net.order
    for i in range(D):
        allowed = order < order[i]  # output of dimension i sees only earlier dimensions
        assert torch.all(J[i][:, ~allowed] == 0)
        if allowed.any():
            assert J[i][:, allowed].abs().sum() > 0


def test_residual_made_layout_as_nsf():
    """Input layer, num_blocks blocks of two masked layers, output layer (NSF's ResMADE)."""
    from survae.nn.resmade import ResidualMADE

    D, out, h = 6, 6 * 4, 10
    for blocks in (0, 1, 3):
        net = ResidualMADE(D, out, hidden=h, num_blocks=blocks)
        n_params = sum(p.numel() for p in net.parameters())
        assert n_params == (D * h + h) + blocks * 2 * (h * h + h) + (h * out + out)
        torch.testing.assert_close(net(torch.randn(3, D)), torch.zeros(3, out))  # zero output


def test_residual_made_dropout_only_in_training():
    from survae.nn.resmade import ResidualMADE

    net = _randomize(ResidualMADE(4, 8, hidden=32, num_blocks=2, dropout=0.5))
    x = torch.randn(16, 4)
    net.train()
    torch.manual_seed(0)
    a = net(x)
    b = net(x)
    assert not torch.allclose(a, b)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    no_drop = _randomize(ResidualMADE(4, 8, hidden=32, num_blocks=2, dropout=0.0)).train()
    torch.testing.assert_close(no_drop(x), no_drop.eval()(x))
    with pytest.raises(ValueError, match="dropout"):
        ResidualMADE(4, 8, dropout=1.0)


def test_residual_made_context_gates_the_blocks():
    from survae.nn.resmade import ResidualMADE

    net = _randomize(ResidualMADE(3, 6, hidden=8, num_blocks=1, context_features=2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    c = torch.randn(4, 2, dtype=torch.float64)
    assert not torch.allclose(net(x, c), net(x, c + 1))
    with pytest.raises(ValueError, match="context"):
        net(x)


def test_autoregressive_spline_with_dropout_is_exact_in_eval():
    layer = RQSplineAutoregressive(4, hidden=(12, 12, 12), num_bins=K, residual=True, dropout=0.2)
    layer = _randomize(layer).double().eval()
    assert len(layer.made.blocks) == 2
    x = torch.randn(5, 4, dtype=torch.float64)
    assert_invertible(layer, x, atol=1e-8, rtol=1e-8)
    assert_logdet_matches_autograd(layer, x)
    with pytest.raises(ValueError, match="residual=True"):
        RQSplineAutoregressive(4, hidden=(12,), dropout=0.2)
    with pytest.raises(ValueError, match="equal hidden"):
        RQSplineAutoregressive(4, hidden=(12, 8), residual=True)


# ------------------------------------------------- unconditional spline on the identity half
@pytest.mark.parametrize("reverse_mask", [False, True])
def test_coupling_unconditional_identity_round_trip_and_logdet(reverse_mask):
    layer = RQSplineCoupling(
        5, MLP_RANDOM, num_bins=K, tail_bound=2.0, split_sizes=(2, 3),
        reverse_mask=reverse_mask, unconditional_identity=True,
    ).double()  # fmt: skip
    _randomize(layer)
    n_cond = 3 if reverse_mask else 2
    assert layer.identity_params.shape == (n_cond, 3 * K - 1)
    x = torch.randn(4, 5, dtype=torch.float64) * 1.5
    z, _ = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    cond = slice(2, 5) if reverse_mask else slice(0, 2)
    assert not torch.allclose(z[:, cond], x[:, cond])  # the identity half is splined too
    assert_logdet_matches_autograd(layer, x)
    # the coupling network reads the untransformed half: same map as without the option
    plain = RQSplineCoupling(
        5, MLP_RANDOM, num_bins=K, tail_bound=2.0, split_sizes=(2, 3), reverse_mask=reverse_mask
    ).double()
    plain.net.load_state_dict(layer.net.state_dict())
    z_plain, _ = plain(x)
    trans = slice(0, 2) if reverse_mask else slice(2, 5)
    torch.testing.assert_close(z[:, trans], z_plain[:, trans])


def test_coupling_unconditional_identity_starts_as_identity_and_needs_channel_mask():
    layer = RQSplineCoupling(4, {"name": "residual_mlp", "hidden": 8}, unconditional_identity=True)
    x = torch.randn(3, 4)
    z, ldj = layer(x)
    torch.testing.assert_close(z, x)
    torch.testing.assert_close(ldj, torch.zeros(3))
    with pytest.raises(ValueError, match="mask='channel'"):
        RQSplineCoupling(4, MLP_RANDOM, mask="checkerboard", unconditional_identity=True)


# ------------------------------------------------------------------ speed benchmark workloads
@pytest.mark.slow
def test_spline_benchmark_workloads(tmp_path):
    """``benchmark.py --workloads splines`` names experiment configs with spline and affine
    layers in pairs; the spline autoregressive one measures on synthetic tabular data."""
    from pathlib import Path

    from survae.bench import benchmark, workloads

    configs = Path(workloads.CONFIG_DIR) / "experiment"
    assert all((configs / f"{n}.yaml").is_file() for n in workloads.SPLINE_WORKLOADS)
    assert any(n.startswith("nsf_ar_") for n in workloads.SPLINE_WORKLOADS)
    assert any(n.startswith("maf_") for n in workloads.SPLINE_WORKLOADS)
    threads = torch.get_num_threads()
    try:
        report = benchmark.main(
            ["--workloads", "nsf_ar_power", "--in-process", "--quiet", "--threads", "1",
             "--steps", "1", "--warmup", "1", "--batch", "8", "--device", "cpu",
             "--override", "model.num_steps=2", "--override", "model.hidden=16"]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    result = report["nsf_ar_power"]
    assert "error" not in result, result.get("error")
    assert result["batch"] == 8 and result["params"] > 0
    assert result["train_ms_median"] > 0 and result["sample_ms"] > 0
    assert math.isfinite(result["loss_value"])
