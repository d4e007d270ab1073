"""Config resolvers that name runs after what was run and keep their folders apart.

* ``${survae.run_name:}``: the experiment, or ``<model>_<data>`` when the command line
  replaced the experiment's model or data (never the name of an overridden default);
* ``${survae.stamp:}``: date, time and a random suffix: two runs started in the same second
  never share a folder; one stamp per sweep, shared by all its jobs;
* ``${survae.job_name:}``: ``<run_name>`` plus the command line's overrides (W&B run name);
* ``${survae.sweep_group:}``: the sweep's name in a multirun (W&B group), else ``null``;
* ``${survae.overrides:}``, ``${survae.debug:}``: the command line's overrides and debug
  choice.

A sweep's folder and group depend only on its stamp (and ``hparams_search``), not on any
job's choices, so ``multirun.yaml`` and every job folder land under one folder.

They read Hydra's own record of the composition (``hydra.runtime.choices`` and
``hydra.overrides.task``) through ``_root_``, or through Hydra's job record where Hydra has
removed that node from the job's config.
"""

from __future__ import annotations

import datetime
import os
import secrets
from typing import Any

from omegaconf import OmegaConf

#: the sweep's stamp, inherited by the launcher's job processes
STAMP_ENV = "SURVAE_RUN_STAMP"
#: groups whose choice defines what a run is
_IDENTITY_GROUPS = ("model", "data")


def _select(root: Any, key: str, default: Any = None) -> Any:
    """``key`` (``hydra.…``) from the config being resolved, or -- in the job's own config,
    from which Hydra removes its ``hydra`` node -- from Hydra's record of the job."""
    value = OmegaConf.select(root, key, default=None, throw_on_missing=False)
    if value is None and key.startswith("hydra.") and "hydra" not in root:
        try:
            from hydra.core.hydra_config import HydraConfig
        except ImportError:  # plain OmegaConf use: nothing to read
            return default
        if HydraConfig.initialized():
            value = OmegaConf.select(
                HydraConfig.get(), key[len("hydra.") :], default=None, throw_on_missing=False
            )
    return default if value is None else value


def _task_overrides(root: Any) -> list[str]:
    return [str(o) for o in _select(root, "hydra.overrides.task", [])]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_name(*, _root_: Any) -> str:
    """What was run: the experiment unless the command line replaced its model or data."""
    choices = _select(_root_, "hydra.runtime.choices", {})
    experiment = choices.get("experiment")
    replaced = {_override_key(o) for o in _task_overrides(_root_)} & set(_IDENTITY_GROUPS)
    if experiment and not replaced:
        name = str(experiment)
    else:
        name = "_".join(str(choices.get(g, "custom")) for g in _IDENTITY_GROUPS)
    return f"debug/{name}" if choices.get("debug") else name


def job_folder(*, _root_: Any) -> str:
    """A sweep job's folder: ``<job number>_<run name>`` (one level, ``/`` becomes ``-``)."""
    num = _select(_root_, "hydra.job.num", 0)
    return f"{num}_{run_name(_root_=_root_).replace('/', '-')}"


def new_stamp() -> str:
    """``YYYY-mm-dd_HH-MM-SS_<6 hex>``: sortable by time, unique across simultaneous launches."""
    now = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return f"{now}_{secrets.token_hex(3)}"


def stamp(*, _root_: Any) -> str:
    """One stamp per run; in a multirun, one for the sweep and all of its jobs."""
    if os.environ.get(STAMP_ENV):
        return os.environ[STAMP_ENV]
    value = new_stamp()
    if _is_multirun(_root_):
        os.environ[STAMP_ENV] = value  # job processes (submitit, joblib) inherit it
    return value


def _is_multirun(root: Any) -> bool:
    return str(_select(root, "hydra.mode", "")).endswith("MULTIRUN")


def job_name(*, _root_: Any) -> str:
    """The run name plus the overrides that distinguish this job (hydra.* excluded, and the
    experiment when the name already is it): ``abs_flow_corners[seed=1]``."""
    base = run_name(_root_=_root_)
    shown = [
        o
        for o in _task_overrides(_root_)
        if not _override_key(o).startswith("hydra") and o != f"experiment={base}"
    ]
    return f"{base}[{','.join(shown)}]" if shown else base


def sweep_name(*, _root_: Any) -> str:
    """``<hparams_search or "sweep">_<stamp>``: the same for the sweep and all of its jobs."""
    search = _select(_root_, "hydra.runtime.choices", {}).get("hparams_search")
    return f"{search or 'sweep'}_{stamp(_root_=_root_)}"


def sweep_group(*, _root_: Any) -> str | None:
    """The W&B group of a multirun's jobs (the sweep's name); ``None`` for single runs."""
    return sweep_name(_root_=_root_) if _is_multirun(_root_) else None


def overrides(*, _root_: Any) -> list[str]:
    """The command line's overrides (recorded in ``results.json``; the report groups by them)."""
    return _task_overrides(_root_)


def debug_choice(*, _root_: Any) -> str | None:
    """The chosen ``debug`` config (``fast_dev_run``, ``short``) or ``None``."""
    return _select(_root_, "hydra.runtime.choices", {}).get("debug")


def register() -> None:
    """Register the resolvers with OmegaConf (idempotent)."""
    for name, fn in {
        "survae.run_name": run_name,
        "survae.stamp": stamp,
        "survae.job_name": job_name,
        "survae.job_folder": job_folder,
        "survae.sweep_name": sweep_name,
        "survae.sweep_group": sweep_group,
        "survae.overrides": overrides,
        "survae.debug": debug_choice,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
