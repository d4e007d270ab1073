"""The benchmark's workloads: which experiments are measured, the speed variants of each, and
the composed config, data module and fixed synthetic batch of a workload.

Synthetic data (no files): images are uniform random ``uint8``; point sets uniform random
points in ``[0, 28)²`` (SpatialMNIST's square); toy data the registered toy data module's own
samples; tabular data standard normal (the UCI sets are standardised).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

#: the workloads of the papers, each run with its paper's batch size by default
PAPER_WORKLOADS: tuple[str, ...] = (
    "abs_flow_eight_gaussians",
    "plain_flow_eight_gaussians",
    "maxpool_flow_cifar10",
    "slice_flow_cifar10",
    "permute_flow_spatial_mnist",
    "sort_flow_spatial_mnist",
    "glow_cifar10",
    "flowpp_cifar10",
)

#: spline layers next to their affine counterparts (``--workloads splines``): 2-D couplings
#: (affine baseline vs RQ-NSF (C) on the checkerboard), tabular couplings (RealNVP vs RQ-NSF (C)
#: on POWER) and tabular autoregressive layers (MAF vs RQ-NSF (AR) on POWER)
SPLINE_WORKLOADS: tuple[str, ...] = (
    "plain_flow_checkerboard",
    "nsf_checkerboard",
    "realnvp_power",
    "nsf_power",
    "maf_power",
    "nsf_ar_power",
)

#: speed features: variant name → the :func:`survae.runtime.speed.apply_speed_options` keys it
#: sets; ``defaults`` is the run configs' default, the ``auto`` preset (every other variant
#: starts from the bare model, preset ``off``)
FEATURES: dict[str, dict[str, Any]] = {
    "defaults": {"preset": "auto"},
    "compile": {"compile": True},
    "bf16": {"bf16_couplings": True},
    "channels_last": {"channels_last": True},
    "memory_saving": {"memory_saving": True},
    "fused_attention": {"fused_attention": True},
}

#: features that only change anything for one data kind (channels-last: 4-D image models;
#: fused attention: the point-set transformers); skipped by ``--ablate`` for the others
FEATURE_KIND: dict[str, str] = {"channels_last": "image", "fused_attention": "points"}

#: the boolean speed switches, all off in the baseline
_SWITCHES = ("compile", "bf16_couplings", "channels_last", "memory_saving", "fused_attention")

#: the configs of a source checkout (``survae/`` next to ``configs/``)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

#: point sets are drawn uniformly from this square (SpatialMNIST: 28 × 28 pixels)
POINT_RANGE = 28.0


def compose_experiment(
    name: str, overrides: Sequence[str] = (), config_dir: str | Path | None = None
) -> dict[str, Any]:
    """The resolved config of ``experiment=NAME`` (plus Hydra ``overrides``) as a plain dict,
    composed as ``run.py`` composes it (nothing is written: no run directory is created)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    try:  # the configs' own resolvers (run names), where this version has them
        from survae.training.resolvers import register as register_resolvers
    except ImportError:
        pass
    else:
        register_resolvers()
    config_dir = Path(config_dir or CONFIG_DIR).resolve()
    if not (config_dir / "experiment" / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))
        raise ValueError(f"unknown workload {name!r}: no experiment config; valid: {known}")
    out_dir = os.path.join(tempfile.gettempdir(), "survae-benchmark")  # a name only: unused
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[f"experiment={name}", "logger=none", *overrides],
                return_hydra_config=True,
            )
            with open_dict(cfg):
                cfg.hydra.runtime.output_dir = out_dir
                cfg.hydra.job.num = 0
            HydraConfig.instance().set_config(cfg)
            cfg.paths.output_dir = out_dir
            container = OmegaConf.to_container(cfg, resolve=True)
    finally:
        GlobalHydra.instance().clear()
    container.pop("hydra", None)
    return container


def data_kind(cfg: Mapping[str, Any]) -> str:
    """The data kind (``image``, ``points``, ``tabular``, ``toy``) of a composed config."""
    import survae  # noqa: F401  (registers the data modules)
    from survae import registry

    return registry.get("dataset", cfg["data"]["name"]).kind


