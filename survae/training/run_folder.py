"""A run's folder: owned by one process at a time, with the config that made it, and a
check that a checkpoint resumed there belongs to the same model and data."""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

from omegaconf import OmegaConf

from survae.config_check import ConfigError
from survae.errors import python_command

#: prefix of the temporary files of atomic writes; a killed write leaves one behind
TMP_PREFIX = ".tmp-"
#: the resolved config of a run, read back by ``resume=RUN_FOLDER``
CONFIG_RECORD = "run_config.yaml"
LOCK_FILE = ".survae-run.lock"
#: data keys that say where or how to read the data, not what the data is
_DATA_KEYS_NOT_IDENTITY = frozenset(
    {"root", "num_workers", "download", "check_integrity", "pin_memory", "eval_batch_size"}
)


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[Any]], None], binary: bool, suffix: str
) -> None:
    """``write(f)`` into a temporary file beside ``path`` (``.tmp-*<suffix>``, the umask's
    mode), fsync, then rename over ``path``: a reader never sees a half-written file, even if
    the process dies mid-write. A full disk keeps the previous file and says so."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if _disk_full(err):
            raise OSError(
                errno.ENOSPC,
                f"no space left on the device of {folder} while writing {path}; the previous "
                "version of that file is kept (free space, then resume the run)",
            ) from None
        raise


def _disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` or an exception it arose from is ENOSPC (``torch.save`` turns a full
    disk into a RuntimeError of its zip writer raised while the OSError is handled)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text), binary=False, suffix=".txt")


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask (``mkstemp`` gives
    0600, which hides records and checkpoints from the rest of a cluster group)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_config_record(out_dir: str, cfg: Mapping[str, Any]) -> str:
    """``run_config.yaml``: the resolved config, what ``resume=`` continues with."""
    path = os.path.join(out_dir, CONFIG_RECORD)
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(dict(cfg))))
    return path


def _is_rank_zero() -> bool:
    """Whether this is the global rank 0 process (torchrun, Slurm tasks, Lightning's DDP
    children and multi-node launches all set one of these)."""
    keys = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")
    return all(int(os.environ.get(k) or 0) == 0 for k in keys)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """Holds a run folder for the lifetime of a run, so that two runs never write into one.

    The lock is a file created with ``O_EXCL``; a lock left by a process that no longer exists
    (on this host) is taken over. Only the global rank 0 process takes the lock.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.lock = os.path.join(self.path, LOCK_FILE)
        self._held = False

    def __enter__(self) -> RunFolder:
        os.makedirs(self.path, exist_ok=True)
        if not _is_rank_zero():
            return self
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner.get("host") == me["host"] and not _pid_alive(int(owner.get("pid", -1))):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self.lock)  # left by a run that was killed: take over
                    continue
                raise ConfigError(
                    f"run folder {self.path} is in use by process {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')} (since {owner.get('started', '?')}); every run "
                    "needs its own folder: do not point two runs at one hydra.run.dir"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            return self
        raise ConfigError(f"run folder {self.path}: could not take its lock {self.lock}")

    def _owner(self) -> dict[str, Any]:
        try:
            with open(self.lock) as f:
                return dict(json.load(f))
        except (OSError, ValueError, TypeError):
            return {}

    def __exit__(self, *exc: object) -> None:
        if self._held:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.lock)
            self._held = False


def resume_command(run_dir: str | os.PathLike) -> str:
    """The command that continues the run in ``run_dir``, in the form this process was started
    with: ``<python> run.py resume=...`` from a checkout (the interpreter as typed, e.g.
    ``.venv/bin/python``), ``survae-run resume=...`` from the installed command; in-process
    runs (notebooks, sweeps' job launchers) get ``python run.py resume=...``."""
    script = sys.argv[0] if sys.argv else ""
    name = os.path.basename(script)
    if name in ("survae-run", "survae"):
        return f"{name} resume={run_dir}"
    if name == "run.py":
        return f"{python_command()} {script} resume={run_dir}"
    return f"python run.py resume={run_dir}"


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out or {prefix: {}}
    return {prefix: value}


def spec_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any], where: str) -> list[str]:
    """``"where.key: checkpoint A, config B"`` for every leaf where the two specs differ."""
    a, b = _flatten(saved, where), _flatten(wanted, where)
    return [
        f"{k}: checkpoint {a.get(k, '(absent)')!r}, config {b.get(k, '(absent)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, "(absent)") != b.get(k, "(absent)")
    ]


def check_resume_compatible(
    ckpt: Mapping[str, Any], cfg: Mapping[str, Any], path: str, force: bool | None = False
) -> None:
    """Refuse to resume from a checkpoint of another model or data set (unless ``force``)."""
    hp = ckpt.get("hyper_parameters") or {}
    saved_data = {
        k: v for k, v in (hp.get("data_config") or {}).items() if k not in _DATA_KEYS_NOT_IDENTITY
    }
    wanted_data = {
        k: v for k, v in (cfg.get("data") or {}).items() if k not in _DATA_KEYS_NOT_IDENTITY
    }
    diffs = spec_differences(hp.get("model_spec") or {}, cfg.get("model") or {}, "model")
    diffs += spec_differences(saved_data, wanted_data, "data")
    if not diffs:
        return
    listing = "\n  ".join(diffs)
    if force:
        warnings.warn(f"force_resume: {path} differs from the config:\n  {listing}", stacklevel=2)
        return
    raise ConfigError(
        f"checkpoint {path} was trained with another model or data spec than this config:\n"
        f"  {listing}\nResume a run with its own config ({resume_command('RUN_FOLDER')}), or "
        "pass force_resume=true to load it anyway."
    )


#: Lightning's start-up tips and notices that say nothing about this run
_QUIET_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning")
_QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*resuming from a checkpoint that ended before the epoch ended.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*LOCAL_RANK.*",
    r".*the number of training batches .* is smaller than the logging interval.*",
    r".*isinstance\(treespec, LeafSpec\).*is deprecated.*",  # Lightning on torch >= 2.10
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info-level chatter (accelerator tips, model summary) and warnings that
    survae handles itself are hidden for the duration; errors and other warnings show."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
