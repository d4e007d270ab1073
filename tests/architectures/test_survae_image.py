"""SurVAE image models (MaxPoolFlow and the slicing baseline): the official parameter count,
the density of the continuous part against an independent change-of-variables computation,
the dequantization flow's density, configs, sampling, bad input and a smoke training run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from survae.architectures.survae_image import (
    ChannelwiseNormal,
    dequantization_flow,
    survae_image_flow,
)
from survae.errors import ShapeError
from survae.flows import Flow
from survae.models import build_model
from survae.testing import autograd_logdet
from survae.transforms.base import Bijection, Sequential
from survae.transforms.bijections.conv1x1 import Conv1x1
from survae.transforms.bijections.coupling import AffineCoupling
from survae.transforms.surjections.dequantization import (
    UniformDequantization,
    VariationalDequantization,
)
from survae.transforms.surjections.max_pool import MaxPoolSurjection2d
from survae.transforms.surjections.slicing import Slice

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LOG_2PI = math.log(2 * math.pi)

#: official SurVAE counts (reference-bench.md)
OFFICIAL_PARAMS = 105_023_968
OFFICIAL_COUPLING_NET = 3_745_228
OFFICIAL_DEQUANT_FLOW = 15_135_016

SMALL_NET = {
    "densenet_channels": 8,
    "densenet_depth": 2,
    "densenet_growth": 4,
}


def _num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _small(pooling="max", data_shape=(3, 8, 8), **kwargs) -> Flow:
    kwargs = {
        "num_scales": 2,
        "num_steps": 2,
        "dequant_steps": 1,
        "dequant_context": 4,
        **SMALL_NET,
        **kwargs,
    }
    return survae_image_flow(data_shape, 256, pooling=pooling, **kwargs)


def _perturb_(model: torch.nn.Module, std: float = 0.1) -> None:
    """Move every parameter off its (zero/identity) initial value."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))


# ---------------------------------------------------------------------------- paper configuration


@pytest.mark.parametrize(
    "experiment,data_shape,num_scales,num_steps,pooling",
    [
        ("maxpool_flow_cifar10", (3, 32, 32), 2, 12, "max"),
        ("slice_flow_imagenet64", (3, 64, 64), 3, 8, "slice"),
    ],
)
def test_paper_parameter_count_matches_official(
    experiment, data_shape, num_scales, num_steps, pooling
):
    spec = {k: v for k, v in _compose([f"experiment={experiment}"]).items() if k[0] != "_"}
    model = build_model(spec, data_shape=data_shape, num_bins=256)
    # Matches the official code exactly (reference-bench.md: 105,023,968 for CIFAR-10; the
    # count does not depend on the resolution or the pooling, so ImageNet 32/64 and the
    # slicing baseline have the same number).
    assert _num_params(model) == OFFICIAL_PARAMS
    deq = model.transforms[0]
    assert isinstance(deq, VariationalDequantization)
    assert _num_params(deq) == OFFICIAL_DEQUANT_FLOW
    couplings = [t for t in model.transforms if isinstance(t, AffineCoupling)]
    assert len(couplings) == num_scales * num_steps
    assert all(_num_params(c.net) == OFFICIAL_COUPLING_NET for c in couplings)
    assert all(c.scale_fn == "tanh_exp" for c in couplings)
    convs = [t for t in model.transforms if isinstance(t, Conv1x1)]
    assert len(convs) == num_scales * num_steps
    assert model.base_dist.shape == (12, 8, 8)
    assert _num_params(model.base_dist) == 24
    downsampling = MaxPoolSurjection2d if pooling == "max" else Slice
    assert sum(isinstance(t, downsampling) for t in model.transforms) == num_scales - 1
    assert not model.exact  # variational dequantization: a lower bound


