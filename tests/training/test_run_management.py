"""How runs are asked for, named, tuned and continued: sweepers see validation metrics only,
run folders are named after what was run, ``resume=`` continues a folder with its saved
config, and a user's own layer and config (outside the repository) train without a fork."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
from conftest import QUIET, run_cli, tiny_data  # noqa: E402  (tests/training/conftest.py)

from survae.app.cli import sweep_objective  # noqa: E402
from survae.config_check import ConfigError  # noqa: E402
from survae.training import resolvers, train  # noqa: E402
from survae.training.validation import OBJECTIVES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = [*tiny_data(256), *QUIET]
_run = run_cli


# ------------------------------------------------------------------ tuning never sees test
def test_every_sweeper_config_optimises_a_validation_metric():
    for path in sorted((ROOT / "configs" / "hparams_search").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        assert cfg.get("objective") in OBJECTIVES, f"{path.name}: objective must be val_*"
        assert "test" not in str(cfg.get("hydra", {}).get("sweeper", {})), path.name
    train_cfg = yaml.safe_load((ROOT / "configs" / "train.yaml").read_text())
    assert train_cfg["objective"] in OBJECTIVES


def test_sweep_objective_is_the_validation_metric_never_test(make_config):
    results = train(make_config("trainer.max_epochs=2"))
    best, last = results["val"]["best"], results["val"]["last"]
    assert sweep_objective(results, "val_best") == pytest.approx(best)
    assert sweep_objective(results, "val_last") == pytest.approx(last)
    assert best != results["test"]["test/nll"]
    with pytest.raises(ConfigError, match="val_best, val_last"):
        sweep_objective(results, "test")


# ------------------------------------------------------------------ names and folders
def _root(mode: str = "RunMode.RUN", **choices) -> object:
    overrides = [f"{k}={v}" for k, v in choices.pop("overrides", {}).items()]
    return OmegaConf.create(
        {
            "hydra": {
                "mode": mode,
                "runtime": {"choices": {"experiment": "abs_flow_four_circles", **choices}},
                "overrides": {"task": overrides},
            }
        }
    )


def test_run_is_named_after_what_was_run_not_an_overridden_default():
    plain = _root(model="abs_flow_2d", data="four_circles")
    assert resolvers.run_name(_root_=plain) == "abs_flow_four_circles"
    own = _root(model="my_flow", data="four_circles", overrides={"model": "my_flow"})
    assert resolvers.run_name(_root_=own) == "my_flow_four_circles"
    debug = _root(model="abs_flow_2d", data="four_circles", debug="fast_dev_run")
    assert resolvers.run_name(_root_=debug).startswith("debug/")
    job = _root(model="abs_flow_2d", data="four_circles", overrides={"seed": 3})
    assert resolvers.job_name(_root_=job) == "abs_flow_four_circles[seed=3]"


def test_stamps_are_unique_and_one_sweep_shares_one(monkeypatch):
    monkeypatch.delenv(resolvers.STAMP_ENV, raising=False)
    single = _root()
    assert resolvers.stamp(_root_=single) != resolvers.stamp(_root_=single)
    sweep = _root(mode="RunMode.MULTIRUN", hparams_search="optuna_toy")
    name = resolvers.sweep_name(_root_=sweep)
    assert name.startswith("optuna_toy_") and resolvers.sweep_name(_root_=sweep) == name
    assert resolvers.sweep_group(_root_=sweep) == name
    assert resolvers.sweep_group(_root_=single) is None


def test_run_record_says_what_was_run(tmp_path):
    proc = _run(["model=plain_flow_2d", "data=corners", "trainer.max_steps=3", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = (tmp_path / "outputs").rglob("results.json")
    assert record.parents[1].name == "plain_flow_2d_corners"
    assert record.parent.name.count("_") == 2  # date_time_suffix
    data = json.loads(record.read_text())
    assert data["experiment"] == "plain_flow_2d_corners"
    assert "model=plain_flow_2d" in data["overrides"] and data["finished"]
    assert data["fake_data"] is False and data["debug"] is False


# ------------------------------------------------------------------ resume a run folder
def test_resume_a_run_folder_with_its_saved_config(tmp_path):
    run = tmp_path / "run"
    first = _run(
        ["experiment=plain_flow_corners", *TINY, "trainer.max_steps=6", f"hydra.run.dir={run}"],
        tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    again = _run([f"resume={run}", "trainer.max_steps=10", "seed=0"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trainer.max_steps: 6 -> 10" in again.stdout
    assert "won't be reloaded" not in again.stderr  # checkpoint tracking continues
    record = json.loads((run / "results.json").read_text())
    assert record["steps"] == 10 and record["experiment"] == "plain_flow_corners"
    assert not (tmp_path / "outputs").exists()  # same folder, no new one
    lone = _run([f"ckpt_path={run}/checkpoints/last.ckpt", "trainer.max_steps=12"], tmp_path)
    assert lone.returncode == 0, lone.stderr[-3000:]
    assert json.loads((run / "results.json").read_text())["steps"] == 12


def test_the_resume_command_is_the_one_the_run_was_started_with(monkeypatch, tmp_path):
    from survae.training.run_folder import resume_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(tmp_path / ".venv" / "bin" / "python"))
    monkeypatch.setattr(sys, "argv", ["run.py", "experiment=x"])
    assert resume_command("outputs/r") == ".venv/bin/python run.py resume=outputs/r"
    monkeypatch.setattr(sys, "executable", "/elsewhere/bin/python3")
    assert resume_command("r") == "/elsewhere/bin/python3 run.py resume=r"
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/survae-run", "experiment=x"])
    assert resume_command("r") == "survae-run resume=r"
    monkeypatch.setattr(sys, "argv", ["/x/submitit/core/_submit.py"])  # a sweep job
    assert resume_command("r") == "python run.py resume=r"


def test_resume_refuses_unknown_keys_and_group_changes(tmp_path):
    run = tmp_path / "run"
    assert _run([*TINY, "trainer.max_steps=2", f"hydra.run.dir={run}"], tmp_path).returncode == 0
    bad_key = _run([f"resume={run}", "optim.learning_rate=1"], tmp_path)
    assert bad_key.returncode == 2 and "optim.learning_rate is not in the saved config" in (
        bad_key.stderr
    )
    group = _run([f"resume={run}", "model=plain_flow_2d"], tmp_path)
    assert group.returncode == 2 and "would choose another model" in group.stderr
    nothing = _run([f"resume={tmp_path}"], tmp_path)
    assert nothing.returncode == 2 and "is not a survae run folder" in nothing.stderr


# ------------------------------------------------------------------ own code, no fork
USER_LAYER = textwrap.dedent(
    '''
    import torch

    from survae.registry import register
    from survae.transforms.base import Bijection


    @register("layer", "my_learned_scale")
    class MyLearnedScale(Bijection):
        """z = x * exp(s), one learned log-scale per feature; contribution: sum(s)."""

        def __init__(self, features: int):
            super().__init__()
            self.log_scale = torch.nn.Parameter(torch.zeros(features))

        def forward(self, x, context=None):
            return x * self.log_scale.exp(), self.log_scale.sum().expand(x.shape[0])

        def inverse_with_ldj(self, z, context=None):
            return z * (-self.log_scale).exp(), -self.log_scale.sum().expand(z.shape[0])
    '''
)
USER_MODEL = textwrap.dedent(
    """
    # my own flow: a learned scale and two couplings
    layers:
      - name: my_learned_scale
        features: 2
      - name: affine_coupling
        num_channels: 2
        net: {name: mlp, hidden: [16]}
      - name: reverse
      - name: affine_coupling
        num_channels: 2
        net: {name: mlp, hidden: [16]}
    """
)


def test_own_layer_and_config_outside_the_repository_train(tmp_path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "layers.py").write_text(USER_LAYER)
    (tmp_path / "myconfigs" / "model").mkdir(parents=True)
    (tmp_path / "myconfigs" / "model" / "my_flow.yaml").write_text(USER_MODEL)
    proc = _run(
        [
            "--config-dir",
            str(tmp_path / "myconfigs"),
            "model=my_flow",
            "imports=[mypkg.layers]",
            *TINY,
            "trainer.max_steps=4",
        ],
        tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test/nll" in proc.stdout
    (record,) = (tmp_path / "outputs").rglob("results.json")
    assert record.parents[1].name == "my_flow_four_circles"
    missing = _run(["imports=[no_such_module]", *TINY, "trainer.max_steps=1"], tmp_path)
    assert missing.returncode != 0 and "imports: cannot import 'no_such_module'" in missing.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("objective=test", "objective: must be one of val_best, val_last"),
        ("callbacks.checkpoint_every_n_steps=0", "callbacks.checkpoint_every_n_steps: must be"),
        ("callbacks.checkpoint_every_minutes=-1", "callbacks.checkpoint_every_minutes: must be"),
        ("force_resume=maybe", "force_resume: must be true or false"),
        ("imports=my_module", "imports: must be a list of module names"),
    ],
)
def test_run_management_keys_are_checked_before_training(make_config, override, message):
    with pytest.raises(ConfigError, match=message):
        train(make_config(override))


def test_early_stopping_run_shorter_than_one_validation_finishes(make_config):
    # MAF's configs stop on a stalled validation metric; a run that ends before an epoch's
    # end finishes, validates at its last step (ValidateAtEnd) and is tested
    results = train(make_config("callbacks.early_stopping.patience=2", "trainer.max_steps=2"))
    assert results["last_checkpoint"] and "test/nll" in results["test"]
    assert results["val"]["best"] is not None


@pytest.mark.parametrize("which", ["best", "last"])
def test_test_checkpoint_chooses_the_weights_that_are_tested(make_config, tmp_path, which):
    from survae import load_model
    from survae.app.evaluation import datamodule_from_checkpoint, evaluate_log_likelihood

    results = train(make_config("trainer.max_epochs=3", f"test_checkpoint={which}"))
    path = results["checkpoint"]  # the tested weights
    assert path == results[f"{which}_checkpoint"]
    dm = datamodule_from_checkpoint(path)
    dm.setup()
    direct = evaluate_log_likelihood(load_model(path), dm.test_dataloader(), "toy", [2])
    assert results["test"]["test/nll"] == pytest.approx(direct["value"], rel=1e-5)
    assert Path(results["best_checkpoint"]).name.startswith("best-")


@pytest.mark.parametrize("var", ["RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"])
def test_only_the_global_rank_zero_process_locks_the_run_folder(tmp_path, monkeypatch, var):
    from survae.training.run_folder import LOCK_FILE, RunFolder

    with RunFolder(tmp_path / "a"):
        assert (tmp_path / "a" / LOCK_FILE).exists()
    monkeypatch.setenv(var, "1")
    with RunFolder(tmp_path / "b"):
        assert not (tmp_path / "b" / LOCK_FILE).exists()
