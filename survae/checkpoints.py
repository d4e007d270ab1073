"""Reading training checkpoints without running code from them.

A checkpoint is a pickle; a crafted one can run arbitrary code when unpickled. survae reads
every checkpoint with ``torch.load(weights_only=True)``, which admits only tensors and plain
Python values -- everything survae itself stores. A file that needs more is refused with an
error naming the file; ``trust=True`` (``--trust-checkpoint``, ``trust_checkpoint=true``) reads
an old or foreign file the unsafe way, for files whose origin you trust.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


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