def _compose(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
            return OmegaConf.to_container(cfg.model, resolve=True) | {
                "_data": OmegaConf.to_container(cfg.data, resolve=False),
                "_optim": OmegaConf.to_container(cfg.optim, resolve=True),
                "_trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
                "_test_iw_samples": cfg.test_iw_samples,
                "_test_iw_chunk": cfg.test_iw_chunk,
            }
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("pooling", ["maxpool", "slice"])
@pytest.mark.parametrize(
    "data,scales,steps,epochs,decay",
    [
        ("cifar10", 2, 12, 500, 0.995),
        ("imagenet32", 2, 12, 25, 0.95),
        ("imagenet64", 3, 8, 20, 0.95),
    ],
)
def test_experiment_configs(pooling, data, scales, steps, epochs, decay):
    cfg = _compose([f"experiment={pooling}_flow_{data}"])
    assert cfg["architecture"] == "survae_image_flow"
    assert cfg["pooling"] == ("max" if pooling == "maxpool" else "slice")
    assert (cfg["num_scales"], cfg["num_steps"]) == (scales, steps)
    assert cfg["dequant"] == "flow" and not cfg["actnorm"]
    assert cfg["_data"]["name"] == data and cfg["_data"]["batch_size"] == 32
    assert cfg["_data"]["augment"] == (data == "cifar10")
    optim = cfg["_optim"]
    assert optim["name"] == "adamax" and optim["lr"] == 1e-3 and optim["warmup_steps"] == 5000
    assert optim["decay"] == decay and optim["decay_every"] == "epoch"
    assert cfg["_trainer"]["max_epochs"] == epochs
    assert cfg["_test_iw_samples"] == 1000 and cfg["_test_iw_chunk"] == 10
    # the remaining model values are the paper's (checked once, with the parameter count, above)
    assert cfg["dequant_steps"] == 4 and cfg["dequant_context"] == 32
    assert (cfg["densenet_channels"], cfg["densenet_depth"], cfg["densenet_growth"]) == (64, 10, 64)


def test_model_configs_differ_only_in_pooling():
    maxpool = yaml.safe_load((CONFIGS / "model" / "maxpool_flow.yaml").read_text())
    composed = _compose(["model=slice_flow"])
    spec = {k: v for k, v in composed.items() if not k.startswith("_")}
    assert spec == {**maxpool, "pooling": "slice"}


def test_cifar10_augmentation_is_flip_and_one_pixel_shift(tmp_path):
    """SurVAE's CIFAR-10 augmentation (--augmentation eta): random horizontal flip and a
    translation of 4 % (±1 px at 32×32); ImageNet is not augmented."""
    from survae.training.pipeline import build_datamodule

    for experiment, augmented in (("maxpool_flow_cifar10", True), ("slice_flow_imagenet32", False)):
        data = _compose([f"experiment={experiment}"])["_data"]
        data["root"] = str(tmp_path)
        transform = build_datamodule(data, seed=0).train_transform()
        if not augmented:
            assert transform is None
            continue
        assert transform.flip and transform.translate == 1
        x = torch.arange(2 * 3 * 32 * 32).reshape(2, 3, 32, 32).to(torch.uint8)
        moved = transform(x)
        assert moved.dtype == torch.uint8 and moved.shape == x.shape


# ---------------------------------------------------------------------------- small models


@pytest.mark.parametrize("pooling", ["max", "slice"])
def test_small_model_shapes_log_prob_and_sampling(pooling):
    model = _small(pooling)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    log_prob = model.log_prob(x)
    assert log_prob.shape == (4,) and torch.isfinite(log_prob).all()
    assert not model.exact
    assert model.base_dist.shape == (12, 2, 2)
    samples = model.sample(5)
    assert samples.shape == (5, 3, 8, 8)
    assert torch.equal(samples, samples.round()) and samples.min() >= 0 and samples.max() <= 255
    cold = model.sample(3, temperature=0.5)
    assert cold.shape == (3, 3, 8, 8)


def test_uniform_dequantization_option_and_actnorm():
    model = _small("max", dequant="uniform", actnorm=True)
    assert isinstance(model.transforms[0], UniformDequantization)
    assert _num_params(model.transforms[0]) == 0
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert torch.isfinite(model.log_prob(x)).all()


def test_untrained_bits_per_dim_on_uniform_bytes_is_close_to_official():
    # Official untrained losses (reference-bench.md, 105M models): 9.50 (max), 9.66 (slice).
    # Zero-initialised couplings make the small models' values the same up to noise.
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    for pooling, official in (("max", 9.50), ("slice", 9.66)):
        model = _small(pooling, data_shape=(3, 16, 16))
        with torch.no_grad():
            bpd = -model.log_prob(x).mean() / (math.log(2) * x[0].numel())
        assert abs(bpd.item() - official) < 0.05, (pooling, bpd.item())


def test_channelwise_normal_matches_torch_normal():
    dist = ChannelwiseNormal((3, 4, 5))
    assert _num_params(dist) == 6
    with torch.no_grad():
        dist.loc.copy_(torch.randn_like(dist.loc))
        dist.log_scale.copy_(torch.randn_like(dist.log_scale))
    x = torch.randn(7, 3, 4, 5)
    ref = torch.distributions.Normal(dist.loc, dist.log_scale.exp()).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(dist.log_prob(x), ref)
    sample, log_prob = dist.sample_with_log_prob(6, temperature=0.7)
    assert sample.shape == (6, 3, 4, 5)
    torch.testing.assert_close(log_prob, dist.log_prob(sample))
    # per-channel: positions of one channel share their mean and scale
    big = dist.sample(4000)
    mean = big.mean((0, 2, 3))
    torch.testing.assert_close(mean, dist.loc.view(-1), atol=0.05, rtol=0)
    with pytest.raises(ShapeError, match="ChannelwiseNormal"):
        dist.log_prob(torch.randn(2, 3, 4, 4))


# ---------------------------------------------------------------------------- exact densities


def _log_normal(x: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (x**2 + LOG_2PI)).reshape(x.shape[0], -1).sum(-1)


def _maxpool_term(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent computation of the max-pool surjection: pooled values and
    ``Σ_windows [Σ_{non-max} log HalfNormal(max − x_j) − log 4]``."""
    B, C, H, W = h.shape
    cols = F.unfold(h, kernel_size=2, stride=2).reshape(B, C, 4, H // 2, W // 2)
    top, _ = cols.max(dim=2)
    gaps = top.unsqueeze(2) - cols  # zero at the maximum, positive elsewhere
    log_hn = math.log(2.0) - 0.5 * (gaps**2 + LOG_2PI)
    is_max = gaps == 0
    term = torch.where(is_max, torch.zeros_like(log_hn), log_hn).reshape(B, -1).sum(-1)
    return top, term - C * (H // 2) * (W // 2) * math.log(4)


def brute_force_log_density(model: Flow, y: torch.Tensor) -> torch.Tensor:
    """``log p(y)`` of the continuous input of the main flow (after dequantization), computed
    without the layers' own contributions: runs of bijections contribute ``log|det J|`` of their
    autograd Jacobian; a slice contributes the standard-normal density of the dropped channels;
    a max pool contributes the half-normal density of the non-maximal values (with the 1/4
    position probability); the base is a per-channel normal."""
    total = y.new_zeros(y.shape[0])
    run: list = []
    h = y

    def flush(h):
        nonlocal total
        if not run:
            return h
        seq = Sequential(list(run))
        total = total + autograd_logdet(seq, h)
        run.clear()
        return seq(h)[0]

    for layer in list(model.transforms)[1:]:
        if isinstance(layer, Bijection):
            run.append(layer)
        elif isinstance(layer, Slice):
            h = flush(h)
            total = total + _log_normal(h[:, layer.num_keep :])
            h = h[:, : layer.num_keep]
        elif isinstance(layer, MaxPoolSurjection2d):
            h = flush(h)
            h, term = _maxpool_term(h)
            total = total + term
        else:
            raise AssertionError(f"unexpected layer {layer}")
    h = flush(h)
    base = model.base_dist
    ref = torch.distributions.Normal(base.loc, base.log_scale.exp())
    return total + ref.log_prob(h).reshape(h.shape[0], -1).sum(-1)


@pytest.mark.parametrize("pooling", ["max", "slice"])
def test_main_flow_density_matches_change_of_variables(pooling):
    torch.manual_seed(1)
    model = _small(pooling, data_shape=(1, 4, 4), num_steps=1).double()
    _perturb_(model)
    continuous = Flow(model.base_dist, list(model.transforms)[1:])
    y = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        expected = brute_force_log_density(model, y)
    torch.testing.assert_close(continuous.log_prob(y), expected, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("pooling", ["max", "slice"])
def test_full_model_adds_the_dequantization_term(pooling):
    """log p(x) = [−D log 256 − log q(u | x)] + log p(y) with y the dequantized input."""
    torch.manual_seed(2)
    model = _small(pooling, data_shape=(3, 8, 8)).double()
    _perturb_(model, 0.02)
    # integer values as float64 (uint8 input would be converted to the default float32)
    x = torch.randint(0, 256, (2, 3, 8, 8)).double()
    deq = model.transforms[0]
    continuous = Flow(model.base_dist, list(model.transforms)[1:])
    torch.manual_seed(5)
    y, deq_term = deq(x)
    torch.manual_seed(5)
    log_prob = model.log_prob(x)
    torch.testing.assert_close(log_prob, deq_term + continuous.log_prob(y))
    # y lies in x's bin
    bins = torch.floor(y * 256)
    torch.testing.assert_close(bins, x)


def test_dequantization_flow_density_and_context():
    torch.manual_seed(3)
    deq = dequantization_flow(
        (3, 8, 8),
        256,
        num_steps=2,
        context_channels=4,
        net={"name": "densenet", "mid_channels": 8, "depth": 2, "growth": 4},
    ).double()
    _perturb_(deq, 0.05)
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    ctx = deq.context_net(x.double() * (2 / 255) - 1)
    assert ctx.shape == (2, 4, 4, 4)  # context at half resolution, as the encoder's noise
    encoder = deq.encoder
    assert encoder.base_dist.shape == (12, 4, 4)
    y, log_q = encoder.sample_with_log_prob(2, context=ctx)
    assert y.shape == (2, 3, 8, 8)
    # the sample's reported density equals the density of y by the data→noise direction ...
    torch.testing.assert_close(log_q, encoder.log_prob(y, ctx))
    # ... and the change of variables of the sampling map noise → y, by autograd
    eps = encoder.transform_to_latent(y, ctx)[0].detach()
    for i in range(2):

        def sampling_map(e, i=i):
            return encoder.latent_to_data(e, ctx[i : i + 1]).reshape(-1)

        J = torch.autograd.functional.jacobian(sampling_map, eps[i : i + 1]).reshape(192, 192)
        expected = encoder.base_dist.log_prob(eps[i : i + 1]) - torch.linalg.slogdet(J)[1]
        torch.testing.assert_close(log_q[i : i + 1], expected)
    # the noise depends on x through the context
    torch.manual_seed(7)
    u1, _ = encoder.sample_with_log_prob(2, context=ctx)
    torch.manual_seed(7)
    u2, _ = encoder.sample_with_log_prob(2, context=ctx + 1.0)
    assert not torch.allclose(u1, u2)


# ---------------------------------------------------------------------------- bad input


def test_bad_hyperparameters_and_shapes():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*num_scales = 8"):
        survae_image_flow((3, 12, 12), 256, num_scales=3)
    with pytest.raises(ValueError, match="pooling must be one of"):
        survae_image_flow((3, 8, 8), 256, pooling="avg")
    with pytest.raises(ValueError, match="dequant must be one of"):
        survae_image_flow((3, 8, 8), 256, dequant="none")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        survae_image_flow((64,), 256)
    model = _small("max")
    with pytest.raises(ShapeError, match=r"\(2, 1, 8, 8\)"):
        model.log_prob(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ShapeError):
        model.log_prob(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


# ---------------------------------------------------------------------------- smoke training


@pytest.mark.parametrize("pooling", ["max", "slice"])
def test_smoke_training_lowers_the_loss(pooling, train_bits_per_dim):
    torch.manual_seed(0)
    # structured 8-bit images: smooth colour gradients with a little noise
    ramp = torch.linspace(40, 200, 8)
    base = ramp.view(1, 1, 1, 8) + 0.5 * ramp.view(1, 1, 8, 1) - 60
    shift = torch.randint(-20, 20, (64, 3, 1, 1)).float()
    data = (base + shift + 3 * torch.randn(64, 3, 8, 8)).clamp(0, 255).round().to(torch.uint8)
    model = _small(pooling)
    opt = torch.optim.Adamax(model.parameters(), lr=3e-3)
    first, last, _ = train_bits_per_dim(model, data, opt, steps=60, batch_size=16)
    assert last < first - 1.5, (first, last)
