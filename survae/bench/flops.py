"""Floating-point work of a step and the machine's measured peak rate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from survae.bench.clock import _sync, _timed


def count_flops(fn: Callable[[int], Any], i: int = 0) -> int:
    """Floating-point operations of the matrix products and convolutions (forward and
    backward) that ``fn(i)`` runs, counted by :class:`torch.utils.flop_counter.FlopCounterMode`
    (elementwise work is not counted: this is the work a matrix unit could do)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(i)
    return int(counter.get_total_flops())


_PEAK_CACHE: dict[tuple[str, int], float] = {}


def peak_flops(device: torch.device | str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """This machine's measured float32 peak in FLOP/s: the best of ``repeats`` timed
    ``n × n`` matrix products (``2n³`` FLOPs each) on the current torch thread count.
    Cached per device and thread count."""
    dev = torch.device(device)
    key = (str(dev), torch.get_num_threads())
    if key not in _PEAK_CACHE:
        sync = _sync(dev)
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(dev)
        b = torch.randn(n, n, generator=gen).to(dev)
        a @ b  # warm-up
        best = min(_timed(lambda i: a @ b, repeats, sync))
        _PEAK_CACHE[key] = 2.0 * n**3 / best
    return _PEAK_CACHE[key]
