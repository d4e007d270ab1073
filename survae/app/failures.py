"""Configuration and environment errors as one line on stderr, exit status 2.

A mistake in what was asked for -- a value out of range, an unknown key or config name, a data
set that is not there, a GPU that is not there, a download without network -- is reported as
``Error: <what, where, the valid values>`` with exit status 2 before anything is built; the
traceback would only point into survae, Hydra or Lightning. ``--debug`` or
``HYDRA_FULL_ERROR=1`` shows the traceback instead. Errors that are not of these kinds (bugs)
keep their traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

#: exit status of a configuration or environment error (argparse's for a usage error)
EXIT_CONFIG_ERROR = 2


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes whose message is the whole story (imported late: the CLI must
    answer ``--help`` without importing torch)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from survae.checkpoints import CheckpointError
    from survae.config_check import ConfigError
    from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
    from survae.errors import UserError
    from survae.registry import UnknownNameError
    from survae.runtime.devices import DeviceUnavailableError

    return (
        UserError,
        ConfigError,
        CheckpointError,
        DatasetNotFoundError,
        DatasetCorruptedError,
        UnknownNameError,
        DeviceUnavailableError,
        HydraException,
        OmegaConfBaseException,
    )


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is a configuration or environment error (see the module docstring)."""
    return isinstance(err, user_error_types())


def full_traceback_wanted(argv: list[str] | None = None) -> bool:
    """``--debug`` on the command line or ``HYDRA_FULL_ERROR=1`` in the environment."""
    return "--debug" in (argv or []) or os.environ.get("HYDRA_FULL_ERROR") == "1"


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _missing_config(err: Any) -> str:
    """Hydra's ``Could not find 'experiment/abs_flow_corner'`` with its list of options."""
    group, _, name = str(err.missing_cfg_file).rpartition("/")
    options = [str(o) for o in (err.options or [])]
    if not group:
        return flatten(str(err).split("Config search path:")[0])
    return (
        f"{group}={name}: no such {group}{_did_you_mean(name, options)}; valid: "
        f"{', '.join(options)}"
    )


def _unknown_override(err: Any) -> str | None:
    """Hydra's ``Could not override 'trainer.max_step'`` caused by a key that is not there."""
    cause = err.__cause__
    full_key = getattr(cause, "full_key", None)
    if not full_key or "not in struct" not in str(cause):
        return None
    parent = getattr(cause, "parent_node", None)
    keys = [str(k) for k in parent.keys()] if hasattr(parent, "keys") else []
    leaf = str(getattr(cause, "key", full_key))
    valid = f"; valid keys there: {', '.join(keys)}" if keys else ""
    return (
        f"{full_key}: no such key{_did_you_mean(leaf, keys)}; a new key needs a "
        f"leading + (+{full_key}=...){valid}"
    )


def flatten(text: str) -> str:
    """A multi-line message as one line: list items (``- item``) joined with commas."""
    parts: list[str] = []
    items: list[str] = []
    for raw in str(text).splitlines():
        line = raw.strip()
        if line.startswith("- "):
            items.append(line[2:])
            continue
        if items:
            parts.append(", ".join(items) + ";")
            items = []
        if line:
            parts.append(line)
    if items:
        parts.append(", ".join(items))
    return " ".join(parts)


def one_line(err: BaseException) -> str:
    """The message of a configuration or environment error as one line."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    if isinstance(err, MissingConfigException):
        return _missing_config(err)
    if isinstance(err, ConfigCompositionException):
        text = _unknown_override(err)
        if text:
            return text
    if isinstance(err, OverrideParseException):
        return f"{err.override}: cannot parse this override ({flatten(err.message)})"
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return flatten(message.split("Config search path:")[0]) or type(err).__name__


#: what a run folder holds when the run stopped before training (Hydra's records, the log, the
#: config record, the failure record, the lock)
_NOTHING_RAN = {".hydra", "cli.log", "run_config.yaml", "results.json", ".survae-run.lock"}


def remove_if_nothing_ran(folder: str | os.PathLike) -> bool:
    """Remove a new run's folder that a configuration error left with nothing but
    :data:`_NOTHING_RAN` (no checkpoint, sample or logger files), and its parent if that is
    then empty; returns whether it was removed. A folder with anything else is kept."""
    path = Path(folder)
    if not path.is_dir() or not set(os.listdir(path)) <= _NOTHING_RAN:
        return False
    record = path / "results.json"
    if record.is_file() and '"state": "failed"' not in record.read_text():
        return False  # a run finished there before
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only if empty
    return not path.exists()


def exit_with_error(err: BaseException) -> NoReturn:
    """Print ``Error: <one line>`` on stderr and exit with :data:`EXIT_CONFIG_ERROR`."""
    sys.stdout.flush()
    print(f"Error: {one_line(err)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_CONFIG_ERROR)
