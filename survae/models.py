"""Building a model from a config mapping, and loading a trained one.

A model spec is either an architecture (``{"architecture": NAME, **hyperparameters}``, a
registered builder) or a generic stack (``{"layers": [{"name": NAME, **kwargs}, ...],
"base": {"name": NAME, **kwargs}}``) of registered layers. Only registered names are used.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from survae import registry
from survae.checkpoints import import_saved_modules, load_checkpoint, saved_imports
from survae.config_check import ConfigError, check_kwargs
from survae.flows import Flow


def _build_registered(kind: str, spec: Mapping[str, Any], where: str, **given: Any) -> Any:
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {spec!r}")
    cls = registry.get(kind, spec["name"])
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    accepted = inspect.signature(cls).parameters
    kwargs.update({k: v for k, v in given.items() if k not in kwargs and k in accepted})
    check_kwargs(cls, kwargs, where)
    return cls(**kwargs)


def _infer_latent_shape(
    layers: Sequence[torch.nn.Module],
    data_shape: Sequence[int],
    context_features: int | None = None,
) -> list[int]:
    """The latent shape of one example after ``layers``, from a zero batch (with a zero context
    ``[2, context_features]`` for conditional data, so conditional layers can run)."""
    x = torch.zeros(2, *data_shape)
    context = torch.zeros(2, int(context_features)) if context_features else None
    with torch.no_grad():
        for layer in layers:
            was_training = layer.training
            layer.eval()
            try:
                x, _ = layer(x, context)
            finally:
                layer.train(was_training)
    return list(x.shape[1:])


def build_model(
    spec: Mapping[str, Any],
    data_shape: Sequence[int],
    num_bins: int | None = None,
    context_features: int | None = None,
) -> Flow:
    """A :class:`~survae.flows.Flow` from a model spec (see module docstring).

    ``data_shape`` (one example) and ``num_bins`` (discrete data) are passed to architecture
    builders; a generic stack infers its base distribution's shape when ``base`` has none
    (for conditional data, ``context_features``, with a zero context of that size).

    >>> import torch
    >>> spec = {"layers": [{"name": "maf", "features": 2, "hidden": [16]}, {"name": "reverse"}],
    ...         "base": {"name": "standard_normal"}}
    >>> model = build_model(spec, data_shape=[2])
    >>> model.log_prob(torch.randn(5, 2)).shape, model.exact
    (torch.Size([5]), True)
    """
    spec = dict(spec)
    if "architecture" in spec:
        name = spec.pop("architecture")
        builder = registry.get("architecture", name)
        kwargs = {"data_shape": tuple(data_shape), "num_bins": num_bins, **spec}
        check_kwargs(builder, kwargs, f"model (architecture {name!r})")
        model = builder(**kwargs)
    elif "layers" in spec:
        unknown = set(spec) - {"layers", "base"}
        if unknown:
            raise ConfigError(
                f"model: unknown key(s) {sorted(unknown)}; a layer stack takes 'layers' and 'base'"
            )
        # the data's number of levels reaches dequantization layers that do not set their own
        given = {"num_bins": num_bins} if num_bins is not None else {}
        layers = [
            _build_registered("layer", layer_spec, f"model.layers[{i}]", **given)
            for i, layer_spec in enumerate(spec["layers"])
        ]
        base_spec = dict(spec.get("base") or {"name": "standard_normal"})
        if "shape" not in base_spec:
            base_spec["shape"] = _infer_latent_shape(layers, data_shape, context_features)
        base = _build_registered("distribution", base_spec, "model.base")
        model = Flow(base, layers)
    else:
        raise ConfigError(
            "model: expected either 'architecture' (one of "
            f"{', '.join(registry.available('architecture')) or 'none registered'}) or 'layers'"
        )
    if not isinstance(model, Flow):
        raise ConfigError(f"model: builder returned {type(model).__name__}, not a Flow")
    return model


def load_model(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    ema: bool = True,
    trust: bool = False,
    trust_config: bool = False,
) -> Flow:
    """The trained :class:`Flow` stored in a training checkpoint (EMA weights when present).

    The checkpoint is read without running code (see :mod:`survae.checkpoints`); ``trust``
    allows an old or foreign file that needs more than tensors and plain values. The modules
    the run imported (its own layers: ``imports``, as stored in the checkpoint or its run
    folder's ``run_config.yaml``) are imported when ``trust_config`` is set or were imported
    already; otherwise :class:`~survae.config_check.ConfigError` names them. A run of
    ``run.py`` leaves its checkpoints in the run folder (``checkpoints/last.ckpt``): the model
    spec and data shape among the hyperparameters, the weights under ``model.`` (and
    ``ema.module.``) in the state dict, as in this hand-made one:

    >>> import tempfile, torch
    >>> spec = {"layers": [{"name": "maf", "features": 2, "hidden": [16]}],
    ...         "base": {"name": "standard_normal"}}
    >>> trained = build_model(spec, data_shape=[2])
    >>> checkpoint = {
    ...     "hyper_parameters": {"model_spec": spec, "data_info": {"shape": [2]}},
    ...     "state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()},
    ... }
    >>> with tempfile.TemporaryDirectory() as run:
    ...     torch.save(checkpoint, f"{run}/last.ckpt")
    ...     model = load_model(f"{run}/last.ckpt")
    >>> x = torch.randn(3, 2)
    >>> torch.equal(model.log_prob(x), trained.eval().log_prob(x)), model.training
    (True, False)
    """
    ckpt = load_checkpoint(path, map_location, trust=trust)
    import_saved_modules(saved_imports(ckpt, path), path, trust=trust_config)
    return model_from_checkpoint(ckpt, ema=ema)


def model_from_checkpoint(ckpt: Mapping[str, Any], ema: bool = True) -> Flow:
    """The :class:`Flow` of an already-read training checkpoint (EMA weights when present)."""
    hp = ckpt["hyper_parameters"]
    info = hp["data_info"]
    model = build_model(
        copy.deepcopy(hp["model_spec"]),
        info["shape"],
        info.get("num_bins"),
        info.get("context_features"),
    )
    state = ckpt["state_dict"]
    prefix = "ema.module." if ema and any(k.startswith("ema.module.") for k in state) else "model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    model.load_state_dict(weights)
    return model.eval()
