"""Flow++ (Ho et al. 2019): the official layout's layers, the builder's parameter counts against
the official code's, likelihood bookkeeping, ablations, configs, and a smoke test."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from survae import registry
from survae.architectures.flowpp import flowpp
from survae.errors import ShapeError
from survae.models import build_model
from survae.nn.flowpp import FlowPPNet, WeightNormConv2d
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.base import Sequential
from survae.transforms.bijections.flowpp import (
    ElementwiseActNorm,
    FlowPPAffineCoupling,
    GroupedConv1x1,
    HalfSplit,
    SpaceToDepth,
)
from survae.transforms.bijections.logistic_mixture import LogisticMixtureCoupling
from survae.transforms.surjections.dequantization import (
    UniformDequantization,
    VariationalDequantization,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: a small Flow++ (all features: variational dequantization, mixtures, attention, 1×1 maps)
SMALL = dict(
    hidden_channels=8,
    num_blocks=1,
    num_components=3,
    num_heads=2,
    dropout=0.0,
    dequant_num_blocks=1,
    dequant_context_blocks=1,
)


def _num_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _images(n: int, size: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def _perturb_couplings(module: torch.nn.Module, std: float = 0.05) -> None:
    """Move the zero-initialised output convs of the coupling networks off the identity."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, FlowPPNet):
                m.out.weight.normal_(0, std)
                m.out.bias.normal_(0, std)
                if isinstance(m.out, WeightNormConv2d):  # zero gains: give them a size
                    m.out.weight_g.copy_(m.out.weight.flatten(1).norm(dim=1))


# ------------------------------------------------------------------------------------------
# layers
# ------------------------------------------------------------------------------------------


def test_layers_are_registered():
    assert registry.get("layer", "flowpp_split") is HalfSplit
    assert registry.get("layer", "flowpp_squeeze") is SpaceToDepth
    assert registry.get("layer", "flowpp_norm") is ElementwiseActNorm
    assert registry.get("layer", "flowpp_pointwise") is GroupedConv1x1
    assert registry.get("layer", "flowpp_affine_coupling") is FlowPPAffineCoupling
    assert registry.get("architecture", "flowpp") is flowpp


def test_column_split_layout_and_swap():
    x = torch.randn(2, 3, 4, 6)
    z, ldj = HalfSplit("columns")(x)
    assert z.shape == (2, 6, 4, 3) and torch.equal(ldj, torch.zeros(2))
    assert torch.equal(z[:, :3], x[..., 0::2]) and torch.equal(z[:, 3:], x[..., 1::2])
    zs, _ = HalfSplit("columns", swap=True)(x)
    assert torch.equal(zs[:, :3], x[..., 1::2]) and torch.equal(zs[:, 3:], x[..., 0::2])
    for layer in (HalfSplit("columns"), HalfSplit("columns", swap=True)):
        assert_invertible(layer, x, atol=0, rtol=0)


def test_channel_split_swap_exchanges_halves():
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(HalfSplit("channels")(x)[0], x)
    z = HalfSplit("channels", swap=True)(x)[0]
    assert torch.equal(z, torch.cat([x[:, 2:], x[:, :2]], 1))
    assert_invertible(HalfSplit("channels", swap=True), x, atol=0, rtol=0)


def test_split_bad_input():
    with pytest.raises(ShapeError, match="even width"):
        HalfSplit("columns")(torch.randn(2, 3, 4, 5))
    with pytest.raises(ShapeError, match="even number of channels"):
        HalfSplit("channels")(torch.randn(2, 3, 4, 4))
    with pytest.raises(ShapeError, match=r"HalfSplit.*\(batch, C, H, W\)"):
        HalfSplit("columns")(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="mode"):
        HalfSplit("rows")


