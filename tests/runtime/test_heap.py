"""survae.runtime.heap.retain_heap: after it, freeing and re-allocating a large block costs no page
faults (glibc on Linux); checked in a fresh interpreter so this process keeps its defaults."""

import subprocess
import sys
from pathlib import Path

import pytest

import survae.runtime.heap

SCRIPT = """
import ctypes, importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("m", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
applied = m.retain_heap() if sys.argv[2] == "retain" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 48 << 20
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""


def _faults(mode: str) -> tuple[str, list[int]]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(Path(survae.runtime.heap.__file__)), mode],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return out[0], [int(v) for v in out[1:]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_heap_reuses_pages_where_the_default_faults_again():
    applied, retained = _faults("retain")
    if applied != "True":
        pytest.skip("not glibc")
    pages = (48 << 20) // 4096
    _, default = _faults("default")
    # a 48 MiB block is above glibc's largest adaptive mmap threshold: mapped anew each time
    assert min(default) > pages // 2, default
    # retained: the first use faults its pages in, the later ones reuse them
    assert retained[0] > pages // 2 and max(retained[1:]) < pages // 20, retained


def test_off_linux_nothing_is_applied(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert survae.runtime.heap.retain_heap() is False
