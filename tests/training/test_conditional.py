"""Conditional density estimation end to end: data with context, conditional models and bases,
training, per-class sampling and figures, and unconditional configs left unchanged."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from survae import registry
from survae.architectures.conditional import ConditionalGlowTopPrior, conditional_glow
from survae.architectures.glow import glow
from survae.architectures.nsf import nsf
from survae.data.conditional_toy import mode_centres
from survae.data.fake import write_fake_dataset
from survae.data.io import read_idx
from survae.testing import grid_integral
from survae.training import plots
from survae.training.callbacks import SampleFigures
from survae.training.module import FlowModule, split_batch
from survae.training.pipeline import build_datamodule, data_info


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _randomize(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def _tiny_glow(builder, **extra) -> torch.nn.Module:
    """A two-level Glow-family model on ``1x8x8`` images of 17 levels, built from seed 0 (so
    two builds with the same layers have the same weights)."""
    torch.manual_seed(0)
    return builder((1, 8, 8), 17, num_levels=2, num_steps=2, hidden_channels=8, **extra)


def _log_prob(flow, x, context=None) -> torch.Tensor:
    """``flow.log_prob(x, context)`` under seed 1: the same dequantization noise every call."""
    torch.manual_seed(1)
    return flow.log_prob(x) if context is None else flow.log_prob(x, context)


# ------------------------------------------------------------------ data
def test_conditional_toys_yield_context_and_registered():
    assert "gaussian_classes" in registry.available("dataset")
    dm = registry.build("dataset", "gaussian_classes", conditional=True, train_size=400,
                        val_size=10, test_size=10, batch_size=400)  # fmt: skip
    x, c = next(iter(dm.train_dataloader()))
    assert x.shape == (400, 2) and c.shape == (400, 4)
    assert torch.equal(c.sum(1), torch.ones(400))
    # every point lies near one of its class's two modes
    nearest = torch.cdist(x.double(), torch.from_numpy(mode_centres())).argmin(1)
    assert (nearest // 2 == c.argmax(1)).float().mean() > 0.99
    moons = registry.build("dataset", "rotated_moons", conditional=True, train_size=64,
                           val_size=8, test_size=8, batch_size=64)  # fmt: skip
    x, c = next(iter(moons.train_dataloader()))
    torch.testing.assert_close(c.norm(dim=1), torch.ones(64))  # (cos θ, sin θ)
    assert moons.sample_contexts().shape == (4, 2)


def test_unconditional_data_is_unchanged():
    kw = {"train_size": 64, "val_size": 8, "test_size": 8, "batch_size": 16}
    plain = registry.build("dataset", "gaussian_classes", **kw)
    cond = registry.build("dataset", "gaussian_classes", conditional=True, **kw)
    x = next(iter(plain.train_dataloader()))
    assert isinstance(x, torch.Tensor)
    x_c, _ = next(iter(cond.train_dataloader()))
    assert torch.equal(x, x_c)  # the same points in the same order, context aside
    info = data_info(plain)
    assert "context_features" not in info and "sample_contexts" not in info
    digits = registry.build("dataset", "digits", batch_size=8)
    assert isinstance(next(iter(digits.train_dataloader())), torch.Tensor)


def test_labelled_images_give_one_hot_labels(tmp_path):
    write_fake_dataset("fashion_mnist", tmp_path, num=48)
    dm = registry.build("dataset", "fashion_mnist", root=str(tmp_path), conditional=True,
                        val_size=8, batch_size=48)  # fmt: skip
    dm.setup()
    x, c = dm.test_set.__getitems__(list(range(len(dm.test_set))))
    labels = read_idx(next((tmp_path / "FashionMNIST/raw").glob("t10k-labels*")))
    assert torch.equal(c.argmax(1), torch.from_numpy(labels.astype(np.int64)))
    assert x.dtype == torch.uint8 and c.shape == (len(x), 10)
    info = data_info(dm)
    assert info["context_features"] == 10 and len(info["sample_contexts"]) == 10


def test_conditional_without_labels_is_a_clear_error():
    with pytest.raises(ValueError, match=r"data.conditional=true.*checkerboard"):
        registry.build("dataset", "checkerboard", conditional=True)


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("transform", ["coupling", "autoregressive"])
def test_conditional_density_integrates_to_one_per_context(transform):
    torch.manual_seed(0)
    flow = nsf((2,), transform=transform, num_steps=2, hidden=16, bins=4, context_features=2,
               base="context_normal")  # fmt: skip
    flow = _randomize(flow, std=0.05).double()  # smooth enough for a 250² midpoint rule
    points = torch.randn(16, 2, dtype=torch.float64)
    values = []
    for angle in (0.0, 2.0):
        ctx = torch.tensor([[math.cos(angle), math.sin(angle)]], dtype=torch.float64)

        def lp(p, ctx=ctx):
            return flow.log_prob(p, ctx.expand(p.shape[0], -1))

        assert math.isclose(grid_integral(lp, -8.0, 8.0, n=250), 1.0, abs_tol=1e-3)
        values.append(lp(points))
    assert (values[0] - values[1]).abs().max() > 1e-3  # the density depends on the context


def test_conditional_glow_starts_as_glow_and_adds_only_the_class_map():
    plain = _tiny_glow(glow)
    cond = _tiny_glow(conditional_glow, context_features=10)
    assert isinstance(cond.base_dist, ConditionalGlowTopPrior)
    n_plain = sum(p.numel() for p in plain.parameters())
    n_cond = sum(p.numel() for p in cond.parameters())
    top_channels = cond.base_dist.shape[0]
    assert n_cond - n_plain == 10 * 2 * top_channels + 2 * top_channels  # the linear map only
    x = torch.randint(0, 17, (4, 1, 8, 8))
    c = torch.eye(10)[[0, 3, 7, 9]]
    torch.testing.assert_close(_log_prob(cond, x, c), _log_prob(plain, x))
    with pytest.raises(ValueError, match="context"):
        cond.log_prob(x)
    samples = cond.sample(4, context=c, temperature=0.7)
    assert samples.shape == (4, 1, 8, 8)


def test_conditional_glow_class_embedding_in_the_couplings():
    from survae.architectures.conditional import ClassEmbeddingContext
    from survae.testing import assert_invertible, assert_logdet_matches_autograd
    from survae.transforms.bijections.coupling import AffineCoupling

    E = 3
    base = _tiny_glow(conditional_glow, context_features=10)
    cond = _tiny_glow(conditional_glow, context_features=10, class_embedding=E)
    wrapped = [m for m in cond.modules() if isinstance(m, ClassEmbeddingContext)]
    assert len(wrapped) == 2 * 2 and all(isinstance(w.layer, AffineCoupling) for w in wrapped)
    assert all(w.layer.context_channels == E for w in wrapped)
    # extra parameters: per coupling the embedding (10 x E) and E input channels of the
    # network's first 3x3 convolution (8 filters)
    n_base = sum(p.numel() for p in base.parameters())
    n_cond = sum(p.numel() for p in cond.parameters())
    assert n_cond - n_base == len(wrapped) * (10 * E + E * 8 * 3 * 3)
    x = torch.randint(0, 17, (4, 1, 8, 8))
    c1, c2 = torch.eye(10)[[0, 3, 7, 9]], torch.eye(10)[[1, 1, 2, 5]]
    # zero embedding: class-blind start
    torch.testing.assert_close(_log_prob(cond, x, c2), _log_prob(cond, x, c1))
    with torch.no_grad():
        for w in wrapped:
            w.embedding.weight.normal_()
        for w in wrapped:  # the coupling networks' output layers start at zero
            for p in w.layer.net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    # now the couplings see the class
    assert (_log_prob(cond, x, c2) - _log_prob(cond, x, c1)).abs().max() > 1e-4
    layer = copy.deepcopy(wrapped[0]).double()
    z = torch.randn(3, 4, 4, 4, dtype=torch.float64)
    c = torch.eye(10, dtype=torch.float64)[[2, 4, 6]]
    assert_invertible(layer, z, c, atol=1e-8, rtol=1e-8)
    assert_logdet_matches_autograd(layer, z, c)
    with pytest.raises(ValueError, match="context"):
        layer(z)
    samples = cond.sample(4, context=c1, temperature=0.7)
    assert samples.shape == (4, 1, 8, 8)


def test_unconditional_glow_unchanged_by_the_coupling_context_option():
    plain = _tiny_glow(glow)
    same = _tiny_glow(glow, coupling_context_channels=0)
    a, b = plain.state_dict(), same.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randint(0, 17, (4, 1, 8, 8))
    torch.testing.assert_close(_log_prob(same, x), _log_prob(plain, x))


def test_module_steps_and_figures_with_context(tmp_path, monkeypatch):
    data_cfg = {"name": "digits", "conditional": True, "batch_size": 16}
    dm = build_datamodule(data_cfg, seed=0)
    spec = {"architecture": "conditional_glow", "context_features": 10, "num_levels": 1,
            "num_steps": 1, "hidden_channels": 8}  # fmt: skip
    module = FlowModule(spec, data_info(dm))
    batch = next(iter(dm.train_dataloader()))
    x, c = split_batch(batch)
    loss = module.training_step(batch, 0)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    expected = module.metric(module.model.log_prob(x, c), module.metric_size).mean()
    assert abs(loss.item() - expected.item()) < 0.1  # same data, fresh dequantization noise
    drawn = {}

    def fake_grid(samples, num_bins, path, nrow=None, **kwargs):
        drawn.update(samples=samples, nrow=nrow)
        return path

    monkeypatch.setattr(plots, "image_grid", fake_grid)
    calls = []
    original = module.sample

    def spy(num_samples, temperature=1.0, context=None):
        calls.append(context)
        return original(num_samples, temperature=temperature, context=context)

    monkeypatch.setattr(module, "sample", spy)
    SampleFigures(str(tmp_path), num_samples=20).make_figure(module, tmp_path / "grid.png")
    # one row of 2 samples per class, rows in class order
    assert drawn["nrow"] == 2 and drawn["samples"].shape == (20, 1, 8, 8)
    assert torch.equal(calls[0].argmax(1), torch.arange(10).repeat_interleave(2))


def test_unconditional_module_matches_the_model():
    dm = build_datamodule({"name": "checkerboard", "train_size": 64, "val_size": 8,
                           "test_size": 8, "batch_size": 32}, seed=0)  # fmt: skip
    module = FlowModule({"architecture": "nsf", "num_steps": 2, "hidden": 8}, data_info(dm))
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, torch.Tensor)
    loss = module.training_step(batch, 0)
    torch.testing.assert_close(loss, -module.model.log_prob(batch).mean())


def test_trained_conditional_toy_samples_its_class_modes():
    """Trains the conditional 2-D NSF on the four-class toy (a few seconds on one CPU thread)
    and checks that samples for class c fall in class c's two modes."""
    torch.manual_seed(0)
    dm = registry.build("dataset", "gaussian_classes", conditional=True, train_size=20_000,
                        val_size=10, test_size=10, batch_size=256)  # fmt: skip
    flow = nsf((2,), num_steps=2, hidden=32, num_blocks=1, bins=6, tail_bound=4.5,
               context_features=4, base="context_normal")  # fmt: skip
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    steps = 0
    while steps < 400:
        for x, c in dm.train_dataloader():
            loss = -flow.log_prob(x, c).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if steps == 400:
                break
    flow.eval()
    centres = torch.from_numpy(mode_centres()).float()
    for cls in range(4):
        s = flow.sample(500, context=torch.eye(4)[[cls] * 500])
        nearest = torch.cdist(s, centres).argmin(1)
        in_class = (nearest // 2 == cls).float().mean().item()
        assert in_class > 0.9, f"class {cls}: only {in_class:.2f} of its samples in its modes"


def test_conditional_layer_list_infers_its_base_shape():
    """A conditional layer stack needs no base shape: it is inferred with a dummy context of
    the data's context size (the model then trains and samples per context)."""
    from survae.models import build_model

    spec = {
        "layers": [
            {"name": "maf", "features": 2, "hidden": [8], "context_features": 3},
            {"name": "reverse"},
            {"name": "maf", "features": 2, "hidden": [8], "context_features": 3},
        ],
        "base": {"name": "standard_normal"},
    }
    flow = build_model(spec, (2,), context_features=3)
    assert tuple(flow.base_dist.shape) == (2,)
    c = torch.randn(5, 3)
    assert flow.log_prob(torch.randn(5, 2), c).shape == (5,)
    assert flow.sample(5, context=c).shape == (5, 2)
    with pytest.raises(ValueError, match="context"):
        build_model(spec, (2,))  # without the context size the conditional layers cannot run
    dm = build_datamodule(
        {"name": "rotated_moons", "conditional": True, "train_size": 64, "val_size": 8,
         "test_size": 8, "batch_size": 16}, seed=0,
    )  # fmt: skip
    info = data_info(dm)
    module = FlowModule({**spec, "layers": [
        {**layer, "context_features": info["context_features"]} if layer["name"] == "maf"
        else layer for layer in spec["layers"]]}, info)  # fmt: skip
    batch = next(iter(dm.train_dataloader()))
    assert math.isfinite(module.training_step(batch, 0).item())


# ------------------------------------------------------------------ tabular context columns
def test_tabular_context_columns_split_off_the_context(tmp_path):
    """data.context_columns on a UCI set (tiny files in the real format): batches are
    (x, context) with the listed columns as context and the others, in order, as x."""
    write_fake_dataset("power", tmp_path, num=200)
    plain = build_datamodule({"name": "power", "root": str(tmp_path), "batch_size": 8}, seed=0)
    plain.setup()
    full = plain.train_set.data
    dm = build_datamodule(
        {"name": "power", "root": str(tmp_path), "batch_size": 8, "context_columns": [5, 1]},
        seed=0,
    )
    assert dm.conditional and dm.context_size == 2 and dm.shape == (4,)
    info = data_info(dm)
    assert info["context_features"] == 2 and info["shape"] == [4]
    dm.setup()
    x, c = dm.train_set.data, dm.train_set.context
    torch.testing.assert_close(x, full[:, [0, 2, 3, 4]])
    torch.testing.assert_close(c, full[:, [5, 1]])
    batch = next(iter(dm.train_dataloader()))
    bx, bc = split_batch(batch)
    assert bx.shape == (8, 4) and bc.shape == (8, 2)
    # negative indices count from the end
    neg = build_datamodule(
        {"name": "power", "root": str(tmp_path), "batch_size": 8, "context_columns": [-1]}, 0
    )
    neg.setup()
    torch.testing.assert_close(neg.train_set.context, full[:, [5]])


@pytest.mark.parametrize(
    "columns, match",
    [([6], "out of range"), ([1, -5], "repeated"), ([], "at least one column"),
     ([0, 1, 2, 3, 4, 5], "at least one column"), (["a"], "integers"), (3, "list")],
)  # fmt: skip
def test_bad_context_columns_name_the_key(columns, match, tmp_path):
    from survae.config_check import ConfigError

    with pytest.raises(ConfigError, match=rf"data\.context_columns.*{match}"):
        build_datamodule({"name": "power", "root": str(tmp_path), "context_columns": columns}, 0)


def test_conditional_maf_power_experiment_trains_on_tiny_files(tmp_path):
    """maf_power_conditional composes, infers its base shape, and trains a step on POWER's real
    file format with the time of day as context; the context changes the density."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import compose_config

    cfg = compose_config(["experiment=maf_power_conditional", "logger=none"], tmp_path / "run")
    assert cfg["data"]["context_columns"] == [5]
    write_fake_dataset("power", tmp_path / "data", num=200)
    data = {**cfg["data"], "root": str(tmp_path / "data"), "batch_size": 16, "num_workers": 0}
    dm = build_datamodule(data, seed=0)
    module = FlowModule(cfg["model"], data_info(dm), cfg["optim"])
    assert tuple(module.model.base_dist.shape) == (5,)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    x, c = split_batch(batch)
    assert x.shape == (16, 5) and c.shape == (16, 1)
    loss = module.training_step(batch, 0)
    assert math.isfinite(loss.item())
    loss.backward()
    made = module.model.transforms[0].made
    assert made.context_output.weight.grad.abs().sum() > 0  # the context is used
    _randomize(module.model)
    module.model.eval()
    with torch.no_grad():
        assert (module.model.log_prob(x, c) - module.model.log_prob(x, c + 1.0)).abs().max() > 0
        assert module.model.sample(4, context=c[:4]).shape == (4, 5)
