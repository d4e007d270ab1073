"""Learning-rate schedules against hand computations; logger selection without network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from survae.config_check import ConfigError
from survae.training import loggers
from survae.training.optim import build_optimizer, build_scheduler, has_fused, lr_factor


def test_lr_factor_warmup_then_decay_by_hand():
    # warm-up over 4 steps, then 0.5 per "epoch" of 10 steps
    assert lr_factor(0, warmup_steps=4) == pytest.approx(0.25)
    assert lr_factor(2, warmup_steps=4) == pytest.approx(0.75)
    assert lr_factor(3, warmup_steps=4) == pytest.approx(1.0)
    assert lr_factor(9, warmup_steps=4, decay=0.5, decay_every=10) == pytest.approx(1.0)
    assert lr_factor(10, warmup_steps=4, decay=0.5, decay_every=10) == pytest.approx(0.5)
    assert lr_factor(25, warmup_steps=4, decay=0.5, decay_every=10) == pytest.approx(0.25)


def test_scheduler_applies_the_factor_to_the_optimiser():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], {"name": "adamax", "lr": 1e-3})
    assert isinstance(opt, torch.optim.Adamax)
    sched = build_scheduler(opt, {"lr": 1e-3, "warmup_steps": 2, "decay": 0.9}, steps_per_epoch=3)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [5e-4, 1e-3, 1e-3, 9e-4, 9e-4, 9e-4, 8.1e-4]
    assert lrs == pytest.approx(expected)


def test_bad_optimiser_names_the_valid_ones():
    with pytest.raises(ConfigError, match="adam, adamax, adamw"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], {"name": "sgd"})
    with pytest.raises(ConfigError, match="decay_every"):
        build_scheduler(
            torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]), {"decay_every": "week"}, 1
        )


def test_wandb_mode_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert loggers.resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert loggers.resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert loggers.resolve_wandb_mode("auto") == "disabled"


def test_unknown_logger_lists_choices(tmp_path):
    with pytest.raises(ConfigError, match="wandb, csv, tensorboard, none"):
        loggers.build_logger({"type": "mlflow"}, str(tmp_path))


def test_wandb_logger_writes_an_offline_run(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = loggers.build_logger(
        {"type": "wandb", "project": "survae-test", "tags": ["t"]},
        str(tmp_path),
        run_config={"seed": 3},
    )
    logger.log_metrics({"train/nll": 1.5}, step=1)
    logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, "no offline W&B run written"


def test_online_failure_falls_back_to_offline(monkeypatch, tmp_path):
    calls = []
    real = loggers._wandb_logger

    def flaky(cfg, name, save_dir, mode, *rest):
        calls.append(mode)
        if mode == "online":
            raise ConnectionError("no route to host")
        return real(cfg, name, save_dir, mode, *rest)

    monkeypatch.setattr(loggers, "_wandb_logger", flaky)
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.warns(UserWarning, match="logging offline"):
        logger = loggers.build_logger({"type": "wandb"}, str(tmp_path))
    assert calls == ["online", "offline"]
    logger.experiment.finish()


def test_wandb_run_keeps_its_id_and_a_sweep_shares_one_folder(monkeypatch, tmp_path):
    """A requeued or resumed run continues its W&B run (same id); ``logger.dir`` (a sweep's
    folder) holds the W&B files of all its jobs."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir, shared = tmp_path / "0_job", tmp_path / "sweep"
    run_dir.mkdir()
    ids = []
    for _ in range(2):  # the job and its requeued self
        logger = loggers.build_logger({"type": "wandb", "dir": str(shared)}, str(run_dir))
        ids.append(logger.experiment.id)
        loggers.finish_logger(logger, failed=False)
    assert ids[0] == ids[1] == (run_dir / loggers.WANDB_ID_FILE).read_text().strip()
    assert list((shared / "wandb").glob(f"offline-run-*-{ids[0]}"))  # one a second at most
    assert not (run_dir / "wandb").exists()


