"""Augmented Flow++ models: VFlow (learned q(e|x)) and ANF (fixed q(e) = N(0, I)): parameter
counts, the augmentation bound's bookkeeping, sampling, ablations, configs, smoke tests."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from survae import registry
from survae.architectures.augmented import anf, vflow
from survae.models import build_model
from survae.nn.flowpp import FlowPPNet
from survae.nn.flowpp_context import ContextFlowSampler
from survae.transforms.bijections.flowpp import FlowPPAffineCoupling
from survae.transforms.surjections.augment import Augment
from survae.transforms.surjections.dequantization import UniformDequantization

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

SMALL = dict(
    hidden_channels=8,
    num_blocks=1,
    num_components=3,
    num_heads=2,
    dropout=0.0,
    dequant_num_blocks=1,
    dequant_context_blocks=1,
)
SMALL_POSTERIOR = dict(posterior_num_blocks=1, posterior_context_blocks=1)


def _num_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _images(n: int, size: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def _augment(model) -> Augment:
    layers = [t for t in model.transforms if isinstance(t, Augment)]
    assert len(layers) == 1
    return layers[0]


def test_registered():
    assert registry.get("architecture", "vflow") is vflow
    assert registry.get("architecture", "anf") is anf


def test_cifar10_parameter_counts():
    with torch.device("meta"):
        v, a = vflow(), anf()
    n_v, n_a = _num_params(v), _num_params(a)
    # No parameter count is published for either model; these are the official VFlow
    # CIFAR-10 layout's (Flow++ dequantizer, 9 couplings on 6 channels, 4-coupling posterior
    # with 3-block networks and a 32-channel context processor). The mixture couplings'
    # per-channel rescale of tanh (the official scale is exp(tanh(s))) adds one parameter per
    # transformed channel over the official code: 2·6 + 2·3 + 2·24 + 3·12 = 102 in the main
    # flow, 4·3 in the dequantizer and 4·3 in VFlow's posterior.
    assert n_v == 39_700_222
    assert n_a == 35_208_338
    rescale = {
        m: sum(p.numel() for k, p in model.named_parameters() if k.endswith("rescale"))
        for m, model in (("vflow", v), ("anf", a))
    }
    assert rescale == {"vflow": 102 + 12 + 12, "anf": 102 + 12}
    posterior = _augment(v).encoder
    assert isinstance(posterior, ContextFlowSampler)
    assert n_v - n_a == _num_params(posterior) == 4_491_884
    assert _num_params(posterior.context_net) == 167_936  # conv 6→32 + 3 gated 3×3 convs
    assert _augment(a).encoder is None
    assert not v.exact and not a.exact  # dequantization and augmentation: lower bounds


@pytest.mark.parametrize("name", ["vflow", "anf"])
def test_model_configs_build_the_default_models(name):
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "model" / f"{name}.yaml"))
    with torch.device("meta"):
        from_config = build_model(cfg, (3, 32, 32), 256)
        default = registry.get("architecture", name)()
    assert _num_params(from_config) == _num_params(default)


@pytest.mark.parametrize("name", ["vflow", "anf"])
def test_small_model_shapes_log_prob_sample(name):
    extra = SMALL_POSTERIOR if name == "vflow" else {}
    model = registry.get("architecture", name)(data_shape=(3, 8, 8), **SMALL, **extra)
    assert not model.exact
    x = _images(4)
    lp = model.log_prob(x)
    assert lp.shape == (4,) and torch.isfinite(lp).all()
    z, _ = model.transform_to_latent(x)
    # 3 + 3 channels at 8×8: columns, channels, squeeze (24×4×4), columns, channels
    assert z.shape == (4, 24, 4, 4)
    model.eval()
    s = model.sample(3)
    assert s.shape == (3, 3, 8, 8)  # the augmented channels are dropped
    assert s.min() >= 0 and s.max() <= 255 and torch.equal(s, s.round())


def test_vflow_posterior_contribution_is_minus_log_q():
    """The augment layer's contribution is −log q(e | x) for VFlow's conditional flow:
    e = σ(flow(ε; context(x))) ∈ (0, 1), log q = log N(ε) − log|det de/dε| (autograd)."""
    model = vflow(data_shape=(3, 4, 4), **SMALL, **SMALL_POSTERIOR).double()
    aug = _augment(model)
    sampler = aug.encoder
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    aug(torch.randn(8, 3, 4, 4, dtype=torch.float64))  # data-dependent init of the norms
    with torch.no_grad():
        for m in sampler.modules():
            if isinstance(m, FlowPPNet):
                m.out.weight.normal_(0, 0.05)
                m.out.bias.normal_(0, 0.05)
    aug.eval()
    torch.manual_seed(5)
    xe, ldj = aug(x)
    assert xe.shape == (2, 6, 4, 4) and torch.equal(xe[:, :3], x)
    torch.manual_seed(5)
    eps = torch.randn(2, 3, 4, 4).double()  # what the posterior's N(0, I) base draws
    ctx = sampler.context_net(x)

    def noise(v: torch.Tensor) -> torch.Tensor:
        for t in reversed(sampler.flow.transforms):  # includes the final sigmoid
            v = t.inverse(v, ctx)
        return v

    e = noise(eps)
    assert ((e > 0) & (e < 1)).all()
    torch.testing.assert_close(xe[:, 3:], e)
    J = torch.autograd.functional.jacobian(noise, eps).reshape(2, 48, 2, 48)
    logdet = torch.stack([torch.linalg.slogdet(J[i, :, i])[1] for i in range(2)])
    log_q = -0.5 * (eps**2 + math.log(2 * math.pi)).sum((1, 2, 3)) - logdet
    torch.testing.assert_close(ldj, -log_q, atol=1e-6, rtol=1e-6)
    # inverse drops the augmented channels
    assert torch.equal(aug.inverse(xe), x)


def test_anf_augmentation_is_a_fixed_standard_normal():
    model = anf(data_shape=(3, 8, 8), **SMALL)
    aug = _augment(model)
    x = torch.randn(3, 3, 8, 8)
    xe, ldj = aug(x)
    e = xe[:, 3:]
    expected = 0.5 * (e**2 + math.log(2 * math.pi)).sum((1, 2, 3))  # −log N(e; 0, I)
    torch.testing.assert_close(ldj, expected)
    assert _num_params(aug) == 0


@pytest.mark.parametrize("name", ["vflow", "anf"])
@pytest.mark.parametrize(
    "override",
    [{"dequantization": "uniform"}, {"coupling": "affine"}, {"use_attention": False}],
    ids=["uniform_dequantization", "affine_coupling", "no_attention"],
)
def test_ablations_build_and_train_one_step(name, override):
    extra = SMALL_POSTERIOR if name == "vflow" else {}
    model = build_model({"architecture": name, **SMALL, **extra, **override}, (3, 8, 8), 256)
    if "dequantization" in override:
        assert isinstance(model.transforms[0], UniformDequantization)
    if "coupling" in override:
        assert any(isinstance(m, FlowPPAffineCoupling) for m in model.modules())
    if "use_attention" in override:
        assert "GatedSelfAttention" not in {type(m).__name__ for m in model.modules()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = -model.log_prob(_images(4)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_builder_rejects_bad_settings():
    with pytest.raises(ValueError, match="aug_channels"):
        vflow(data_shape=(3, 8, 8), aug_channels=0, **SMALL)
    with pytest.raises(ValueError, match="num_bins"):
        anf(data_shape=(3, 8, 8), num_bins=None, **SMALL)
    with pytest.raises(ValueError, match=r"needs images"):
        anf(data_shape=(6,), **SMALL)
    # 3 + 2 = 5 channels cannot be split in channel halves
    with pytest.raises(ValueError, match="channel split needs an even channel count"):
        anf(data_shape=(3, 8, 8), aug_channels=2, **SMALL)


@pytest.mark.parametrize("name", ["vflow", "anf"])
def test_smoke_training_lowers_the_loss(name, ramp_images, train_bits_per_dim):
    """50 Adam steps of a small model on 16 tiny structured 8×8 images."""
    x = ramp_images
    kwargs = dict(data_shape=(3, 8, 8), stages=[["columns", 2]], dequant_stages=[["columns", 1]])
    if name == "vflow":
        kwargs.update(SMALL_POSTERIOR, posterior_stages=[["columns", 1]])
    model = registry.get("architecture", name)(**kwargs, **SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first, last, losses = train_bits_per_dim(model, x, opt, steps=50)
    assert all(math.isfinite(v) for v in losses)
    assert last < first - 1.0, (first, last)
