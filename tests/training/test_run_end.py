"""How a run ends and what it records: a validation at its last step (also mid-epoch, at
``max_steps``), so every finished run has a validation value, a best checkpoint and a float for
sweepers; results.json's state, reason, fractional epochs and, for resumed runs, the effective
overrides, the wall time of all sessions and the last validation value; a record for a run
that diverged or failed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY_TOY, run_cli  # noqa: E402  (tests/training/conftest.py)

from survae.app.cli import sweep_objective  # noqa: E402
from survae.training.pipeline import train  # noqa: E402
from survae.training.resume import resume_config  # noqa: E402


def _record(results: dict) -> dict:
    return json.loads((Path(results["output_dir"]) / "results.json").read_text())


def test_run_stopped_by_max_steps_mid_epoch_validates_at_its_last_step(make_config):
    # 512 points in batches of 64: 8 steps an epoch; 12 steps stop in the middle of epoch 2
    results = train(
        make_config("data.batch_size=64", "trainer.max_steps=12", "test_checkpoint=best")
    )
    record = _record(results)
    assert results["val"]["last"] is not None and results["val"]["best"] is not None
    assert Path(results["best_checkpoint"]).name == "best-001-12.ckpt"  # saved at step 12
    assert results["checkpoint"] == results["best_checkpoint"]
    assert record["test_checkpoint"] == "best" and record["checkpoint"] == results["checkpoint"]
    assert record["state"] == "finished" and record["reason"] is None
    assert record["val"] == pytest.approx(results["val"]["best"])
    assert record["steps"] == 12 and record["epochs"] == 1.5 and record["completed_epochs"] == 1
    assert isinstance(sweep_objective(results, "val_best"), float)
    assert isinstance(sweep_objective(results, "val_last"), float)


def test_last_epoch_validates_even_when_it_is_not_a_validation_epoch(make_config):
    results = train(make_config("trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"))
    assert _record(results)["epochs"] == 3.0
    assert Path(results["best_checkpoint"]).name.startswith("best-002-")  # epoch 3 validated


def test_record_of_a_run_without_validation_names_the_tested_weights(make_config):
    results = train(make_config("trainer.max_steps=3", "+trainer.limit_val_batches=0"))
    record = _record(results)
    assert results["val"]["best"] is None  # nothing to validate on: last weights tested
    assert record["test_checkpoint"] == "last"
    assert record["checkpoint"] == results["last_checkpoint"]


def test_resumed_run_records_its_overrides_total_time_and_last_value(make_config, tmp_path):
    first = train(make_config("trainer.max_epochs=2", "data.batch_size=128"))
    folder = first["output_dir"]
    before = _record(first)
    cfg, changes = resume_config([f"resume={folder}", "trainer.max_epochs=4"])
    assert changes == ["trainer.max_epochs: 2 -> 4"]
    second = train(cfg)
    record = _record(second)
    assert "trainer.max_epochs=4" in record["overrides"]
    assert "trainer.max_epochs=2" not in record["overrides"]
    assert record["steps"] == 16 and record["epochs"] == 4.0
    assert record["wall_time_s"] >= before["wall_time_s"] + record["session_wall_time_s"] - 0.2
    assert record["wall_time_s"] > record["session_wall_time_s"]
    # resumed again with nothing left to train: the last value comes from the checkpoint
    cfg, _ = resume_config([f"resume={folder}"])
    third = _record(train(cfg))
    assert third["val_last"] == pytest.approx(record["val_last"])
    assert third["epochs"] == 4.0 and third["state"] == "finished"


def test_diverged_run_leaves_a_record_with_state_and_reason(make_config):
    from survae.training import NonFiniteLossError

    cfg = make_config("trainer.max_steps=20", "optim.lr=1e8", "optim.warmup_steps=0")
    with pytest.raises(NonFiniteLossError):
        train(cfg)
    record = json.loads((Path(cfg["paths"]["output_dir"]) / "results.json").read_text())
    assert record["state"] == "diverged" and "step" in record["reason"]
    assert record["finished"] is False and record["test"] is None


def test_failed_run_leaves_a_record_with_state_and_reason(make_config, monkeypatch):
    from survae.training import module as module_mod

    def broken(self, batch, batch_idx):
        raise RuntimeError("broken step\nsecond line")

    monkeypatch.setattr(module_mod.FlowModule, "training_step", broken)
    cfg = make_config("trainer.max_steps=2")
    with pytest.raises(RuntimeError):
        train(cfg)
    record = json.loads((Path(cfg["paths"]["output_dir"]) / "results.json").read_text())
    assert record["state"] == "failed"
    assert record["reason"] == "RuntimeError: broken step second line"


@pytest.mark.slow
def test_optuna_sweep_bounded_by_max_steps_gets_a_value_from_every_trial(tmp_path):
    args = ["-m", "hparams_search=optuna_toy", "experiment=abs_flow_corners"]
    args += ["hydra.sweeper.n_trials=3", "trainer.max_steps=12", *TINY_TOY]
    proc = run_cli(args, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Best value:" in proc.stdout + proc.stderr
    records = [json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/results.json")]
    assert len(records) == 3
    for record in records:  # every trial: a validation value, or a record of why not
        if record["state"] == "finished":
            assert isinstance(record["val"], float)
        else:
            assert record["state"] == "diverged" and record["reason"]


def test_logger_config_holds_the_run_config_once(make_config, monkeypatch):
    from pytorch_lightning.loggers import WandbLogger

    logged: list[dict] = []
    original = WandbLogger.log_hyperparams

    def record(self, params, *args, **kwargs):
        logged.append(dict(params))
        return original(self, params, *args, **kwargs)

    monkeypatch.setattr(WandbLogger, "log_hyperparams", record)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_config("trainer.max_steps=2")
    cfg["logger"] = {"type": "wandb", "project": "survae-test", "mode": "offline"}
    train(cfg)
    keys = [k for params in logged for k in params]
    assert "data" in keys and "model" in keys and "num_parameters" in keys
    for duplicate in ("data_config", "model_spec", "data_info", "optim_config"):
        assert duplicate not in keys
    assert len(keys) == len(set(keys))