def test_wandb_logging_survives_the_loss_of_its_service(monkeypatch, tmp_path):
    """Slurm's SIGTERM reaches W&B's service too: the run's later logging calls and its
    finish must not fail the run (it still has to save and stop cleanly)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = loggers.build_logger({"type": "wandb"}, str(tmp_path))

    def gone(*args, **kwargs):
        raise ConnectionResetError("Connection lost")

    monkeypatch.setattr(logger.experiment, "log", gone)
    monkeypatch.setattr(logger.experiment, "finish", gone)
    monkeypatch.setattr(loggers, "_teardown_lost_service", lambda: None)  # it is not gone
    with pytest.warns(UserWarning, match="service is gone"):
        logger.log_metrics({"train/nll": 1.0}, step=1)
    logger.log_metrics({"train/nll": 2.0}, step=2)  # dropped, no second warning
    with pytest.warns(UserWarning, match="could not be finished"):
        loggers.finish_logger(logger, failed=False)
    monkeypatch.undo()
    logger.experiment.finish()


def test_csv_logger_of_a_resumed_run_keeps_the_earlier_metrics(tmp_path):
    for value in (1.0, 2.0):
        logger = loggers.build_logger({"type": "csv"}, str(tmp_path))
        logger.log_metrics({"train/nll": value}, step=int(value))
        loggers.finish_logger(logger, failed=False)
    assert "1.0" in (tmp_path / "csv" / "metrics-1.csv").read_text()
    assert "2.0" in (tmp_path / "csv" / "metrics.csv").read_text()


def test_wandb_run_prints_nothing(monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = loggers.build_logger({"type": "wandb"}, str(tmp_path), run_config={"seed": 1})
    logger.log_metrics({"train/nll": 1.0}, step=1)
    loggers.finish_logger(logger, failed=False)
    out, err = capfd.readouterr()
    assert "wandb" not in (out + err).lower(), out + err  # no banner, tip, warning or reminder


def test_finish_logger_marks_a_failed_wandb_run(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = loggers.build_logger({"type": "wandb"}, str(tmp_path))
    run = logger.experiment
    exit_codes = []
    real_finish = run.finish

    def finish(exit_code=None):
        exit_codes.append(exit_code)
        real_finish(exit_code)

    monkeypatch.setattr(run, "finish", finish)
    run_dir = loggers.finish_logger(logger, failed=True)
    assert exit_codes == [1]
    assert run_dir is not None and Path(run_dir).parent == tmp_path / "wandb"
    assert Path(run_dir).name.startswith("offline-run-")
    # the status is in the run's transaction log, which `wandb sync` uploads
    log = _settled_bytes(next(Path(run_dir).glob("*.wandb")))
    assert b"survae/status" in log and b"failed" in log


def test_finish_logger_success_and_file_loggers(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert loggers.finish_logger(None, failed=True) is None
    logger = loggers.build_logger({"type": "wandb"}, str(tmp_path / "w"))
    log = next((tmp_path / "w" / "wandb").glob("offline-run-*/*.wandb"))
    assert loggers.finish_logger(logger, failed=False) == str(log.parent)
    assert b"survae/status" not in _settled_bytes(log)
    statuses = []
    csv_logger = loggers.build_logger({"type": "csv"}, str(tmp_path / "c"))
    monkeypatch.setattr(csv_logger, "finalize", statuses.append)
    assert loggers.finish_logger(csv_logger, failed=True) is None
    assert statuses == ["failed"]


def _settled_bytes(path: Path, timeout: float = 30.0) -> bytes:
    """The run file once W&B's service process has written it (it does so after ``finish()``
    returns): its content when its size has stopped changing for a second."""
    import time

    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        size = path.stat().st_size
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since > 1.0 and size > 64:
            break
        time.sleep(0.1)
    return path.read_bytes()


def test_finish_wandb_run_finds_the_active_run(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    loggers.build_logger({"type": "wandb"}, str(tmp_path))
    run_dir = loggers.finish_wandb_run(failed=True)
    assert run_dir is not None and Path(run_dir).name.startswith("offline-run-")
    assert b"survae/status" in _settled_bytes(next(Path(run_dir).glob("*.wandb")))
    assert loggers.finish_wandb_run(failed=True) is None  # nothing active any more


def test_a_failed_training_run_is_failed_in_wandb(make_config, monkeypatch, tmp_path):
    from survae.training import train
    from survae.training.module import FlowModule

    monkeypatch.setenv("WANDB_MODE", "offline")

    def broken_step(self, batch, batch_idx):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(FlowModule, "training_step", broken_step)
    cfg = make_config("trainer.max_epochs=1", "logger=wandb")
    with pytest.raises(RuntimeError, match="broken on purpose"):
        train(cfg)
    (log,) = (tmp_path / "run" / "wandb").glob("offline-run-*/*.wandb")
    assert b"survae/status" in _settled_bytes(log)
    import wandb

    assert wandb.run is None, "the failed run was left open"


@pytest.mark.parametrize("kind", ["csv", "tensorboard"])
def test_file_loggers_write_metrics(kind, tmp_path):
    logger = loggers.build_logger({"type": kind}, str(tmp_path))
    logger.log_metrics({"val/bpd": 3.5}, step=1)
    logger.finalize("success")
    assert any(p.is_file() for p in tmp_path.rglob("*")), f"{kind} wrote nothing"


def test_decay_can_start_late_and_is_floored():
    # peak until step 5, then x0.5 per step, never below 0.3
    factors = [lr_factor(s, 0, 0.5, 1, 0.3, decay_start=5) for s in range(9)]
    assert factors == pytest.approx([1, 1, 1, 1, 1, 1, 0.5, 0.3, 0.3])


def _train_a_bit(opt_cfg: dict) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(3))]
    opt = build_optimizer(params, opt_cfg)
    for _ in range(5):
        opt.zero_grad()
        (params[0].square().sum() + params[1].sin().sum()).backward()
        opt.step()
    return opt, [p.detach().clone() for p in params]


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_kernel_is_the_default_and_gives_the_same_updates(name):
    assert has_fused(name)
    cfg = {"name": name, "lr": 1e-2, "weight_decay": 0.01}
    fused_opt, fused = _train_a_bit(cfg)
    plain_opt, plain = _train_a_bit({**cfg, "fused": False})
    assert fused_opt.defaults["fused"] is True and plain_opt.defaults["fused"] is False
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b)


def test_fused_is_refused_where_torch_has_none():
    opt, _ = _train_a_bit({"name": "adamax", "lr": 1e-2})
    assert not opt.defaults.get("fused")
    with pytest.raises(ConfigError, match="no fused adamax"):
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], {"name": "adamax", "fused": True})
    with pytest.raises(ConfigError, match="null, true or false"):
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], {"name": "adam", "fused": "yes"})
