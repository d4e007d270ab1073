"""Floating-point work of a step, split by the precision it ran in, and the machine's measured
peak rate per precision.

The peak of a precision is the best rate of the kernels torch itself uses for the work that
dominates flow models: a large matrix product (MKL or oneDNN on the CPU, cuBLAS on a GPU) and
a large 3×3 and 1×1 convolution (oneDNN / cuDNN), contiguous and channels-last, timed on the
current thread count. Whatever the kernel library reaches on its best shape is what a step of
the same precision can reach at most, so a step's share of it (:func:`fraction_of_peak`) is at
most 1 when the peak kernels are at least as large as the step's. The rates are cached per
machine (CPU flags or GPU name, torch version, thread count) in
``~/.cache/survae/peak_flops.json`` (``$XDG_CACHE_HOME`` or ``$SURVAE_CACHE_DIR`` move it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from survae.bench.clock import _device_name, _sync, _timed

#: precision name → (dtype of the operands, whether TF32 tensor cores are allowed)
PRECISIONS: dict[str, tuple[torch.dtype, bool]] = {
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}

#: the precisions measured on each device type (TF32 and fp16 matrix units: GPUs)
DEVICE_PRECISIONS: dict[str, tuple[str, ...]] = {
    "cpu": ("fp32", "bf16"),
    "cuda": ("fp32", "tf32", "bf16", "fp16"),
}

#: kernel shapes: matrix product n × n × n; convolution batch × channels → channels at size²
LARGE = {"matmul": 2048, "conv_batch": 32, "conv_channels": 256, "conv_size": 16}

_DTYPE_PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


# --------------------------------------------------------------------------- counting
class _PrecisionFlopCounter(FlopCounterMode):
    """:class:`FlopCounterMode` that also adds each operation's FLOPs to the precision of its
    first floating-point tensor argument (under autocast: the dtype the kernel ran in)."""

    def __init__(self) -> None:
        super().__init__(display=False)
        self.by_precision: dict[str, int] = defaultdict(int)

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet in self.flop_registry:
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            conv = "conv" in str(func_packet)
            self.by_precision[_precision_of(args, conv)] += int(flops)
        return super()._count_flops(func_packet, out, args, kwargs)


def _precision_of(args: Any, conv: bool = False) -> str:
    """The precision an operation with these arguments runs in: its first floating-point
    tensor's dtype, and on a GPU float32 as TF32 where torch allows it for the operation."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            name = _DTYPE_PRECISION.get(a.dtype, str(a.dtype).removeprefix("torch."))
            if name == "fp32" and a.is_cuda:
                tf32 = (
                    torch.backends.cudnn.allow_tf32
                    if conv
                    else (torch.get_float32_matmul_precision() != "highest")
                )
                name = "tf32" if tf32 else name
            return name
    return "fp32"


def count_flops_by_precision(fn: Callable[[int], Any], i: int = 0) -> dict[str, int]:
    """Floating-point operations of the matrix products and convolutions (forward and
    backward) that ``fn(i)`` runs, per precision (``{"fp32": ..., "bf16": ...}``), counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` (elementwise work is not counted: this
    is the work a matrix unit could do)."""
    with _PrecisionFlopCounter() as counter:
        fn(i)
    return {k: v for k, v in counter.by_precision.items() if v}


def count_flops(fn: Callable[[int], Any], i: int = 0) -> int:
    """All floating-point operations of :func:`count_flops_by_precision`, summed."""
    return sum(count_flops_by_precision(fn, i).values())


# --------------------------------------------------------------------------- kernels
@contextlib.contextmanager
def _tf32(device: torch.device, allowed: bool) -> Iterator[None]:
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _best_rate(fn: Callable[[int], Any], flops: float, repeats: int, sync) -> float:
    fn(0)  # warm-up: the library picks and prepares its kernel
    return flops / min(_timed(fn, repeats, sync))


