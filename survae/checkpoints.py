"""Reading training checkpoints without running code from them.

A checkpoint is a pickle; a crafted one can run arbitrary code when unpickled. survae reads
every checkpoint with ``torch.load(weights_only=True)``, which admits only tensors and plain
Python values -- everything survae itself stores. A file that needs more is refused with an
error naming the file; ``trust=True`` (``--trust-checkpoint``, ``trust_checkpoint=true``) reads
an old or foreign file the unsafe way, for files whose origin you trust.

The same rule holds for the modules a run imported (``imports``: the user's own layers, which
register themselves on import). Importing a module runs its code, so modules named in a file
survae did not write in this process -- a checkpoint, a run folder's ``run_config.yaml`` --
are imported only when the user says so (:func:`import_saved_modules`; ``trust_config``).
Modules already imported are used as they are.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from survae.config_check import ConfigError

#: the run record beside a run folder's ``checkpoints/`` (``survae.training.run_folder``)
RUN_RECORD = "run_config.yaml"
#: how each entry point is told that a file's ``imports`` may be imported
TRUST_CONFIG_FLAGS = (
    "trust_config=true (run.py), --trust-config (scripts) or trust_config=True (load_model)"
)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, unsafe to unpickle, or not a survae checkpoint."""


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    trust: bool = False,
    require_survae: bool = True,
) -> dict[str, Any]:
    """The contents of a training checkpoint, read without running code unless ``trust``.

    Raises :class:`CheckpointError` with the path and what is wrong: missing, empty,
    truncated or corrupt, needs objects a safe load refuses, or (with ``require_survae``)
    not a survae training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted copy?")
    try:
        ckpt = torch.load(str(path), map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as err:
        if not trust and "weights_only" in str(err).lower().replace(" ", "_"):
            raise CheckpointError(
                f"checkpoint {path} holds objects other than tensors and plain values, which "
                f"could run code when loaded ({_refused_global(err)}); survae does not load "
                "it. If you trust its origin: --trust-checkpoint (scripts) or "
                "trust_checkpoint=true (run.py)"
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupt ({size:,} bytes): {err}") from None
    except (EOFError, RuntimeError, KeyError, ValueError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({size:,} bytes; "
            f"{type(err).__name__}: {_first_line(err)})"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a training checkpoint")
    if require_survae:
        missing = [k for k in ("state_dict", "hyper_parameters") if k not in ckpt]
        if missing or "model_spec" not in ckpt["hyper_parameters"]:
            raise CheckpointError(
                f"{path} is not a survae training checkpoint (no "
                f"{' or '.join(missing) if missing else 'hyper_parameters.model_spec'}); "
                "survae reads the checkpoints that run.py writes"
            )
    return ckpt


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def _refused_global(err: BaseException) -> str:
    """The global a weights-only load refused, as torch reports it."""
    for line in str(err).splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip()[:200]
    return _first_line(err)


def saved_imports(ckpt: Mapping[str, Any], path: str | os.PathLike) -> list[str]:
    """The modules the run that wrote a checkpoint imported: its ``hyper_parameters.imports``,
    else (checkpoints of older runs) the ``imports`` of its run folder's ``run_config.yaml``
    (``RUN/checkpoints/FILE.ckpt``), read as plain YAML; empty when neither names any."""
    hp = ckpt.get("hyper_parameters") or {}
    if "imports" in hp:
        return _module_names(hp["imports"], f"checkpoint {path}")
    record = Path(path).resolve().parent.parent / RUN_RECORD
    if not record.is_file():
        return []
    try:
        saved = yaml.safe_load(record.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{record}: cannot be read as YAML ({_first_line(err)})") from None
    return _module_names((saved or {}).get("imports") if isinstance(saved, dict) else None, record)


def _module_names(value: Any, source: str | os.PathLike) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) for m in value):
        raise ConfigError(f"{source}: imports must be a list of module names, got {value!r}")
    return list(value)


def untrusted_imports(modules: Sequence[str]) -> list[str]:
    """The ``modules`` not imported yet, whose import would run code."""
    return [m for m in modules if m not in sys.modules]


def import_saved_modules(
    modules: Sequence[str], source: str | os.PathLike, trust: bool = False
) -> None:
    """Import ``modules`` named in ``source``, a file survae did not write in this process.

    Modules already imported are fine as they are. Others are imported only with ``trust``;
    without it :class:`~survae.config_check.ConfigError` names them, the file and the flags
    that allow it (or import them yourself first)."""
    pending = untrusted_imports(modules)
    if pending and not trust:
        raise ConfigError(refused_imports_message(pending, source))
    for name in pending:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(
                f"imports: cannot import {name!r} named in {source} ({err}); put the folder "
                "that contains it on PYTHONPATH or install it"
            ) from None


def refused_imports_message(modules: Sequence[str], source: str | os.PathLike) -> str:
    """The one-line refusal of a file's ``imports`` (importing runs their code)."""
    return (
        f"{source} names modules to import ({', '.join(modules)}); importing runs their code "
        f"and survae did not write that file in this run, so it does not import them. If you "
        f"trust its origin: {TRUST_CONFIG_FLAGS}; or import them yourself first"
    )
