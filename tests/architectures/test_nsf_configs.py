"""The nsf_* / nsf_ar_* tabular experiments carry NSF's App. B.1 / Table 5 hyperparameters and
the official experiments/uci.py training setup, and build the model those settings describe."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from conftest import compose_config  # noqa: E402  (tests/training/conftest.py)

from survae.architectures.nsf import nsf  # noqa: E402
from survae.nn.resmade import ResidualMADE  # noqa: E402
from survae.training.optim import build_scheduler  # noqa: E402
from survae.transforms.bijections.spline import (  # noqa: E402
    RQSplineAutoregressive,
    RQSplineCoupling,
)

# NSF (Durkan et al. 2019) Table 5, one column per data set:
# (dimension, batch size, training steps, learning rate, flow steps, residual blocks,
#  hidden features, bins, dropout)
TABLE5 = {
    "power": (6, 512, 400_000, 5e-4, 10, 2, 256, 8, 0.0),
    "gas": (8, 512, 400_000, 5e-4, 10, 2, 256, 8, 0.1),
    "hepmass": (21, 256, 400_000, 5e-4, 20, 1, 128, 8, 0.2),
    "miniboone": (43, 128, 200_000, 3e-4, 10, 1, 32, 4, 0.2),
    "bsds300": (63, 512, 400_000, 5e-4, 20, 1, 128, 8, 0.2),
}
CASES = [(ds, kind) for ds in TABLE5 for kind in ("coupling", "autoregressive")]


@pytest.mark.parametrize("dataset,transform", CASES)
def test_nsf_config_has_the_papers_hyperparameters(dataset, transform, tmp_path):
    name = f"nsf_{dataset}" if transform == "coupling" else f"nsf_ar_{dataset}"
    cfg = compose_config([f"experiment={name}", "logger=none"], tmp_path)
    _, batch, steps, lr, flow_steps, blocks, hidden, bins, dropout = TABLE5[dataset]
    model, optim, trainer = cfg["model"], cfg["optim"], cfg["trainer"]
    assert model["transform"] == transform
    assert (model["num_steps"], model["num_blocks"]) == (flow_steps, blocks)
    assert model["hidden"] == hidden
    assert (model["bins"], model["dropout"], model["tail_bound"]) == (bins, dropout, 3.0)
    assert (model["linear"], model["batch_norm"]) == ("lu", False)  # uci.py defaults
    assert model["unconditional_transform"] == (transform == "coupling")  # uci.py default 1
    assert cfg["data"]["batch_size"] == batch
    assert trainer["max_steps"] == steps and trainer["gradient_clip_val"] == 5.0
    assert optim["name"] == "adam" and optim["lr"] == pytest.approx(lr)
    assert optim["schedule"] == "cosine" and optim["cosine_steps"] == steps
    assert optim["min_lr"] == 0.0 and optim["warmup_steps"] == 0


@pytest.mark.parametrize("dataset,transform", [("hepmass", "coupling"), ("gas", "autoregressive")])
def test_nsf_config_builds_that_model_and_schedule(dataset, transform, tmp_path):
    name = f"nsf_{dataset}" if transform == "coupling" else f"nsf_ar_{dataset}"
    cfg = compose_config([f"experiment={name}", "logger=none"], tmp_path)
    D, _, steps, lr, flow_steps, blocks, hidden, bins, dropout = TABLE5[dataset]
    spec = {k: v for k, v in cfg["model"].items() if k != "architecture"}
    flow = nsf((D,), **spec)
    kind = RQSplineCoupling if transform == "coupling" else RQSplineAutoregressive
    splines = [m for m in flow.modules() if isinstance(m, kind)]
    assert len(splines) == flow_steps
    for layer in splines:
        assert layer.num_bins == bins and layer.tail_bound == 3.0
        if transform == "coupling":
            assert layer.identity_params is not None
            assert len(layer.net.blocks) == blocks
        else:
            assert isinstance(layer.made, ResidualMADE) and len(layer.made.blocks) == blocks
            drops = [m for m in layer.made.modules() if type(m).__name__ == "Dropout"]
            assert len(drops) == blocks and all(d.p == dropout for d in drops)
    # cosine annealing from lr to 0 over all training steps
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(opt, cfg["optim"], steps_per_epoch=1000)
    assert sched.lr_lambdas[0](0) == pytest.approx(1.0)
    assert sched.lr_lambdas[0](steps // 2) == pytest.approx(0.5)
    assert sched.lr_lambdas[0](steps) == pytest.approx(0.0, abs=1e-12)
