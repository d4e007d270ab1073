"""The speed preset (``speed.preset``): ``auto`` picks channels-last for convolutional models,
the fused attention kernel where it builds and compile for long toy runs; ``off`` is the bare
model. Either way log p, parameters, state-dict keys and exact resumption are unchanged."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from survae.models import build_model
from survae.runtime import speed

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")

#: a MaxPoolFlow of the paper's structure, small enough for an 8×8 digit in a second
TINY_MAXPOOL = [
    "model=maxpool_flow",
    "model.num_steps=1",
    "model.dequant_steps=1",
    "model.dequant_context=4",
    "model.densenet_channels=8",
    "model.densenet_depth=1",
    "model.densenet_growth=4",
]


def _toy_flow():
    return build_model({"architecture": "plain_flow_2d", "num_couplings": 2}, (2,))


def _image_flow():
    spec = {
        "architecture": "survae_image_flow", "pooling": "max", "num_scales": 2, "num_steps": 1,
        "dequant": "flow", "dequant_steps": 1, "dequant_context": 4, "densenet_channels": 8,
        "densenet_depth": 1, "densenet_growth": 4,
    }  # fmt: skip
    return build_model(spec, (3, 8, 8), num_bins=256)


def _images() -> torch.Tensor:
    return torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(0))


def test_preset_off_is_the_bare_model():
    flow = _image_flow()
    speed.apply_speed_options(flow, {"preset": "off"})
    assert flow.forward_plan() is flow.transforms
    assert all(m.weight.is_contiguous() for m in flow.modules() if isinstance(m, torch.nn.Conv2d))
    assert flow._compiled_call_impl is None and "_speed_compile_deferred" not in flow.__dict__
    assert speed.SPEED_DEFAULTS["preset"] == "off"  # code that builds models itself: bare
    assert not speed.SPEED_DEFAULTS["bf16_couplings"]  # no preset changes precision


def test_auto_preset_puts_convolutional_models_channels_last_with_the_same_log_p():
    torch.manual_seed(0)
    flow = _image_flow()
    bare = copy.deepcopy(flow)
    keys = list(flow.state_dict())
    seen = []
    speed.apply_speed_options(flow, {"preset": "auto"}, kind="image")
    convs = [m for m in flow.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    for c in convs:  # the networks' convolutions see channels-last inputs
        c.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    layers: dict[str, list] = {"preset": [], "bare": []}  # what the flow's own layers see
    for name, model in (("preset", flow), ("bare", bare)):
        for t in model.transforms:
            t.register_forward_pre_hook(
                lambda m, args, out=layers[name]: out.append(args[0].stride())
            )
    assert list(flow.state_dict()) == keys  # parameters and keys unchanged
    for k, v in bare.state_dict().items():
        assert torch.equal(flow.state_dict()[k], v)
    x = _images()
    torch.manual_seed(1)
    lp = flow.log_prob(x)
    torch.manual_seed(1)  # the same dequantization noise
    ref = bare.log_prob(x)
    torch.testing.assert_close(lp, ref, rtol=1e-5, atol=1e-3)
    assert seen and all(t.is_contiguous(memory_format=torch.channels_last) for t in seen)
    assert layers["preset"] and layers["preset"] == layers["bare"]  # the same memory layout
    lp.sum().backward()  # and gradients reach every parameter
    assert all(p.grad is not None for p in flow.parameters() if p.requires_grad)
    speed.networks_channels_last(flow, enabled=False)
    assert all(c.weight.is_contiguous() for c in convs)
    assert flow.__dict__["_speed_options"]["channels_last"] is True
    assert "_speed_compile_deferred" not in flow.__dict__  # not a toy model


def test_an_explicit_switch_wins_over_the_preset():
    flow = _image_flow()
    speed.apply_speed_options(flow, {"preset": "auto", "channels_last": False}, kind="image")
    assert all(m.weight.is_contiguous() for m in flow.modules() if isinstance(m, torch.nn.Conv2d))


def test_auto_preset_compiles_toy_models_only_for_runs_long_enough(monkeypatch):
    monkeypatch.setattr(speed, "has_compiler", lambda: True)
    short, long_run = _toy_flow(), _toy_flow()
    for flow in (short, long_run):
        speed.apply_speed_options(flow, {"preset": "auto"}, kind="toy")
        assert flow.forward_plan() is flow.transforms  # no convolutions
        assert flow.__dict__["_speed_options"]["compile"] is None  # decided at the run's start
    assert not speed.compile_if_it_pays(short, speed.COMPILE_MIN_STEPS - 1)
    assert short._compiled_call_impl is None and short._speed_options["compile"] is False
    assert not speed.compile_if_it_pays(_toy_flow(), float("nan"))  # nothing deferred
    assert speed.compile_if_it_pays(long_run, speed.COMPILE_MIN_STEPS)
    assert long_run._compiled_call_impl is not None and long_run._speed_options["compile"]
    assert not speed.compile_if_it_pays(long_run, 1e9)  # decided once


def test_auto_preset_never_compiles_without_a_compiler_or_for_other_kinds(monkeypatch):
    monkeypatch.setattr(speed, "has_compiler", lambda: False)
    flow = speed.apply_speed_options(_toy_flow(), {"preset": "auto"}, kind="toy")
    assert flow._speed_options["compile"] is False and not speed.compile_if_it_pays(flow, 1e9)
    monkeypatch.setattr(speed, "has_compiler", lambda: True)
    flow = speed.apply_speed_options(_toy_flow(), {"preset": "auto"}, kind="tabular")
    assert flow._speed_options["compile"] is False


def _points_flow():
    spec = {"architecture": "permute_flow", "num_steps": 1, "d_model": 16, "num_heads": 2,
            "dim_feedforward": 32, "num_layers": 1}  # fmt: skip
    return build_model(spec, (8, 2))


@pytest.mark.parametrize("builds", [True, False])
def test_auto_preset_uses_the_fused_attention_where_it_builds(monkeypatch, capsys, builds):
    from survae.nn import fused_attention
    from survae.nn.transformer import SelfAttention

    def load():
        if not builds:
            raise fused_attention.FusedAttentionBuildError("no C++ compiler")
        return object()

    monkeypatch.setattr(fused_attention, "load_extension", load)
    flow = speed.apply_speed_options(_points_flow(), {"preset": "auto"}, kind="points")
    layers = [m for m in flow.modules() if isinstance(m, SelfAttention)]
    assert layers and all(m.fused is builds for m in layers)
    out = capsys.readouterr().out
    assert ("PyTorch's attention is used (no C++ compiler)" in out) is not builds
    assert out.count("[survae] speed:") == (0 if builds else 1)  # one line, not one per layer


def test_preset_options_are_validated():
    with pytest.raises(ValueError, match="speed.preset"):
        speed.apply_speed_options(_toy_flow(), {"preset": "fast"})
    with pytest.raises(ValueError, match=r"must be true or false \(or null"):
        speed.apply_speed_options(_toy_flow(), {"channels_last": "yes"})
    with pytest.raises(ValueError, match="true or false"):
        speed.apply_speed_options(_toy_flow(), {"bf16_couplings": None})


# --------------------------------------------------------------------------- runs
def _config(overrides: list[str], out: Path) -> dict:
    from survae.training import resolvers

    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        cfg.paths.output_dir = str(out)
        container = OmegaConf.to_container(cfg, resolve=True)
    GlobalHydra.instance().clear()
    container.pop("hydra", None)
    return container


def _run(tmp_path: Path, name: str, *overrides: str) -> dict:
    from survae.training import train

    quiet = ["logger=none", "callbacks.rich_progress_bar=false",
             "trainer.enable_progress_bar=false",
             "callbacks.samples.every_n_epochs=0", "test=false", "~experiment", "data=digits",
             "data.batch_size=16", "+trainer.limit_train_batches=2",
             "+trainer.limit_val_batches=1", *TINY_MAXPOOL]  # fmt: skip
    return train(_config([*quiet, *overrides], tmp_path / name))


def _weights(path: str | Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("model.")}


def test_a_convolutional_run_with_the_auto_preset_resumes_exactly(tmp_path, monkeypatch):
    cfg = _config(["~experiment", *TINY_MAXPOOL, "data=digits"], tmp_path / "cfg")
    assert cfg["speed"]["preset"] == "auto"  # the run configs' default
    calls = []
    real = speed.networks_channels_last
    monkeypatch.setattr(speed, "networks_channels_last", lambda m: calls.append(1) or real(m))
    full = _run(tmp_path, "full", "trainer.max_epochs=2")
    _run(tmp_path, "part", "trainer.max_epochs=1")
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    resumed = _run(tmp_path, "resumed", "trainer.max_epochs=2", f"ckpt_path={last}")
    a, b = _weights(full["checkpoint"]), _weights(resumed["checkpoint"])
    assert len(calls) == 3  # each run's model, channels-last
    bare = _run(tmp_path, "bare", "trainer.max_epochs=1", "speed.preset=off")
    assert len(calls) == 3
    assert a.keys() == b.keys() == _weights(bare["checkpoint"]).keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after resume")
