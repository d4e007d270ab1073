"""Clocks and counters of the timing protocol."""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import torch


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _compiled_graphs() -> int:
    """Graphs ``torch.compile`` has compiled so far in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _timed(fn: Callable[[int], Any], count: int, sync: Callable[[], None]) -> list[float]:
    """Seconds per call of ``fn(i)`` for ``count`` calls, synchronised before each reading."""
    times = []
    for i in range(count):
        sync()
        start = time.perf_counter()
        fn(i)
        sync()
        times.append(time.perf_counter() - start)
    return times


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
