"""PermuteFlow and SortFlow (SurVAE Flows, point sets) and their point-set layers."""

import math

import pytest
import torch

from survae.architectures.point_flows import PointAffineCoupling, PointShuffle, SwapAxes
from survae.errors import ShapeError
from survae.models import build_model
from survae.registry import get
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.surjections.permutation import SortSurjection, StochasticPermutation

TINY = {"num_steps": 2, "d_model": 16, "num_heads": 2, "num_layers": 1, "dim_feedforward": 32}


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _perturb_outputs(module: torch.nn.Module, scale: float = 0.3) -> None:
    """Give zero-initialised output layers random weights so couplings are not the identity."""
    with torch.no_grad():
        for m in module.modules():
            if hasattr(m, "out") and isinstance(m.out, torch.nn.Linear):
                m.out.weight.normal_(0.0, scale)
                m.out.bias.normal_(0.0, scale)


def _points(batch: int, n: int = 50, d: int = 2) -> torch.Tensor:
    return torch.rand(batch, n, d) * 28


# ------------------------------------------------------------------------------- layers
def test_layers_registered():
    assert get("layer", "swap_axes") is SwapAxes
    assert get("layer", "point_affine_coupling") is PointAffineCoupling
    assert get("layer", "point_shuffle") is PointShuffle


def test_swap_axes_invertible_and_volume_preserving():
    layer = SwapAxes(1, 2)
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    z, ldj = assert_invertible(layer, x)
    assert z.shape == (3, 2, 5)
    torch.testing.assert_close(z[:, 1, 4], x[:, 4, 1])
    assert torch.equal(ldj, torch.zeros(3, dtype=torch.float64))
    assert_logdet_matches_autograd(layer, x)


def test_swap_axes_rejects_too_few_dims():
    with pytest.raises(ShapeError, match=r"SwapAxes.*\(4, 3\)"):
        SwapAxes(1, 2)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="two different"):
        SwapAxes(1, 1)


@pytest.mark.parametrize("reverse_mask", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_point_coupling_invertible_and_logdet(reverse_mask, mode):
    net = {
        "name": "transformer",
        "d_model": 8,
        "num_heads": 2,
        "num_layers": 1,
        "dim_feedforward": 16,
        "dropout": 0.0,
    }
    layer = PointAffineCoupling(2, 6, net=net, reverse_mask=reverse_mask).double()
    _perturb_outputs(layer)
    layer.train(mode == "train")
    x = torch.randn(3, 2, 6, dtype=torch.float64)
    z, ldj = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    kept = slice(3, 6) if reverse_mask else slice(0, 3)
    moved = slice(0, 3) if reverse_mask else slice(3, 6)
    assert torch.equal(z[:, :, kept], x[:, :, kept])
    assert not torch.allclose(z[:, :, moved], x[:, :, moved])
    assert_logdet_matches_autograd(layer, x)


def test_point_coupling_checks_shapes_and_sizes():
    layer = PointAffineCoupling(2, 6, net={"name": "transformer", "d_model": 8, "num_heads": 2})
    with pytest.raises(ShapeError, match=r"PointAffineCoupling.*\(\*, 2, 6\).*\(4, 2, 8\)"):
        layer(torch.randn(4, 2, 8))
    with pytest.raises(ShapeError, match="PointAffineCoupling"):
        layer(torch.randn(4, 12))
    with pytest.raises(ValueError, match="even number of points"):
        PointAffineCoupling(2, 5, net="transformer")
    with pytest.raises(ValueError, match="scale_fn"):
        PointAffineCoupling(2, 6, net="transformer", scale_fn="relu")


def test_point_shuffle_is_a_fixed_seeded_permutation():
    layer = PointShuffle(7, seed=3)
    x = torch.randn(2, 2, 7, dtype=torch.float64)
    z, _ = assert_invertible(layer, x)
    assert torch.equal(z, x[:, :, layer.perm])
    assert sorted(layer.perm.tolist()) == list(range(7))
    assert not torch.equal(layer.perm, torch.arange(7))
    assert torch.equal(PointShuffle(7, seed=3).perm, layer.perm)  # rebuilt from config: same
    assert not torch.equal(PointShuffle(7, seed=4).perm, layer.perm)
    assert_logdet_matches_autograd(layer, x)
    with pytest.raises(ShapeError, match="PointShuffle"):
        layer(torch.randn(2, 2, 6))


# ------------------------------------------------------------------------------- paper models
@pytest.mark.parametrize("arch,official", [("permute_flow", 6_428_992), ("sort_flow", 6_480_192)])
def test_paper_parameter_counts_match_official(arch, official):
    # Matches the official SurVAE code's totals (shared/reference-bench.md) exactly:
    # 32 × (coordinate transformer 1→2: 100,354 + point transformer 2→4: 100,548 + actnorm 4),
    # plus SortFlow's 25 × 64 positional embedding per point transformer.
    model = build_model({"architecture": arch}, (50, 2))
    assert _num_params(model) == official


@pytest.mark.parametrize("arch,official_ppll", [("permute_flow", -31.96), ("sort_flow", -34.93)])
def test_untrained_paper_models_reproduce_official_loss(arch, official_ppll):
    # The official code's untrained PPLL on uniform random points in [0, 28)² (batch 128,
    # reference-bench.md), evaluated before actnorm's data-dependent initialisation. Zero-
    # initialised coupling nets make every coupling scale by softplus(0), so the value pins
    # down the layer order, the rescaling, the transform counts and the sorting term; the
    # transformers' width does not enter, so narrow ones keep the test fast.
    narrow = {"d_model": 8, "num_heads": 2, "dim_feedforward": 8}
    model = build_model({"architecture": arch, **narrow}, (50, 2)).eval()
    with torch.no_grad():
        ppll = (model.log_prob(_points(128)) / 50).mean().item()
    assert ppll == pytest.approx(official_ppll, abs=0.05)


def test_exact_flags():
    assert build_model({"architecture": "sort_flow", **TINY}, (8, 2)).exact is True
    assert build_model({"architecture": "permute_flow", **TINY}, (8, 2)).exact is False


@pytest.mark.parametrize("arch", ["permute_flow", "sort_flow"])
def test_shapes_log_prob_and_samples(arch):
    model = build_model({"architecture": arch, **TINY}, (8, 2))
    x = _points(5, 8)
    log_prob = model.log_prob(x)  # training mode (actnorm initialises here)
    assert log_prob.shape == (5,) and torch.isfinite(log_prob).all()
    model.eval()
    z, _ = model.transform_to_latent(x)
    assert z.shape == (5, 2, 8)
    samples = model.sample(4)
    assert samples.shape == (4, 8, 2) and torch.isfinite(samples).all()


def test_sort_flow_first_layer_sorts_with_log_n_factorial():
    model = build_model({"architecture": "sort_flow", **TINY}, (8, 2)).eval()
    sort = next(t for t in model.transforms if isinstance(t, SortSurjection))
    x = torch.randn(4, 2, 8)
    z, ldj = sort(x)
    assert (z[:, 0, 1:] >= z[:, 0, :-1]).all()  # ordered by the first coordinate
    torch.testing.assert_close(ldj, torch.full((4,), -math.lgamma(9)))


def test_sort_flow_is_exactly_permutation_invariant():
    model = build_model({"architecture": "sort_flow", **TINY}, (8, 2)).double()
    _perturb_outputs(model)
    model.eval()
    x = _points(6, 8).double()
    perm = torch.randperm(8)
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x[:, perm]), model.log_prob(x))


