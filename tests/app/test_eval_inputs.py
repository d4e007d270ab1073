"""The evaluation scripts check every input before any work and stop with one line naming it;
their progress bars count the batches."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import survae  # noqa: F401  (first: torchvision shim)
from survae.app.evaluation import check_output_path, progress_iter

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

MNIST_FLOW = {
    "layers": [
        {"name": "uniform_dequantization"},
        {"name": "affine_coupling", "num_channels": 1, "mask": "checkerboard",
         "net": {"name": "conv_net", "hidden_channels": 4}, "scale_fn": "tanh_exp"},
    ],
    "base": {"name": "standard_normal"},
}  # fmt: skip


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def untrained_checkpoint(tmp_path) -> Path:
    """A survae checkpoint of an MNIST model whose data folder does not exist."""
    from survae.training.module import FlowModule

    module = FlowModule(
        model_spec=MNIST_FLOW,
        data_info={"name": "mnist", "kind": "image", "shape": [1, 28, 28], "num_bins": 256},
        data_config={"name": "mnist", "root": str(tmp_path / "no-data-here")},
    )
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.fixture
def no_sampling(monkeypatch):
    """The sample-quality script; fails the test if it starts drawing samples."""
    from survae.app import eval_sample

    def generate(*args, **kwargs):
        raise AssertionError("samples were drawn before every input was checked")

    monkeypatch.setattr(eval_sample, "generate", generate)
    return _script("eval_sample")


def test_missing_inception_weights_stop_before_anything_else(no_sampling, tmp_path, monkeypatch):
    monkeypatch.delenv("SURVAE_INCEPTION_WEIGHTS", raising=False)
    weights = tmp_path / "pt_inception.pth"
    with pytest.raises(SystemExit) as info:
        no_sampling.main([str(tmp_path / "absent.ckpt"), "--inception-weights", str(weights)])
    message = str(info.value.code)
    assert message.startswith("eval_sample.py: Inception weights") and str(weights) in message
    assert "--inception-weights /path/to/" in message and "`--small-features`" in message


def test_missing_checkpoint_is_named(no_sampling, tmp_path):
    ckpt = tmp_path / "absent.ckpt"
    with pytest.raises(SystemExit, match=f"eval_sample.py: checkpoint {ckpt} does not exist"):
        no_sampling.main([str(ckpt), "--small-features"])
    with pytest.raises(SystemExit, match=f"eval_loglik.py: checkpoint {ckpt} does not exist"):
        _script("eval_loglik").main([str(ckpt)])


def test_missing_data_stops_before_sampling(no_sampling, untrained_checkpoint):
    with pytest.raises(SystemExit) as info:
        no_sampling.main([str(untrained_checkpoint), "--small-features", "--num-samples", "20"])
    assert str(info.value.code).startswith("eval_sample.py: ")
    assert "no-data-here" in str(info.value.code)


def test_absent_device_and_bad_output_folder(no_sampling, untrained_checkpoint, tmp_path,
                                             monkeypatch):  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ckpt = str(untrained_checkpoint)
    with pytest.raises(SystemExit, match="eval_sample.py: --device cuda: no CUDA device"):
        no_sampling.main([ckpt, "--small-features", "--device", "cuda"])
    with pytest.raises(SystemExit, match="eval_loglik.py: --device cuda: no CUDA device"):
        _script("eval_loglik").main([ckpt, "--device", "cuda"])
    out = tmp_path / "missing" / "r.json"
    with pytest.raises(SystemExit, match=r"eval_sample.py: --json .*r\.json: the folder"):
        no_sampling.main([ckpt, "--small-features", "--json", str(out)])
    with pytest.raises(SystemExit, match=r"--save-samples .*s\.pt: the folder"):
        no_sampling.main([ckpt, "--small-features", "--save-samples", str(tmp_path / "x/s.pt")])
    with pytest.raises(SystemExit, match="--num-samples must be at least 10"):
        no_sampling.main([ckpt, "--small-features", "--num-samples", "5"])


def test_tabular_or_toy_model_is_sent_to_eval_loglik(no_sampling, tmp_path):
    from survae.training.module import FlowModule

    module = FlowModule(
        model_spec={"architecture": "abs_flow_2d"},
        data_info={"name": "corners", "kind": "toy", "shape": [2], "num_bins": None},
        data_config={"name": "corners"},
    )
    path = tmp_path / "toy.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    with pytest.raises(SystemExit, match="need an image model.*toy model.*eval_loglik.py"):
        no_sampling.main([str(path), "--small-features"])


def test_check_output_path(tmp_path):
    check_output_path(None, "--json")
    check_output_path(tmp_path / "ok.json", "--json")
    with pytest.raises(FileNotFoundError, match="--json"):
        check_output_path(tmp_path / "a" / "b.json", "--json")


def test_progress_iter_yields_everything_and_counts(capsys):
    assert list(progress_iter(range(5), "x", enabled=False)) == [0, 1, 2, 3, 4]
    assert list(progress_iter(iter([1, 2, 3]), "counting", total=3)) == [1, 2, 3]
    err = capsys.readouterr().err
    assert "counting" in err and "3/3" in err  # drawn on stderr, stdout stays clean
