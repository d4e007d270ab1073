"""Checking a requested device before any work is done on it.

Scripts (``eval_*.py``, ``benchmark.py``) take ``--device``; :func:`check_device` turns a name
that cannot work on this machine (``cuda`` without a CUDA device, ``cuda:3`` on a two-GPU
machine, ``mps`` off macOS, a typo) into one :class:`DeviceUnavailableError` line saying what is
available, instead of a traceback per measurement minutes later.
"""

from __future__ import annotations

import torch


class DeviceUnavailableError(RuntimeError):
    """The requested device does not exist on this machine (or is not a device name)."""


def available_devices() -> list[str]:
    """Device names that work here: ``cpu``, then ``cuda``/``cuda:i`` and ``mps`` if present."""
    names = ["cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names += ["cuda"] + [f"cuda:{i}" for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(device: str | torch.device, option: str = "--device") -> torch.device:
    """``torch.device(device)`` if it is present on this machine; else
    :class:`DeviceUnavailableError` naming ``option``, the reason and the devices there are."""
    valid = ", ".join(available_devices())
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceUnavailableError(
            f"{option} {device!r} is not a device name ({err}); available here: {valid}"
        ) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = torch.version.cuda
            why = (
                f"this PyTorch {torch.__version__} is a CPU-only build"
                if build is None
                else f"PyTorch (CUDA {build}) finds no CUDA device or driver"
            )
            raise DeviceUnavailableError(
                f"{option} {device}: no CUDA device is available ({why}); available here: {valid}"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceUnavailableError(
                f"{option} {device}: this machine has {count} CUDA device(s) "
                f"(cuda:0 to cuda:{count - 1})"
            )
        return dev
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if is_available is None or not is_available():
        raise DeviceUnavailableError(
            f"{option} {device}: no {dev.type} device is available; available here: {valid}"
        )
    return dev