def test_space_to_depth_uses_tensorflow_order():
    x = torch.randn(2, 3, 4, 6)
    z, ldj = SpaceToDepth()(x)
    assert z.shape == (2, 12, 2, 3) and torch.equal(ldj, torch.zeros(2))
    C = 3
    for i in range(2):
        for j in range(2):
            for c in range(C):
                assert torch.equal(z[:, (2 * i + j) * C + c], x[:, c, i::2, j::2])
    assert_invertible(SpaceToDepth(), x, atol=0, rtol=0)
    with pytest.raises(ShapeError, match="even"):
        SpaceToDepth()(torch.randn(2, 3, 5, 4))
    with pytest.raises(ShapeError, match="divisible by 4"):
        SpaceToDepth().inverse(torch.randn(2, 6, 2, 2))


def test_elementwise_actnorm_data_init_per_element():
    layer = ElementwiseActNorm((2, 3, 4))
    x = torch.randn(64, 2, 3, 4) * torch.rand(2, 3, 4) * 5 + torch.randn(2, 3, 4) * 3
    z, ldj = layer(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(2, 3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(2, 3, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(ldj, layer.log_scale.sum().expand(64))
    assert bool(layer.initialized)
    # initialised once only; and a reloaded layer keeps its parameters
    before = layer.log_scale.detach().clone()
    layer(torch.randn(8, 2, 3, 4))
    assert torch.equal(layer.log_scale, before)
    fresh = ElementwiseActNorm((2, 3, 4))
    fresh.load_state_dict(layer.state_dict())
    fresh(torch.randn(8, 2, 3, 4))
    assert torch.equal(fresh.log_scale, before)


def test_elementwise_actnorm_skips_init_on_single_example_and_in_eval():
    layer = ElementwiseActNorm((3, 2, 2))
    layer(torch.randn(1, 3, 2, 2))
    layer.eval()
    layer(torch.randn(5, 3, 2, 2))
    assert not bool(layer.initialized)
    assert torch.equal(layer.log_scale, torch.zeros(3, 2, 2))


@pytest.mark.parametrize("train", [True, False])
def test_elementwise_actnorm_invertible_and_logdet(train):
    layer = ElementwiseActNorm((2, 2, 3)).double()
    with torch.no_grad():
        layer.log_scale.normal_()
        layer.bias.normal_()
    layer._initialized = True
    layer.train(train)
    x = torch.randn(3, 2, 2, 3, dtype=torch.float64)
    assert_invertible(layer, x)
    assert_logdet_matches_autograd(layer, x)
    with pytest.raises(ShapeError, match=r"ElementwiseActNorm.*\(\*, 2, 2, 3\).*\(3, 2, 3, 2\)"):
        layer(torch.randn(3, 2, 3, 2, dtype=torch.float64))


def test_grouped_conv1x1_is_block_diagonal_invertible_with_right_logdet():
    layer = GroupedConv1x1(6, num_groups=2, init_noise=0.5).double()
    x = torch.randn(3, 6, 2, 3, dtype=torch.float64)
    assert_invertible(layer, x)
    assert_logdet_matches_autograd(layer, x)
    # group 0 output depends only on group 0 input
    x2 = x.clone()
    x2[:, 3:] += 1.0
    torch.testing.assert_close(layer(x2)[0][:, :3], layer(x)[0][:, :3])
    assert not torch.allclose(layer(x2)[0][:, 3:], layer(x)[0][:, 3:])
    # identity-plus-noise initialisation (official Pointwise)
    near = GroupedConv1x1(4)
    torch.testing.assert_close(near.weight, torch.eye(2).expand(2, 2, 2), atol=0.01, rtol=0)
    with pytest.raises(ValueError, match="multiple of num_groups"):
        GroupedConv1x1(5, num_groups=2)
    with pytest.raises(ShapeError, match="GroupedConv1x1"):
        layer(torch.randn(3, 4, 2, 3, dtype=torch.float64))


def _affine(flip: bool, context_channels: int = 0) -> FlowPPAffineCoupling:
    net = {"name": "flowpp_net", "hidden_channels": 8, "num_blocks": 1, "num_heads": 2}
    layer = FlowPPAffineCoupling(4, net, flip=flip, context_channels=context_channels)
    with torch.no_grad():
        layer.net.out.weight.normal_(0, 0.3)
        layer.net.out.bias.normal_(0, 0.3)
    return layer.double()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_affine_coupling_invertible_and_logdet(flip, train):
    layer = _affine(flip, context_channels=2)
    layer.train(train)
    layer.net.eval()  # dropout off so forward and inverse see the same network
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64)
    ctx = torch.randn(2, 2, 3, 2, dtype=torch.float64)
    assert_invertible(layer, x, ctx)
    assert_logdet_matches_autograd(layer, x, ctx)
    # the conditioning half passes through unchanged
    z = layer(x, ctx)[0]
    keep = slice(2, 4) if flip else slice(0, 2)
    assert torch.equal(z[:, keep], x[:, keep])


def test_affine_coupling_starts_at_identity_and_checks_input():
    net = {"name": "flowpp_net", "hidden_channels": 8, "num_blocks": 1, "num_heads": 2}
    layer = FlowPPAffineCoupling(4, net)
    x = torch.randn(2, 4, 3, 2)
    z, ldj = layer(x)
    assert torch.equal(z, x) and torch.equal(ldj, torch.zeros(2))
    with pytest.raises(ValueError, match="even number of channels"):
        FlowPPAffineCoupling(3, net)
    with pytest.raises(ShapeError, match="FlowPPAffineCoupling"):
        layer(torch.randn(2, 6, 3, 2))
    with pytest.raises(ValueError, match="needs a context"):
        _affine(False, context_channels=2)(x.double())


# ------------------------------------------------------------------------------------------
# the architecture: parameter counts against the official code
# ------------------------------------------------------------------------------------------


def test_cifar10_parameter_count_matches_official():
    with torch.device("meta"):
        model = flowpp()
    n = _num_params(model)
    # The official CIFAR-10 model (flows/run_cifar.py) has 31,443,440 parameters, the
    # arithmetic is in test_parameter_parity.py.
    assert n == 31_443_440
    deq = model.transforms[0]
    assert isinstance(deq, VariationalDequantization)
    assert _num_params(deq) == 3_466_976
    # the official scale is exp(tanh(s)): no learnable rescale
    mixtures = [m for m in model.modules() if isinstance(m, LogisticMixtureCoupling)]
    assert len(mixtures) == 13 and all(m.rescale is None for m in mixtures)


def test_learnable_rescale_is_a_named_option():
    # survae's earlier choice: a learnable per-channel scale of tanh in every mixture coupling,
    # one parameter per transformed channel: 4·3 + 2·6 + 3·12 = 60 in the main flow and
    # 4·3 = 12 in the dequantizer.
    with torch.device("meta"):
        model = flowpp(mixture_rescale=True)
    assert _num_params(model) == 31_443_440 + 72


def test_mixture_coupling_without_rescale_is_exp_tanh():
    """``rescale=False``: the elementwise log-scale is tanh(a_raw) itself, and the layer stays
    invertible with an exact log-determinant."""
    net = {"name": "flowpp_net", "hidden_channels": 8, "num_blocks": 1, "num_heads": 2}
    net["dropout"] = 0.0
    layer = LogisticMixtureCoupling(4, net, num_components=3, rescale=False).double()
    assert layer.rescale is None
    _perturb_couplings(layer, std=0.3)
    x = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    out = layer.net(x[:, :2]).view(3, 11, 2, 3, 3)
    a = layer._params(x[:, :2], None)[3]
    torch.testing.assert_close(a, torch.tanh(out[:, 9]))
    assert_invertible(layer, x, atol=1e-6, rtol=1e-5)
    assert_logdet_matches_autograd(layer, x[:2])


def _spec_from_configs(*experiment: str) -> dict:
    cfg = OmegaConf.load(CONFIGS / "model" / "flowpp.yaml")
    for name in experiment:
        exp = OmegaConf.load(CONFIGS / "experiment" / f"{name}.yaml")
        cfg = OmegaConf.merge(cfg, exp.get("model", {}))
    return OmegaConf.to_container(cfg, resolve=True)


def _model_from_configs(*experiment: str) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(_spec_from_configs(*experiment), (3, 32, 32), 256)


def test_model_config_is_the_official_cifar10_model():
    assert _num_params(_model_from_configs()) == 31_443_440


def test_imagenet32_config_is_the_official_model():
    # Official launcher: 168,955,724 (arithmetic in test_parameter_parity.py): weight-normalised
    # convolutions everywhere and a concat-ELU before each coupling network's output conv.
    model = _model_from_configs("flowpp_imagenet32")
    assert _num_params(model) == 168_955_724
    nets = [m for m in model.modules() if isinstance(m, FlowPPNet)]
    assert len(nets) == 8 + 13  # dequantizer + main flow
    assert all(n.output_concat_elu and isinstance(n.out, WeightNormConv2d) for n in nets)
    assert nets[-1].out.in_channels == 2 * 128
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(c, WeightNormConv2d) for c in convs)
    # without the two official features: survae's earlier ImageNet 32 model
    spec = _spec_from_configs("flowpp_imagenet32")
    spec.update(weight_norm=False, output_concat_elu=False, mixture_rescale=True)
    with torch.device("meta"):
        assert _num_params(build_model(spec, (3, 32, 32), 256)) == 157_424_681


def test_imagenet_features_keep_the_likelihood_exact():
    """Weight norm and the output concat-ELU change the networks only: the main flow stays a
    bijection with an exact log-determinant, and it starts at the identity."""
    model = flowpp(data_shape=(3, 4, 4), weight_norm=True, output_concat_elu=True, **SMALL).double()
    main = Sequential(list(model.transforms)[2:])  # after dequantization and logit
    u = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    main.eval()
    nets = [m for m in main.modules() if isinstance(m, FlowPPNet)]
    assert nets and all(isinstance(n.out, WeightNormConv2d) for n in nets)
    # zero gains and bias: every coupling network starts with a zero output
    h = nets[0](u[:, :3, :, :2])
    assert h.abs().sum() == 0 and h.shape[1] == 3 * (3 * 3 + 2)
    main.train()
    main(u)  # data-dependent init of the per-element norms
    _perturb_couplings(main)
    main.eval()
    assert_invertible(main, u[:2], atol=1e-6, rtol=1e-5)
    assert_logdet_matches_autograd(main, u[:2])


# ------------------------------------------------------------------------------------------
# the architecture: likelihood, sampling, bound
# ------------------------------------------------------------------------------------------


def test_small_model_shapes_log_prob_sample_and_bound():
    model = flowpp(data_shape=(3, 8, 8), **SMALL)
    assert not model.exact  # dequantization: a lower bound on the discrete log-likelihood
    x = _images(4)
    lp = model.log_prob(x)
    assert lp.shape == (4,) and torch.isfinite(lp).all()
    # an untrained model is near uniform noise: about 8 bits/dim, well below 0 in nats
    bpd = -lp.mean().item() / (3 * 64 * math.log(2))
    assert 6.0 < bpd < 12.0
    z, _ = model.transform_to_latent(x)
    assert z.shape == (4, 12, 4, 4)  # 3×8×8 → columns → squeeze → channels → columns
    model.eval()
    s = model.sample(3)
    assert s.shape == (3, 3, 8, 8)
    assert s.min() >= 0 and s.max() <= 255 and torch.equal(s, s.round())


def test_main_flow_invertible_with_exact_logdet():
    """Everything after the dequantizer is a bijection whose ldj is log|det J| (float64)."""
    model = flowpp(data_shape=(3, 4, 4), **SMALL).double()
    main = Sequential(list(model.transforms)[1:])
    u = torch.rand(6, 3, 4, 4, dtype=torch.float64) * 0.98 + 0.01
    main.train()
    main(u)  # data-dependent init of the per-element norms
    _perturb_couplings(main)
    for train in (True, False):
        main.train(train)
        assert_invertible(main, u[:2], atol=1e-6, rtol=1e-5)
    main.eval()
    assert_logdet_matches_autograd(main, u[:2])


def test_dequantizer_contribution_is_minus_log_q():
    """u = σ(flow(ε; context(x))) lies in (0, 1) and rounds back to x, and the layer's
    contribution is −D·log 256 − log q(u | x) with log q(u | x) = log N(ε) − log|det du/dε|
    from the autograd Jacobian (the same ε, replayed from the seed)."""
    model = flowpp(data_shape=(3, 4, 4), **SMALL).double()
    deq = model.transforms[0]
    x = torch.randint(0, 256, (2, 3, 4, 4)).double()
    deq(torch.randint(0, 256, (8, 3, 4, 4)).double())  # data-dependent init
    _perturb_couplings(deq)
    deq.eval()
    torch.manual_seed(3)
    z, ldj = deq(x)
    assert torch.equal(deq.inverse(z), x)
    torch.manual_seed(3)
    eps = torch.randn(2, 3, 4, 4).double()  # what the encoder's N(0, I) base draws
    ctx = deq.context_net(x * 2 / 255 - 1)

    def noise(e: torch.Tensor) -> torch.Tensor:
        for t in reversed(deq.encoder.transforms):
            e = t.inverse(e, ctx)
        return torch.sigmoid(e)

    u = noise(eps)
    assert ((u > 0) & (u < 1)).all()
    torch.testing.assert_close(z, (x + u) / 256)
    J = torch.autograd.functional.jacobian(noise, eps).reshape(2, 48, 2, 48)
    logdet = torch.stack([torch.linalg.slogdet(J[i, :, i])[1] for i in range(2)])
    log_q = -0.5 * (eps**2 + math.log(2 * math.pi)).sum((1, 2, 3)) - logdet
    torch.testing.assert_close(ldj, -48 * math.log(256) - log_q, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "override",
    [
        {},
        {"dequantization": "uniform"},
        {"coupling": "affine"},
        {"use_attention": False},
        {"attention": "pointwise"},
    ],
    ids=["full", "uniform_dequantization", "affine_coupling", "no_attention", "pointwise"],
)
def test_ablations_build_and_train_one_step(override):
    spec = {"architecture": "flowpp", **SMALL, **override}
    model = build_model(spec, (3, 8, 8), 256)
    assert not model.exact
    if override.get("dequantization") == "uniform":
        assert isinstance(model.transforms[0], UniformDequantization)
    if override.get("coupling") == "affine":
        assert any(isinstance(t, FlowPPAffineCoupling) for t in model.transforms)
    names = {type(m).__name__ for m in model.modules()}
    if override.get("use_attention") is False or override.get("attention") == "pointwise":
        assert "GatedSelfAttention" not in names
    assert ("GatedPointwiseMaxout" in names) == (override.get("attention") == "pointwise")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = -model.log_prob(_images(4)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    model.eval()
    assert model.sample(2).shape == (2, 3, 8, 8)


def test_builder_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"needs images \(C, H, W\)"):
        flowpp(data_shape=(2,), **SMALL)
    with pytest.raises(ValueError, match="num_bins"):
        flowpp(data_shape=(3, 8, 8), num_bins=None, **SMALL)
    with pytest.raises(ValueError, match="coupling must be one of"):
        flowpp(data_shape=(3, 8, 8), coupling="spline", **SMALL)
    with pytest.raises(ValueError, match="dequantization must be one of"):
        flowpp(data_shape=(3, 8, 8), dequantization="none", **SMALL)
    with pytest.raises(ValueError, match="channel split needs an even channel count"):
        flowpp(data_shape=(3, 8, 8), stages=[["channels", 2]], **SMALL)
    with pytest.raises(ValueError, match="expected 'squeeze' or"):
        flowpp(data_shape=(3, 8, 8), stages=[["rows", 2]], **SMALL)


def test_smoke_training_lowers_the_loss(ramp_images, train_bits_per_dim):
    """60 Adam steps of a small Flow++ on 16 tiny structured 8×8 images."""
    x = ramp_images
    model = flowpp(
        data_shape=(3, 8, 8), stages=[["columns", 2]], dequant_stages=[["columns", 1]], **SMALL
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first, last, losses = train_bits_per_dim(model, x, opt, steps=60)
    assert all(math.isfinite(v) for v in losses)
    assert last < first - 1.0, (first, last)