def test_sort_flow_log_prob_is_sorted_density_minus_log_n_factorial():
    # log p(set) = log p(sorted points) − log N!: evaluating the layers after the sort on the
    # sorted points, by hand, reproduces the model's value.
    model = build_model({"architecture": "sort_flow", **TINY}, (8, 2)).double()
    _perturb_outputs(model)
    model.eval()
    x = _points(3, 8).double()
    with torch.no_grad():
        h = x.transpose(1, 2) / 28 - 0.5
        h = h.gather(2, h[:, :1].argsort(dim=2).expand_as(h))
        total = torch.full((3,), 16 * math.log(1 / 28) - math.lgamma(9), dtype=torch.float64)
        for t in list(model.transforms)[4:]:
            h, ldj = t(h)
            total = total + ldj
        expected = total + model.base_dist.log_prob(h)
        torch.testing.assert_close(model.log_prob(x), expected)


def test_permute_flow_uses_stochastic_permutations_between_steps():
    model = build_model({"architecture": "permute_flow", **TINY}, (8, 2))
    perms = [t for t in model.transforms if isinstance(t, StochasticPermutation)]
    assert len(perms) == 1 + TINY["num_steps"] and all(p.point_dim == 2 for p in perms)


def test_builders_check_data_shape():
    with pytest.raises(ValueError, match=r"\(num_points, dims\)"):
        build_model({"architecture": "sort_flow", **TINY}, (1, 28, 28))
    with pytest.raises(ValueError, match="even number of points"):
        build_model({"architecture": "permute_flow", **TINY}, (7, 2))


# ------------------------------------------------------------------------------- smoke
@pytest.mark.parametrize("arch", ["permute_flow", "sort_flow"])
def test_small_point_flow_learns_tiny_point_sets(arch):
    # Point sets of 8 points scattered around a random centre on a small horizontal segment.
    torch.manual_seed(0)
    centres = torch.rand(96, 1, 2) * 14 + 7
    offsets = torch.stack([torch.linspace(-3, 3, 8), torch.zeros(8)], dim=1)
    data = (centres + offsets + 0.3 * torch.randn(96, 8, 2)).clamp(0, 27.99)
    model = build_model({"architecture": arch, **TINY, "dropout": 0.0}, (8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_on(batch):
        return -(model.log_prob(batch) / 8).mean()

    with torch.no_grad():
        model.log_prob(data[:32])  # actnorm's data-dependent initialisation
        before = loss_on(data).item()
    for step in range(60):
        opt.zero_grad()
        loss = loss_on(data[(step % 3) * 32 : (step % 3 + 1) * 32])
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_on(data).item()
    assert after < before - 0.5, (before, after)


@pytest.mark.parametrize("arch", ["permute_flow", "sort_flow"])
def test_paper_models_use_the_official_transformer_options(arch):
    from survae.nn.mlp import SigmoidGELU
    from survae.nn.transformer import Transformer

    def nets(model):
        return [m for m in model.modules() if isinstance(m, Transformer)]

    paper = build_model({"architecture": arch, **TINY}, (8, 2))
    assert nets(paper)
    for net in nets(paper):
        for block in net.layers:
            assert isinstance(block.act, SigmoidGELU) and not block.inner_dropout
            assert torch.equal(block.linear1.bias, torch.zeros_like(block.linear1.bias))
    own = {"activation": "gelu", "init": "xavier", "inner_dropout": True}
    ours = build_model({"architecture": arch, **TINY, **own}, (8, 2))
    for net in nets(ours):
        for block in net.layers:
            assert isinstance(block.act, torch.nn.GELU) and block.inner_dropout
            assert block.linear1.bias.abs().sum() > 0  # PyTorch default, not zeroed
