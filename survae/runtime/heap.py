"""Keep freed heap memory in the process (glibc), so CPU training steps reuse their pages.

By default glibc's ``malloc`` hands blocks above an adaptive size threshold to ``mmap`` and
returns free memory at the top of the heap to the system once it exceeds a trim threshold. A
training step allocates and frees the same large activations every step, so whether a step
re-faults its pages (the kernel zeroing each 4 KiB page again) depends on the history of
allocations in the process: measured on the small Glow of the peer benchmark, each library
alone in a fresh process, FrEIA's step took 162 ms with ~12,600 page faults per step and
126 ms with none; nflows' 153 and 121 ms; survae's 118 and 110 ms. Fixing both thresholds high
(``mallopt``) keeps the pages mapped: the peak resident memory is what the step needs, held
until the process exits. No other C library is touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: glibc ``mallopt`` parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: allocations below this size come from the heap (glibc caps it at 32 MiB in older versions)
MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK = 1 << 30, 32 << 20
#: free memory at the top of the heap kept before any is returned to the system
TRIM_THRESHOLD = (1 << 31) - 1


def retain_heap() -> bool:
    """Fix glibc's mmap and trim thresholds so freed blocks stay in the process. Returns
    whether it was applied (False off Linux/glibc, e.g. macOS or musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK) != 1:
            return False
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
