"""Errors raised by survae with messages a user can act on."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class UserError(Exception):
    """A mistake in what was asked for (a config value, a file, the machine) whose message says
    what is wrong and what would work; the command line prints it as one line (exit status 2)
    instead of a traceback."""


class DownloadError(UserError, OSError):
    """A download failed (no network, a proxy, the server); names the URL and how to get the
    files by hand."""


class ShapeError(ValueError):
    """An input does not have the shape a layer needs; names the layer and both shapes."""


class DataRangeError(ValueError):
    """An input holds values a layer is not defined for (e.g. non-integers or values outside
    ``[0, num_bins)`` fed to dequantization); names the layer and the observed range."""


def _fmt(shape: Sequence[int | str | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def check_shape(
    layer: object, x: torch.Tensor, expected: Sequence[int | str | None], what: str = "input"
) -> None:
    """Check ``x.shape == expected``; ``None`` entries match anything (e.g. the batch).

    Only Python ints are compared, so the check never synchronises with the device.
    """
    name = type(layer).__name__
    ok = x.dim() == len(expected) and all(
        e is None or isinstance(e, str) or e == s for e, s in zip(expected, x.shape)
    )
    if not ok:
        raise ShapeError(
            f"{name}: expected {what} of shape {_fmt(expected)}, got {_fmt(tuple(x.shape))}"
        )


def check_ndim(layer: object, x: torch.Tensor, ndims: int | Sequence[int], what: str = "input"):
    """Check the rank of ``x``; ``ndims`` counts the batch dimension."""
    allowed = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if x.dim() not in allowed:
        names = {2: "(batch, features)", 3: "(batch, channels, length)", 4: "(batch, C, H, W)"}
        want = " or ".join(names.get(n, f"{n}-D") for n in allowed)
        raise ShapeError(
            f"{type(layer).__name__}: expected {what} of shape {want}, got {_fmt(tuple(x.shape))}"
        )


def python_command() -> str:
    """The Python interpreter as a user would type it to run a command a message suggests:
    this process's, relative to the current folder when it lies below it (``.venv/bin/python``
    in a checkout), else its full path; ``python`` when unknown."""
    import os
    import sys

    python = sys.executable or "python"
    try:
        relative = os.path.relpath(python)
    except ValueError:  # another drive (Windows)
        return python
    if relative.startswith(".."):
        return python
    return relative if os.sep in relative else f".{os.sep}{relative}"
