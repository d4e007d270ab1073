"""Every experiment config composes, builds its model, reports its size and trains one step
on tiny data in its data set's real on-disk format."""

from __future__ import annotations

import inspect
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "training"))
from conftest import compose_config  # noqa: E402  (tests/training/conftest.py)

from survae import registry  # noqa: E402
from survae.data.fake import WRITERS, write_fake_dataset  # noqa: E402
from survae.training.module import FlowModule, split_batch  # noqa: E402
from survae.training.optim import build_optimizer  # noqa: E402
from survae.training.pipeline import build_datamodule, data_info  # noqa: E402

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).parents[1] / "configs/experiment").glob("*.yaml")
)


def tiny_data_config(cfg: dict, root: Path) -> dict:
    """The experiment's data config pointed at fake files, with tiny splits and batches."""
    data = dict(cfg["data"])
    name = data["name"]
    if name in WRITERS:
        write_fake_dataset(name, root, num=48)
        data["root"] = str(root)
    params = set()
    for klass in registry.get("dataset", name).__mro__:
        if "__init__" in vars(klass):
            params |= set(inspect.signature(klass.__init__).parameters)
    data["batch_size"] = 2
    data["num_workers"] = 0
    for key, value in (("val_size", 8), ("train_size", 64), ("test_size", 16)):
        if key in params:
            data[key] = value
    if "check_integrity" in params:
        data["check_integrity"] = False
    return data


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_builds_and_trains_one_step(name, tmp_path, capsys):
    cfg = compose_config([f"experiment={name}", "logger=none"], tmp_path / "run")
    assert cfg["task_name"] == name, f"{name}.yaml must set task_name: {name}"
    dm = build_datamodule(tiny_data_config(cfg, tmp_path / "data"), seed=0)
    module = FlowModule(
        cfg["model"], data_info(dm), cfg.get("optim"), ema_decay=cfg.get("ema_decay")
    )
    num_params = sum(p.numel() for p in module.model.parameters())
    with capsys.disabled():
        print(f"\n{name}: {num_params:,} parameters")
    assert num_params > 0
    dm.setup("fit")
    x, context = split_batch(next(iter(dm.train_dataloader())))
    assert tuple(x.shape[1:]) == tuple(dm.shape)
    optimizer = build_optimizer(module.model.parameters(), cfg.get("optim") or {})
    module.model.train()
    value = module.metric(module.model.log_prob(x, context), module.metric_size).mean()
    loss = -value if module.metric.higher_is_better else value
    assert math.isfinite(loss.item()), f"{name}: non-finite loss {loss.item()}"
    optimizer.zero_grad()
    loss.backward()
    grads = [p.grad for p in module.model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no gradient"
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
