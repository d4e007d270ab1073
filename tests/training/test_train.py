"""End-to-end runs on tiny toy data: checkpoints, loading, exact resume, NaN stop."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from survae import load_model
from survae.training import NonFiniteLossError, train
from survae.training.checkpoint import atomic_torch_save


def test_run_writes_checkpoints_and_loadable_model(make_config, capsys):
    cfg = make_config("trainer.max_epochs=2")
    results = train(cfg)
    out = capsys.readouterr().out
    assert "[survae] checkpoint:" in out and "test/nll" in out
    assert results["checkpoint"].endswith(".ckpt")
    value = results["test"]["test/nll"]
    assert math.isfinite(value) and results["test"]["test/exact"] == 1.0
    model = load_model(results["checkpoint"])
    assert model.exact and model.sample(5).shape == (5, 2)
    x = torch.randn(8, 2).clamp(-3, 3)
    assert torch.isfinite(model.log_prob(x)).all()


@pytest.mark.parametrize("retain", [True, False])
def test_retain_heap_setting_is_applied_once_and_logged(make_config, capsys, monkeypatch, retain):
    from survae.training import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "retain_heap", lambda: calls.append(1) or True)
    overrides = ["trainer.max_epochs=1", "+trainer.limit_train_batches=1", "test=false"]
    train(make_config(*overrides, f"retain_heap={str(retain).lower()}"))
    out = capsys.readouterr().out
    assert len(calls) == int(retain)
    assert ("[survae] heap: freed memory stays in the process" in out) is retain


def test_training_lowers_the_loss(make_config, tmp_path):
    overrides = ("data=eight_gaussians", "data.train_size=4096", "test=false")
    # separate folders: a folder that already holds a last.ckpt is continued, not restarted
    cfg = make_config(*overrides, "trainer.max_epochs=3", out=tmp_path / "after")
    before = train(
        make_config(
            *overrides, "trainer.max_epochs=1", "+trainer.limit_train_batches=1", out=tmp_path / "b"
        )
    )
    after = train(cfg)
    ck_before = torch.load(before["checkpoint"], weights_only=False)
    ck_after = torch.load(after["checkpoint"], weights_only=False)
    first = ck_before["callbacks"][
        next(k for k in ck_before["callbacks"] if "ModelCheckpoint" in k)
    ]
    last = ck_after["callbacks"][next(k for k in ck_after["callbacks"] if "ModelCheckpoint" in k)]
    assert float(last["best_model_score"]) < float(first["best_model_score"]) - 0.3


def _weights(path):
    state = torch.load(path, weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("model.")}


def test_resume_continues_exactly(make_config, tmp_path):
    full = train(make_config("trainer.max_epochs=2", "test=false", out=tmp_path / "full"))
    part_cfg = make_config("trainer.max_epochs=1", "test=false", out=tmp_path / "part")
    part = train(part_cfg)
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    assert last.exists() and part["checkpoint"]
    resumed = train(
        make_config(
            "trainer.max_epochs=2", "test=false", f"ckpt_path={last}", out=tmp_path / "resumed"
        )
    )
    a = _weights(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = _weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after resume")
    assert full["checkpoint"] and resumed["checkpoint"]


def test_nonfinite_loss_stops_with_step_and_layer_after_checkpoint(make_config, tmp_path):
    from survae.training.module import FlowModule
    from survae.training.pipeline import build_datamodule, data_info

    cfg = make_config()
    dm = build_datamodule(cfg["data"], seed=0)
    module = FlowModule(
        cfg["model"], data_info(dm), cfg["optim"], nonfinite_checkpoint_dir=str(tmp_path / "ckpts")
    )
    coupling = module.model.transforms[5]
    original = coupling.forward
    calls = {"n": 0}

    def poisoned(x, context=None):
        z, ldj = original(x, context)
        calls["n"] += 1
        return (z, ldj * float("nan")) if calls["n"] >= 4 else (z, ldj)

    coupling.forward = poisoned
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(module, datamodule=dm)
    msg = str(info.value)
    assert "at step 3" in msg and "transforms.5 (AffineCoupling)" in msg
    saved = tmp_path / "ckpts" / "nonfinite-step3.ckpt"
    assert saved.exists()
    state = torch.load(saved, weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nonfinite_diagnosis_names_the_layer(make_config):
    from survae.models import build_model

    cfg = make_config()
    model = build_model(cfg["model"], (2,))
    with torch.no_grad():
        model.transforms[3].net[0].weight.fill_(float("nan"))
    assert model.first_nonfinite_layer(torch.randn(4, 2)) == "transforms.3 (AffineCoupling)"
    assert model.first_nonfinite_layer(torch.full((4, 2), float("nan"))) == "input"


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_resume_with_reset_lr_uses_the_new_learning_rate(make_config, tmp_path):
    first = make_config("trainer.max_epochs=1", "test=false", "optim.warmup_steps=100",
                        out=tmp_path / "a")  # fmt: skip
    train(first)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    cooldown = make_config(
        "trainer.max_epochs=2", "test=false", f"ckpt_path={last}", "optim.lr=2e-5",
        "optim.warmup_steps=0", "optim.reset_lr_on_resume=true", out=tmp_path / "b",
    )  # fmt: skip
    train(cooldown)
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    lrs = [g["lr"] for g in state["optimizer_states"][0]["param_groups"]]
    assert lrs == [pytest.approx(2e-5)]
    assert state["global_step"] == 8  # 4 steps per epoch (512 points, batch 128), 2 epochs


def test_toy_runs_write_a_density_figure_each_epoch(make_config, tmp_path):
    cfg = make_config("trainer.max_epochs=2", "callbacks.samples.every_n_epochs=1", "test=false")
    train(cfg)
    figures = sorted((tmp_path / "run" / "samples").glob("samples_epoch*.png"))
    assert [f.name for f in figures] == ["samples_epoch0000.png", "samples_epoch0001.png"]
    assert all(f.stat().st_size > 1000 for f in figures)


@pytest.mark.parametrize(("precision", "fused"), [("32-true", True), ("16-mixed", False)])
def test_fused_adam_unless_a_grad_scaler_needs_to_clip(make_config, precision, fused):
    from types import SimpleNamespace

    from survae.training.module import FlowModule
    from survae.training.pipeline import build_datamodule, data_info

    cfg = make_config()
    cfg["optim"] = {**cfg["optim"], "name": "adam"}
    info = data_info(build_datamodule(cfg["data"], seed=0))
    module = FlowModule(cfg["model"], info, cfg["optim"])
    module._trainer = SimpleNamespace(precision=precision, estimated_stepping_batches=10)
    module._steps_per_epoch = lambda: 10
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is fused