def _datamodule(cfg: Mapping[str, Any], batch: int, seed: int):
    """The config's data module with the benchmark batch size (toy splits shrunk to one batch:
    their samples are generated, not read)."""
    import inspect

    from survae import registry
    from survae.training.pipeline import build_datamodule

    data = dict(cfg["data"])
    data["batch_size"] = batch
    data["num_workers"] = 0
    data["pin_memory"] = False
    params: set[str] = set()
    for klass in registry.get("dataset", data["name"]).__mro__:
        if "__init__" in vars(klass):
            params |= set(inspect.signature(klass.__init__).parameters)
    for key, value in (("train_size", batch), ("val_size", 1), ("test_size", 1)):
        if key in params:
            data[key] = value
    return build_datamodule(data, seed)


def synthetic_batch(dm: Any, batch: int, seed: int = 0) -> torch.Tensor:
    """One fixed batch of the data module's dtype and shape (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, *dm.shape)
    if dm.kind == "image":
        levels = int(dm.num_bins or 256)
        return torch.randint(0, levels, shape, generator=gen, dtype=torch.int64).to(torch.uint8)
    if dm.kind == "points":
        x = torch.rand(shape, generator=gen) * POINT_RANGE
        return x.clamp_max(math.nextafter(POINT_RANGE, 0.0))
    if dm.kind == "toy":
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))[:batch].float()
    return torch.randn(shape, generator=gen)


def variant_speed(cfg: Mapping[str, Any], features: Sequence[str]) -> dict[str, Any]:
    """The speed options of a variant: the config's own (modes, anchors) with the preset
    ``off`` and every switch off (the preset's switches left to it), then the named
    ``features`` on (``defaults``: the ``auto`` preset)."""
    from survae.runtime.speed import PRESET_SWITCHES, SPEED_DEFAULTS

    speed = {**SPEED_DEFAULTS, **dict(cfg.get("speed") or {}), "preset": "off"}
    for key in _SWITCHES:
        speed[key] = None if key in PRESET_SWITCHES else False
    for name in features:
        speed.update(FEATURES[name])
    return speed


def planned_steps(cfg: Mapping[str, Any]) -> float:
    """The training steps of the config's run (``trainer.max_steps``, else ``max_epochs`` ×
    batches per epoch where the data config gives its training-set size); nan when unknown.
    The ``auto`` preset's compile rule reads it as the trainer's own estimate."""
    trainer, data = dict(cfg.get("trainer") or {}), dict(cfg.get("data") or {})
    max_steps = trainer.get("max_steps")
    if isinstance(max_steps, int) and max_steps > 0:
        return float(max_steps)
    epochs, size, batch = trainer.get("max_epochs"), data.get("train_size"), data.get("batch_size")
    if all(isinstance(v, int) and v > 0 for v in (epochs, size, batch)):
        return float(epochs * math.ceil(size / batch))
    return math.nan


def plan_variants(
    kind: str, selected: Sequence[str], ablate: bool, baseline: bool = True
) -> list[tuple[str, tuple[str, ...]]]:
    """``(variant name, features)`` to run for one workload.

    Without ``ablate``: the baseline (unless ``baseline`` is False) and, when features are
    selected, one variant with all of them on. With ``ablate``: the baseline, each applicable
    feature alone (``selected``, or every feature when none is) and, with more than one, all of
    them together (``"all"``). Features of one data kind (:data:`FEATURE_KIND`) are skipped for
    the others.
    """
    if ablate:
        names = [f for f in (selected or FEATURES) if FEATURE_KIND.get(f, kind) == kind]
        plan: list[tuple[str, tuple[str, ...]]] = [("baseline", ())]
        plan += [(f, (f,)) for f in names]
        if len(names) > 1:
            plan.append(("all", tuple(names)))
        return plan
    plan = [("baseline", ())] if baseline or not selected else []
    if selected:
        plan.append(("+".join(selected), tuple(selected)))
    return plan
