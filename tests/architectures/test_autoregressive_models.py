"""MAF and RealNVP (the MAF paper's models) on vectors and on images in logit space."""

import pytest
import torch

from survae.architectures.autoregressive import Flatten, ScaleShiftMLP
from survae.errors import ShapeError
from survae.models import build_model
from survae.nn.build import build_network
from survae.registry import get
from survae.testing import assert_invertible, assert_logdet_matches_autograd, grid_integral
from survae.transforms import Sequential
from survae.transforms.bijections.autoregressive import MaskedAffineAutoregressive
from survae.transforms.bijections.batchnorm import BatchNormBijection


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _perturb(model: torch.nn.Module, scale: float = 0.2) -> None:
    """Random weights for the zero-initialised output layers, so layers are not the identity."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "output_layer" in name or name.endswith(
                ("2.weight", "2.bias", "4.weight", "4.bias")
            ):
                p.normal_(0.0, scale)


def _gaussian_mixture(n: int, dim: int = 2) -> torch.Tensor:
    centres = torch.tensor([[-2.0] * dim, [2.0] * dim])
    return centres[torch.randint(0, 2, (n,))] + 0.4 * torch.randn(n, dim)


# ------------------------------------------------------------------------------- blocks
def test_blocks_registered():
    assert get("layer", "flatten") is Flatten
    assert get("network", "scale_shift_mlp") is ScaleShiftMLP
    assert get("architecture", "maf").__name__ == "maf"
    assert get("architecture", "realnvp_tabular").__name__ == "realnvp_tabular"


def test_flatten_round_trip_and_shape_errors():
    layer = Flatten((1, 3, 4))
    x = torch.randn(2, 1, 3, 4, dtype=torch.float64)
    z, ldj = assert_invertible(layer, x)
    assert z.shape == (2, 12) and torch.equal(z[1], x[1].reshape(-1))
    assert torch.equal(ldj, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"Flatten.*\(\*, 1, 3, 4\).*\(2, 1, 4, 4\)"):
        layer(torch.randn(2, 1, 4, 4))
    with pytest.raises(ShapeError, match=r"Flatten.*\(\*, 12\).*\(2, 13\)"):
        layer.inverse(torch.randn(2, 13))


def test_scale_shift_mlp_has_separate_nets_and_layout():
    net = build_network({"name": "scale_shift_mlp", "hidden": [8]}, 3, 6)
    assert isinstance(net.scale_net[1], torch.nn.Tanh)
    assert isinstance(net.shift_net[1], torch.nn.ReLU)
    _perturb(net)
    x = torch.randn(5, 3)
    out = net(x)
    assert out.shape == (5, 6)
    torch.testing.assert_close(out[:, :3], net.shift_net(x))
    torch.testing.assert_close(out[:, 3:], net.scale_net(x))
    with pytest.raises(ValueError, match="even"):
        ScaleShiftMLP(3, 5)


# ------------------------------------------------------------------------------- paper models
def test_maf_parameter_counts():
    # MADE d→h→h→2d with full (masked) weight matrices + batch norm (2d) per layer; the paper
    # gives no parameter counts, so these are checked against the formula.
    def maf_count(d, h, k):
        return k * ((d * h + h) + (h * h + h) + (h * 2 * d + 2 * d) + 2 * d)

    power = build_model({"architecture": "maf", "num_layers": 5, "hidden": [100, 100]}, (6,))
    assert _num_params(power) == maf_count(6, 100, 5) == 60_120
    mnist = build_model({"architecture": "maf", "hidden": [1024, 1024]}, (1, 28, 28), 256)
    assert _num_params(mnist) == maf_count(784, 1024, 5) == 17_311_040


def test_realnvp_parameter_count():
    # RealNVP (10) on POWER: per coupling two MLPs 6→100→100→6, plus batch norm (12).
    mlp = (6 * 100 + 100) + (100 * 100 + 100) + (100 * 6 + 6)
    model = build_model({"architecture": "realnvp_tabular"}, (6,))
    assert _num_params(model) == 10 * (2 * mlp + 12) == 228_240


def test_maf_structure_reverses_order_and_batch_normalises():
    model = build_model({"architecture": "maf", "num_layers": 4, "hidden": [8, 8]}, (5,))
    mades = [t for t in model.transforms if isinstance(t, MaskedAffineAutoregressive)]
    bns = [t for t in model.transforms if isinstance(t, BatchNormBijection)]
    assert len(mades) == len(bns) == 4
    assert isinstance(model.transforms[1], BatchNormBijection)  # after every MADE
    orders = [m.made.order.tolist() for m in mades]
    assert orders[0] == [1, 2, 3, 4, 5] and orders[1] == [5, 4, 3, 2, 1]
    assert orders[2] == orders[0] and orders[3] == orders[1]


def test_realnvp_masks_alternate_starting_with_odd_features_fixed():
    model = build_model(
        {"architecture": "realnvp_tabular", "num_couplings": 2, "hidden": [8]}, (4,)
    )
    _perturb(model)
    model.eval()
    x = torch.randn(3, 4)
    first = model.transforms[0]
    z, _ = first(x)
    assert torch.equal(z[:, 1::2], x[:, 1::2])  # MAF's first mask keeps the odd features
    assert not torch.allclose(z[:, 0::2], x[:, 0::2])
    z2, _ = model.transforms[2](x)
    assert torch.equal(z2[:, 0::2], x[:, 0::2])


def test_exact_flags():
    assert build_model({"architecture": "maf", "hidden": [8]}, (3,)).exact is True
    assert build_model({"architecture": "realnvp_tabular", "hidden": [8]}, (3,)).exact is True
    image = build_model({"architecture": "maf", "hidden": [8], "num_layers": 1}, (1, 2, 2), 17)
    assert image.exact is False  # uniform dequantization: a bound on the discrete likelihood


@pytest.mark.parametrize("arch", ["maf", "realnvp_tabular"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_whole_flow_invertible_with_matching_logdet(arch, mode):
    hp = {"num_layers": 3} if arch == "maf" else {"num_couplings": 3}
    model = build_model({"architecture": arch, "hidden": [16, 16], **hp}, (3,)).double()
    _perturb(model)
    stack = Sequential(list(model.transforms))
    x = torch.randn(6, 3, dtype=torch.float64)
    stack.train()
    stack(x)  # a training batch sets batch-norm statistics
    stack.train(mode == "train")
    assert_invertible(stack, x, atol=1e-8, rtol=1e-8)
    if mode == "eval":  # in training mode batch norm's statistics depend on the batch
        assert_logdet_matches_autograd(stack, x)


@pytest.mark.parametrize("arch", ["maf", "realnvp_tabular"])
def test_density_integrates_to_one_in_2d(arch):
    hp = {"num_layers": 2} if arch == "maf" else {"num_couplings": 2}
    model = build_model({"architecture": arch, "hidden": [16, 16], **hp}, (2,)).double()
    _perturb(model)
    model.train()
    model.log_prob(_gaussian_mixture(256).double())  # batch-norm statistics
    model.eval()
    assert grid_integral(model.log_prob, -12.0, 12.0, n=300) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("arch", ["maf", "realnvp_tabular"])
def test_log_prob_finite_and_samples(arch):
    model = build_model({"architecture": arch, "hidden": [16, 16]}, (6,))
    x = torch.randn(8, 6)
    log_prob = model.log_prob(x)
    assert log_prob.shape == (8,) and torch.isfinite(log_prob).all()
    model.eval()
    samples = model.sample(5)
    assert samples.shape == (5, 6) and torch.isfinite(samples).all()
    s, lp = model.sample_with_log_prob(4)
    torch.testing.assert_close(lp, model.log_prob(s), atol=1e-4, rtol=1e-4)


def test_maf_on_images_in_logit_space():
    model = build_model(
        {"architecture": "maf", "hidden": [32, 32], "num_layers": 2}, (1, 4, 4), num_bins=17
    )
    x = torch.randint(0, 17, (6, 1, 4, 4), dtype=torch.uint8)
    log_prob = model.log_prob(x)
    assert log_prob.shape == (6,) and torch.isfinite(log_prob).all()
    z, _ = model.transform_to_latent(x)
    assert z.shape == (6, 16)
    model.eval()
    samples = model.sample(3)
    assert samples.shape == (3, 1, 4, 4)
    assert (samples == samples.round()).all() and samples.min() >= 0 and samples.max() <= 16


def test_builders_reject_unflattened_continuous_data():
    with pytest.raises(ValueError, match="num_bins"):
        build_model({"architecture": "maf"}, (2, 3))


# ------------------------------------------------------------------------------- smoke
@pytest.mark.parametrize("arch,dim", [("maf", 2), ("maf", 6), ("realnvp_tabular", 6)])
def test_small_model_learns_gaussian_mixture(arch, dim):
    torch.manual_seed(0)
    data = _gaussian_mixture(512, dim)
    hp = {"num_layers": 3} if arch == "maf" else {"num_couplings": 4}
    model = build_model({"architecture": arch, "hidden": [24, 24], **hp}, (dim,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.eval()
    with torch.no_grad():
        before = -model.log_prob(data).mean().item()
    model.train()
    for step in range(60):
        opt.zero_grad()
        loss = -model.log_prob(data[(step % 4) * 128 : (step % 4 + 1) * 128]).mean()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = -model.log_prob(data).mean().item()
    assert after < before - 0.3 * dim, (before, after)


@pytest.mark.parametrize(
    "experiment",
    ["maf_power", "maf_gas", "maf_hepmass", "maf_miniboone", "maf_bsds300", "maf_mnist"],
)
def test_maf_paper_experiments_use_the_papers_unbounded_log_scale(experiment):
    """The paper's MADE log-scale is unbounded; survae's soft clamp is an option, not the
    paper experiments' default."""
    from survae.bench.benchmark import compose_experiment

    cfg = compose_experiment(experiment)
    assert cfg["model"]["architecture"] == "maf"
    assert cfg["model"]["log_scale_bound"] is None
    flow = build_model(dict(cfg["model"]), (6,))
    layers = [m for m in flow.modules() if isinstance(m, MaskedAffineAutoregressive)]
    assert layers and all(layer.log_scale_bound is None for layer in layers)
