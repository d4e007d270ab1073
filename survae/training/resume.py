"""``resume=RUN_FOLDER``: continue a run in its own folder from its saved config.

A run writes its resolved config to ``run_config.yaml``; resuming reads it back, applies the
command line's ``key=value`` overrides on top (reported), and continues from the folder's
``checkpoints/last.ckpt`` (or a given ``ckpt_path``) in the same folder, so checkpoint
tracking, samples and ``results.json`` stay together. A lone ``ckpt_path=.../last.ckpt`` of a
run folder (no experiment, model or data choice) is the same as ``resume=`` its folder.

The saved config is a file survae did not write in this process (it may come from elsewhere),
so it is read as plain YAML -- no interpolation, nothing instantiated (a Hydra ``_target_`` is
a key like any other) -- its ``imports`` are imported only with ``trust_config=true`` on the
command line (or when the command line names them: ``imports=[...]``), and the trust flags
(``trust_config``, ``trust_checkpoint``) are taken from the command line only, never from the
file.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from survae.checkpoints import refused_imports_message, untrusted_imports
from survae.config_check import ConfigError
from survae.training.run_folder import CONFIG_RECORD

#: keys that allow what a file from elsewhere may not ask for itself: command line only
TRUST_KEYS = ("trust_config", "trust_checkpoint")
#: config groups: choosing one builds a different run, which resuming cannot do
_GROUPS = ("experiment", "model", "data", "optim", "trainer", "logger", "callbacks", "paths")


def _split(arg: str) -> tuple[str, str]:
    key, _, value = arg.partition("=")
    return key, value


def _run_folder_of(ckpt: str) -> Path | None:
    folder = Path(ckpt).resolve().parent.parent
    return folder if (folder / CONFIG_RECORD).is_file() else None


def wants_resume(argv: Sequence[str]) -> bool:
    """Whether the command line asks to continue a run folder (not a Hydra multirun)."""
    if any(a in ("-m", "--multirun") for a in argv):
        return False
    args = dict(_split(a) for a in argv if "=" in a and not a.startswith("-"))
    if args.get("resume") not in (None, "", "null"):
        return True
    ckpt = args.get("ckpt_path")
    if ckpt in (None, "", "null") or any(g in args for g in ("experiment", "model", "data")):
        return False
    return _run_folder_of(ckpt) is not None


def resume_config(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The config to continue with and the overrides applied to the saved one."""
    args = [a for a in argv if "=" in a and not a.startswith("-")]
    given = dict(_split(a) for a in args)
    ckpt = given.get("ckpt_path")
    ckpt = None if ckpt in (None, "", "null") else ckpt
    if given.get("resume") not in (None, "", "null"):
        folder = Path(given["resume"]).expanduser().resolve()
    else:
        folder = _run_folder_of(str(ckpt))
    record = folder / CONFIG_RECORD
    if not record.is_file():
        raise ConfigError(
            f"resume: {folder} is not a survae run folder (no {CONFIG_RECORD}); give the folder "
            "a run prints at its start, e.g. outputs/<experiment>/<date_time>_<suffix>"
        )
    cfg = _read_record(record)
    cfg.update(dict.fromkeys(TRUST_KEYS, False))
    changes = []
    for arg in args:
        key, raw = _split(arg)
        if key in ("resume", "ckpt_path"):
            continue
        change = _apply_override(cfg, key, raw)
        if key.lstrip("+") not in TRUST_KEYS:  # a permission for this command, not a setting
            changes.append(change)
            _record_override(cfg, key, raw)
    _check_imports(cfg, record, named="imports" in {_split(a)[0].lstrip("+") for a in args})
    if ckpt is None:
        ckpt = str(folder / "checkpoints" / "last.ckpt")
        if not Path(ckpt).is_file():
            raise ConfigError(f"resume: {folder} has no checkpoints/last.ckpt to continue from")
    cfg["ckpt_path"] = str(ckpt)
    cfg["resume"] = None
    cfg.setdefault("paths", {})["output_dir"] = str(folder)
    return cfg, changes


def _record_override(cfg: dict[str, Any], key: str, raw: str) -> None:
    """Put ``key=raw`` into ``run_info.overrides`` (what results.json and the report show),
    replacing the saved entry of the same key: a resumed run records what it ran with."""
    info = cfg.get("run_info")
    if not isinstance(info, dict):
        info = cfg["run_info"] = {}
    name = key.lstrip("+~")
    kept = [o for o in info.get("overrides") or [] if str(o).partition("=")[0].lstrip("+~") != name]
    info["overrides"] = [*kept, f"{name}={raw}"]


def _read_record(record: Path) -> dict[str, Any]:
    """A run folder's saved config as plain data (safe YAML: no tags, no interpolation)."""
    try:
        cfg = yaml.safe_load(record.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"resume: {record} cannot be read as YAML ({err})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"resume: {record} holds no config mapping")
    return cfg


def _check_imports(cfg: dict[str, Any], record: Path, named: bool) -> None:
    """Refuse to import the saved config's ``imports`` unless the command line names them or
    says ``trust_config=true`` (modules imported already run nothing and are fine)."""
    modules = cfg.get("imports") or []
    if named or not isinstance(modules, list) or cfg.get("trust_config") is True:
        return  # a malformed list is the run's own config check's to name
    pending = untrusted_imports([str(m) for m in modules])
    if pending:
        raise ConfigError(
            "resume: "
            + refused_imports_message(pending, record)
            + f" (or name them: imports=[{','.join(pending)}])"
        )


def _apply_override(cfg: dict[str, Any], key: str, raw: str) -> str:
    """Set ``key`` (dotted; ``+key`` may add a new one) to the YAML value ``raw``."""
    add = key.startswith("+")
    path = key.lstrip("+").split(".")
    if len(path) == 1 and path[0] in _GROUPS:
        raise ConfigError(
            f"resume: {key}={raw} would choose another {path[0]}; a resumed run keeps its own "
            "(start a new run instead, or change single keys such as optim.lr=...)"
        )
    node = cfg
    for i, part in enumerate(path[:-1]):
        if not isinstance(node.get(part), dict):
            if not add:
                raise ConfigError(f"resume: {'.'.join(path[: i + 1])} is not in the saved config")
            node[part] = {}
        node = node[part]
    leaf = path[-1]
    if leaf not in node and not add:
        raise ConfigError(
            f"resume: {'.'.join(path)} is not in the saved config; use +{'.'.join(path)}=... "
            "to add a key"
        )
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as err:
        raise ConfigError(f"resume: cannot read the value of {key}={raw} ({err})") from None
    old = copy.deepcopy(node.get(leaf, "(absent)"))
    node[leaf] = value
    return f"{'.'.join(path)}: {old} -> {value}"
