"""RealNVP builder (Dinh et al. 2017): paper configuration, layout, multi-scale latents, logit
preprocessing accounted for in the likelihood, invertibility, sampling, smoke training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from survae.architectures.glow import MultiScaleFlow
from survae.architectures.realnvp import TanhScaleNet, realnvp
from survae.errors import ShapeError
from survae.models import build_model
from survae.transforms.bijections.batchnorm import BatchNormBijection
from survae.transforms.bijections.coupling import AffineCoupling
from survae.transforms.bijections.elementwise import Logit
from survae.transforms.surjections.dequantization import UniformDequantization
from survae.transforms.surjections.slicing import Slice

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LOG_2PI = math.log(2 * math.pi)


def _model_config() -> dict:
    return yaml.safe_load((CONFIGS / "model" / "realnvp.yaml").read_text())


def _small(data_shape=(3, 8, 8), **kwargs) -> MultiScaleFlow:
    kwargs = {"num_scales": 2, "hidden_channels": 4, "num_blocks": 1, **kwargs}
    return realnvp(data_shape=data_shape, num_bins=256, **kwargs)


def _perturb_(model: torch.nn.Module, std: float = 0.05) -> None:
    """Move parameters and batch-norm running statistics off their initial values."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, (BatchNormBijection, torch.nn.BatchNorm2d)):
                m.running_mean.add_(0.1 * torch.randn_like(m.running_mean))
                m.running_var.mul_(torch.exp(0.2 * torch.randn_like(m.running_var)))


def brute_force_log_density(model: MultiScaleFlow, y: torch.Tensor) -> torch.Tensor:
    """``log p(y)`` of the dequantized input from the autograd Jacobian of
    ``y ↦ (dropped channels of every factor-out, top latent)`` and standard normal densities
    of all latents; independent of the layers' own log-determinants (logit included)."""
    layers = list(model.transforms)
    assert isinstance(layers[0], UniformDequantization)
    layers = layers[1:]

    def latents(v: torch.Tensor) -> list[torch.Tensor]:
        parts = []
        for t in layers:
            if isinstance(t, Slice):
                assert t.decoder is None  # RealNVP factors out with N(0, I)
                parts.append(v[:, t.num_keep :])
                v = v[:, : t.num_keep]
            else:
                v, _ = t(v)
        return [*parts, v]

    out = []
    for i in range(y.shape[0]):
        yi = y[i : i + 1]
        dim = yi.numel()

        def flat(v: torch.Tensor) -> torch.Tensor:
            return torch.cat([p.reshape(-1) for p in latents(v)])

        J = torch.autograd.functional.jacobian(flat, yi).reshape(dim, dim)
        z = flat(yi)
        log_normal = (-0.5 * (z**2 + LOG_2PI)).sum()
        out.append(log_normal + torch.linalg.slogdet(J)[1])
    return torch.stack(out)


# --- the paper configuration ----------------------------------------------------------------


def test_realnvp_cifar10_paper_configuration_parameter_count():
    spec = _model_config()
    # paper Sec. 4.1: CIFAR-10 uses 8 residual blocks, 64 feature maps, one downscaling
    assert (spec["num_scales"], spec["hidden_channels"], spec["num_blocks"]) == (2, 64, 8)
    assert spec["logit_eps"] == 0.05
    with torch.device("meta"):
        model = build_model(spec, (3, 32, 32), 256)
    # The paper gives no parameter count; this is ours for its CIFAR-10 setting.
    assert sum(p.numel() for p in model.parameters()) == 18_501_027
    assert isinstance(model, MultiScaleFlow)
    assert model.exact is False  # dequantization: a bound on the discrete log-likelihood
    assert all(t.exact for t in list(model.transforms)[1:])


