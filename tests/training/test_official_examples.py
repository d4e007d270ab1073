"""The official SurVAE examples as experiments: mnist_vae, toy_flow and toy_aug_flow compose,
build the example's model and train on tiny data (the generic one-step check of every
experiment is tests/test_experiments.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import QUIET, compose_config, tiny_data  # noqa: E402

from survae.distributions import ConditionalBernoulli, ConditionalNormal  # noqa: E402
from survae.models import build_model  # noqa: E402
from survae.training.pipeline import build_datamodule, data_info, train  # noqa: E402
from survae.transforms import VAE, ActNorm, AffineCoupling, Augment, Reshape  # noqa: E402


def _model(cfg: dict, dm) -> torch.nn.Module:
    info = data_info(dm)
    return build_model(cfg["model"], info["shape"], info["num_bins"])


def test_mnist_vae_is_the_example(tmp_path):
    from survae.data.fake import write_fake_dataset

    cfg = compose_config(["experiment=mnist_vae", "logger=none"], tmp_path / "run")
    assert cfg["test_iw_samples"] == 10 and cfg["data"]["binarize"] is True
    assert cfg["data"]["batch_size"] == 128 and cfg["trainer"]["max_epochs"] == 20
    write_fake_dataset("mnist", tmp_path / "data", num=48)
    data = {**cfg["data"], "root": str(tmp_path / "data"), "val_size": 8, "batch_size": 4}
    dm = build_datamodule(data, seed=0)
    assert dm.num_bins == 2
    model = _model(cfg, dm)
    assert isinstance(model.transforms[0], Reshape)
    vae = model.transforms[1]
    assert isinstance(vae, VAE) and not model.exact
    assert isinstance(vae.encoder, ConditionalNormal)
    assert isinstance(vae.decoder, ConditionalBernoulli)
    assert model.base_dist.shape == (20,)
    dm.setup("fit")
    x = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and set(x.unique().tolist()) <= {0, 1}
    log_p = model.log_prob(x)
    assert log_p.shape == (4,) and torch.isfinite(log_p).all()
    # the decoder's likelihood of a binary image is at most 1: log p(x|z) <= 0
    z, _ = vae.encoder.sample_with_log_prob(4, context=x.flatten(1))
    assert torch.all(vae.decoder.log_prob(x.flatten(1), context=z) <= 0)
    samples = model.sample(3)
    assert samples.shape == (3, 1, 28, 28) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_toy_flow_and_toy_aug_flow_train_on_tiny_data(tmp_path):
    overrides = [*tiny_data(256), *QUIET, "trainer.max_epochs=1"]
    cfg = compose_config(["experiment=toy_flow", *overrides], tmp_path / "flow")
    dm = build_datamodule(cfg["data"], seed=0)
    model = _model(cfg, dm)
    kinds = [type(t) for t in model.transforms]
    assert kinds.count(AffineCoupling) == 4 and kinds.count(ActNorm) == 4 and model.exact
    results = train(cfg)
    assert math.isfinite(results["test"]["test/nll"])

    cfg = compose_config(["experiment=toy_aug_flow", *overrides], tmp_path / "aug")
    assert cfg["test_iw_samples"] == 10
    dm = build_datamodule(cfg["data"], seed=0)
    model = _model(cfg, dm)
    assert isinstance(model.transforms[0], Augment) and not model.exact
    couplings = [t for t in model.transforms if isinstance(t, AffineCoupling)]
    assert len(couplings) == 4 and all(t.scale_fn == "softplus" for t in couplings)
    assert model.base_dist.shape == (4,)
    assert model.sample(5).shape == (5, 2)
    cfg["test_iw_samples"] = 4
    results = train(cfg)
    assert math.isfinite(results["test"]["test/nll"]) and results["test"]["test/exact"] == 0.0


def test_mnist_hvae_stacks_two_vae_layers(tmp_path):
    from survae.data.fake import write_fake_dataset

    cfg = compose_config(["experiment=mnist_hvae", "logger=none"], tmp_path / "run")
    assert cfg["test_iw_samples"] == 10 and cfg["data"]["binarize"] is True
    write_fake_dataset("mnist", tmp_path / "data", num=48)
    data = {**cfg["data"], "root": str(tmp_path / "data"), "val_size": 8, "batch_size": 4}
    dm = build_datamodule(data, seed=0)
    model = _model(cfg, dm)
    first, second = model.transforms[1], model.transforms[2]
    assert isinstance(first.decoder, ConditionalBernoulli)
    assert isinstance(second.decoder, ConditionalNormal) and model.base_dist.shape == (10,)
    dm.setup("fit")
    log_p = model.log_prob(next(iter(dm.train_dataloader())))
    assert log_p.shape == (4,) and torch.isfinite(log_p).all()
    assert model.sample(2).shape == (2, 1, 28, 28)


def test_aug_flow_cifar10_is_the_example(tmp_path):
    from survae.distributions import StandardUniform
    from survae.transforms import Conv1x1, Slice, Squeeze2d, UniformDequantization

    cfg = compose_config(["experiment=aug_flow_cifar10", "logger=none"], tmp_path / "run")
    assert cfg["data"]["batch_size"] == 32 and cfg["data"]["augment"] is False
    model = build_model(cfg["model"], (3, 32, 32), 256)
    kinds = [type(t) for t in model.transforms]
    assert kinds[0] is UniformDequantization and kinds[1] is Augment
    assert isinstance(model.transforms[1].encoder, StandardUniform)
    assert kinds.count(AffineCoupling) == 12 and kinds.count(Conv1x1) == 12
    assert kinds.count(Squeeze2d) == 2 and kinds.count(Slice) == 2
    assert model.base_dist.shape == (24, 8, 8)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    log_p = model.log_prob(x)
    assert log_p.shape == (2,) and torch.isfinite(log_p).all() and not model.exact
    assert model.sample(2).shape == (2, 3, 32, 32)


def test_mnist_vae_trains_end_to_end_on_tiny_files(tmp_path):
    from survae.data.fake import write_fake_dataset

    write_fake_dataset("mnist", tmp_path / "data", num=48)
    overrides = [
        "experiment=mnist_vae",
        *QUIET,
        f"data.root={tmp_path / 'data'}",
        "data.val_size=8",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "trainer.max_epochs=1",
        "test_iw_samples=3",
    ]
    results = train(compose_config(overrides, tmp_path / "run"))
    assert math.isfinite(results["test"]["test/bpd"]) and results["test"]["test/exact"] == 0.0