def kernel_rates(
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    sizes: Mapping[str, int] | None = None,
    repeats: int = 5,
) -> dict[str, float]:
    """FLOP/s of each peak kernel in ``precision`` on ``device`` at the current thread count:
    ``matmul`` (``n × n`` by ``n × n``, ``2n³`` FLOPs), ``conv3x3`` and ``conv1x1``
    (``batch × c × s × s`` → ``c`` channels, same padding), each contiguous and
    ``_channels_last``; the best of ``repeats`` timed calls after one warm-up call."""
    dev = torch.device(device)
    dtype, tf32 = PRECISIONS[precision]
    s = {**LARGE, **dict(sizes or {})}
    sync = _sync(dev)
    gen = torch.Generator().manual_seed(0)
    n, b, c, hw = s["matmul"], s["conv_batch"], s["conv_channels"], s["conv_size"]
    rates: dict[str, float] = {}
    with torch.no_grad(), _tf32(dev, tf32):
        a = torch.randn(n, n, generator=gen).to(dev, dtype)
        m = torch.randn(n, n, generator=gen).to(dev, dtype)
        rates["matmul"] = _best_rate(lambda i: a @ m, 2.0 * n**3, repeats, sync)
        x = torch.randn(b, c, hw, hw, generator=gen).to(dev, dtype)
        for k in (3, 1):
            w = torch.randn(c, c, k, k, generator=gen).to(dev, dtype)
            conv_flops = 2.0 * b * c * c * k * k * hw * hw
            for fmt, suffix in ((torch.contiguous_format, ""), (torch.channels_last, "_cl")):
                xf, wf = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)

                def conv(i, xf=xf, wf=wf, k=k):
                    return torch.nn.functional.conv2d(xf, wf, padding=k // 2)

                rates[f"conv{k}x{k}{suffix}"] = _best_rate(conv, conv_flops, repeats, sync)
    return rates


def peak_of(rates: Mapping[str, float]) -> float:
    """The peak of one precision: the best rate of its kernels."""
    if not rates:
        raise ValueError("peak_of: no kernel rates")
    return max(rates.values())


# --------------------------------------------------------------------------- cache
def _cache_file() -> Path:
    root = os.environ.get("SURVAE_CACHE_DIR")
    if root:
        return Path(root) / "peak_flops.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "survae" / "peak_flops.json"


def machine_key(device: torch.device | str = "cpu") -> str:
    """What the peak depends on: the processor (its name and instruction-set flags) or GPU,
    the torch version and the thread count."""
    dev = torch.device(device)
    flags = ""
    if dev.type == "cpu":
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags"):
                    flags = line
                    break
    text = f"{platform.machine()} {_device_name(dev)} {flags}"
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{dev.type}:{digest}:torch {torch.__version__}:threads {torch.get_num_threads()}"


_PEAK_CACHE: dict[tuple[str, str], dict[str, float]] = {}


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def peak_rates(
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    *,
    cache: bool = True,
    refresh: bool = False,
    sizes: Mapping[str, int] | None = None,
    repeats: int = 5,
) -> dict[str, float]:
    """:func:`kernel_rates` of this machine, measured once per machine, precision and thread
    count and then read from the cache (in memory and on disk; ``cache=False``: measure, keep
    nothing). ``refresh`` measures again and keeps, per kernel, the better of the new and the
    cached rate: a peak measured while other processes shared the cores is too low, and the
    next measurement on a quieter machine replaces it."""
    key = (machine_key(device), precision)
    if cache and not refresh and key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    path = _cache_file()
    entry = _load_cache(path).get(key[0], {}).get(precision) if cache else None
    valid = isinstance(entry, dict) and entry and all(v > 0 for v in entry.values())
    if not valid or refresh:
        fresh = kernel_rates(device, precision, sizes, repeats)
        old = entry if valid else {}
        entry = {k: max(v, old.get(k, 0.0)) for k, v in fresh.items()}
        if cache:
            stored = _load_cache(path)  # another process may have added a key meanwhile
            stored.setdefault(key[0], {})[precision] = entry
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(stored, indent=1, sort_keys=True))
                tmp.replace(path)
    if cache:
        _PEAK_CACHE[key] = entry
    return entry


def peak_flops(
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    *,
    cache: bool = True,
    refresh: bool = False,
) -> float:
    """This machine's measured peak in FLOP/s for ``precision`` (:func:`peak_of` its
    :func:`peak_rates`)."""
    return peak_of(peak_rates(device, precision, cache=cache, refresh=refresh))


def peaks(
    device: torch.device | str = "cpu", precisions: Any = None, refresh: bool = False
) -> dict[str, float]:
    """Peak FLOP/s per precision: ``precisions`` (default: those measured on the device)."""
    dev = torch.device(device)
    names = precisions or DEVICE_PRECISIONS.get(dev.type, ("fp32",))
    return {p: peak_flops(dev, p, refresh=refresh) for p in names}


def step_fraction(
    flops_by_precision: Mapping[str, float], seconds: float, device: torch.device | str = "cpu"
) -> tuple[float, dict[str, float]]:
    """A step's :func:`fraction_of_peak` and the peaks it was taken against. A fraction above
    1 means the cached peak is too low (measured while the cores were shared): the peak
    kernels are measured again (:func:`peak_rates` ``refresh``) before the fraction is
    taken."""
    names = sorted(flops_by_precision)
    peak = peaks(device, names)
    fraction = fraction_of_peak(flops_by_precision, seconds, peak)
    if fraction > 1.0:
        peak = peaks(device, names, refresh=True)
        fraction = fraction_of_peak(flops_by_precision, seconds, peak)
    return fraction, peak


def fraction_of_peak(
    flops_by_precision: Mapping[str, float], seconds: float, peak: Mapping[str, float]
) -> float:
    """The share of ``seconds`` that the counted work would take at the peak of the
    precision each part ran in: ``Σ flops_p / peak_p / seconds`` (for one precision, the
    achieved rate over that precision's peak). At most 1 for a step whose kernels are no
    faster than the peak kernels."""
    if seconds <= 0:
        raise ValueError(f"fraction_of_peak: seconds must be positive, got {seconds}")
    missing = sorted(set(flops_by_precision) - set(peak))
    if missing:
        raise ValueError(f"fraction_of_peak: no peak for precision(s) {missing}")
    return sum(f / peak[p] for p, f in flops_by_precision.items()) / seconds