def test_layout_masks_widths_and_factor_out():
    model = build_model({**_model_config(), "num_blocks": 1}, (3, 32, 32), 256)
    layers = list(model.transforms)
    assert isinstance(layers[0], UniformDequantization)
    assert isinstance(layers[1], Logit) and layers[1].eps == 0.05
    couplings = [t for t in layers if isinstance(t, AffineCoupling)]
    masks = [(c.mask, c.reverse_mask) for c in couplings]
    cb, ch = "checkerboard", "channel"
    assert masks == [
        (cb, False), (cb, True), (cb, False),  # scale 1, 3×32×32
        (ch, False), (ch, True), (ch, False),  # after the squeeze, 12×16×16
        (cb, False), (cb, True), (cb, False), (cb, True),  # final scale, 6×16×16
    ]  # fmt: skip
    widths = [c.net.net.inp.out_channels for c in couplings]
    assert widths == [64] * 3 + [128] * 3 + [128] * 4  # doubled after the squeeze and per scale
    assert all(isinstance(c.net, TanhScaleNet) and c.scale_fn == "exp" for c in couplings)
    # every coupling is followed by a batch-norm bijection on its output
    for i, t in enumerate(layers):
        if isinstance(t, AffineCoupling):
            assert isinstance(layers[i + 1], BatchNormBijection)
    slices = [t for t in layers if isinstance(t, Slice)]
    assert len(slices) == 1 and slices[0].decoder is None and slices[0].num_keep == 6
    assert model.base_dist.shape == (6, 16, 16)


@pytest.mark.parametrize(
    "data_shape,scales,expected",
    [
        ((3, 32, 32), 2, [(6, 16, 16), (6, 16, 16)]),
        ((3, 32, 32), 4, [(6, 16, 16), (12, 8, 8), (24, 4, 4), (24, 4, 4)]),
        ((1, 8, 8), 3, [(2, 4, 4), (4, 2, 2), (4, 2, 2)]),
    ],
)
def test_multiscale_latent_shapes(data_shape, scales, expected):
    model = realnvp(data_shape, 256, num_scales=scales, hidden_channels=4, num_blocks=1)
    x = torch.randint(0, 256, (2, *data_shape), dtype=torch.uint8)
    latents = model.encode(x)
    assert [tuple(z.shape[1:]) for z in latents] == expected
    assert sum(math.prod(s) for s in expected) == math.prod(data_shape)
    assert model.base_dist.shape == expected[-1]


# --- likelihood: logit preprocessing is accounted for -------------------------------------------


def test_untrained_log_prob_matches_the_analytic_logit_normal_density():
    """With identity couplings (zero-initialised outputs) and no batch norm, the model is
    dequantization → logit → permutations → N(0, I), so ``log p`` has a closed form that
    includes the logit's log-derivative; omitting it would shift bits/dim by a lot."""
    eps = 0.05
    model = realnvp((3, 8, 8), 256, num_scales=2, hidden_channels=4, num_blocks=1,
                    batch_norm=False, logit_eps=eps)  # fmt: skip
    x = torch.randint(0, 256, (4, 3, 8, 8)).float()
    torch.manual_seed(5)
    lp = model.log_prob(x)
    torch.manual_seed(5)
    y = eps + (1 - 2 * eps) * (x + torch.rand_like(x)) / 256
    z = torch.log(y) - torch.log1p(-y)
    log_dlogit = math.log(1 - 2 * eps) - torch.log(y) - torch.log1p(-y)
    per_pixel = -0.5 * (z**2 + LOG_2PI) + log_dlogit - math.log(256)
    expected = per_pixel.flatten(1).sum(1)
    torch.testing.assert_close(lp, expected, atol=1e-3, rtol=1e-5)
    logit_ldj = log_dlogit.flatten(1).sum(1)
    assert (logit_ldj.abs() > 100).all()  # a large term: bits/dim would be wrong without it


def test_log_prob_equals_change_of_variables_by_autograd():
    torch.set_default_dtype(torch.float64)
    try:
        model = realnvp((2, 4, 4), 256, num_scales=2, hidden_channels=4, num_blocks=1).eval()
        _perturb_(model)
        x = torch.randint(0, 256, (2, 2, 4, 4)).double()
        torch.manual_seed(11)
        lp = model.log_prob(x)
        torch.manual_seed(11)  # the same dequantization noise
        y = (x + torch.rand_like(x)) / 256
        expected = brute_force_log_density(model, y) - 32 * math.log(256)
    finally:
        torch.set_default_dtype(torch.float32)
    torch.testing.assert_close(lp, expected, atol=1e-8, rtol=1e-8)


def test_log_prob_finite_shape_and_bits_per_dim():
    model = _small()
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    lp = model.log_prob(x)
    assert lp.shape == (5,) and torch.isfinite(lp).all()
    bpd = -lp / (math.log(2) * 192)
    assert ((bpd > 6.0) & (bpd < 11.0)).all(), bpd
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model.log_prob(x)).all()


# --- invertibility and sampling -----------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
def test_decode_encode_recovers_integer_data(train):
    torch.set_default_dtype(torch.float64)
    try:
        model = _small()
        _perturb_(model)
        model.train(train)
        x = torch.randint(0, 256, (4, 3, 8, 8)).double()
        x_rec = model.decode(model.encode(x))
    finally:
        torch.set_default_dtype(torch.float32)
    assert torch.equal(x_rec, x)


def test_sample_shapes_and_temperature():
    model = _small().eval()
    for t in (1.0, 0.5):
        s = model.sample(6, temperature=t)
        assert s.shape == (6, 3, 8, 8)
        assert s.min() >= 0 and s.max() <= 255
    _perturb_(model)
    torch.testing.assert_close(model.sample(2, temperature=0.0), model.sample(2, temperature=0.0))
    assert not torch.equal(model.sample(2), model.sample(2))


@pytest.mark.parametrize(
    "options", [{"scale_fn": "exp"}, {"scale_fn": "tanh_exp"}, {"net_norm": "weight"}]
)
def test_variants_build_and_run(options):
    model = _small(**options)
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    lp = model.log_prob(x)
    assert torch.isfinite(lp).all()
    (-lp.mean()).backward()
    assert model.sample(2).shape == (2, 3, 8, 8)


def test_tanh_scale_net_bounds_the_log_scale():
    net = TanhScaleNet(torch.nn.Conv2d(2, 4, 1), num_transformed=2)
    with torch.no_grad():
        net.net.weight.fill_(100.0)
        net.log_scale_factor.copy_(torch.tensor([0.5, 2.0]))
    out = net(torch.randn(3, 2, 4, 4))
    shift, log_scale = out.chunk(2, dim=1)
    assert out.shape == (3, 4, 4, 4)
    assert (log_scale[:, 0].abs() <= 0.5).all() and (log_scale[:, 1].abs() <= 2.0).all()
    assert shift.abs().max() > 10  # the shift half passes through unchanged


def test_bad_configurations_raise_clear_errors():
    with pytest.raises(ShapeError, match=r"realnvp: 3 squeeze\(s\) need H and W divisible by 8"):
        realnvp((1, 28, 28), 256, num_scales=4)
    with pytest.raises(ValueError, match="unknown scale_fn 'tanh'.*learned_tanh"):
        realnvp(scale_fn="tanh")
    with pytest.raises(ValueError, match="needs num_bins"):
        realnvp((3, 8, 8), None)
    with pytest.raises(ValueError, match="num_scales must be >= 1"):
        realnvp(num_scales=0)


# --- smoke training -------------------------------------------------------------------------


def test_smoke_small_realnvp_learns_digits_like_data(digits_like, train_bits_per_dim):
    data = digits_like(512)  # 17 grey levels, as sklearn's digits
    spec = {**_model_config(), "hidden_channels": 8, "num_blocks": 1}
    model = build_model(spec, (1, 8, 8), num_bins=17)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first, last, _ = train_bits_per_dim(model, data, opt, steps=50, batch_size=64)
    assert math.isfinite(last)
    # about 3.9 → 2.6 bits/dim in 50 steps
    assert last < first - 0.8, (first, last)
