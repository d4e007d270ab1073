"""Fused CPU self-attention for small heads (``speed.fused_attention``).

The point-set transformers of PermuteFlow and SortFlow attend over 25–50 points with 8 heads
of 8 dimensions. PyTorch runs that as batched products of 50 × 8 by 8 × 50 matrices (a shape
its matrix library handles at a quarter of the CPU's speed), a softmax and its backward pass
over tensors of several megabytes, and copies between the token layout the projections write
and the head layout the products need. The kernel in ``csrc/attention.cpp`` does the scores,
the softmax over the keys, the weighted values and the whole backward pass for one
(cloud, head) at a time in the L1 cache, reads and writes the token layout directly, and keeps
only each query's log-sum-exp for the backward pass (which recomputes the weights instead of
storing them). Same function as :class:`survae.nn.transformer.SelfAttention`'s PyTorch path
up to float rounding (tested), including the dropout on the attention weights, whose mask it
draws from the same generator in the same order.

The kernel is compiled on first use with PyTorch's C++ extension builder (a C++ compiler and
``ninja`` are needed; the build takes ~30 s once), with OpenMP where torch has it, so that the
(cloud, head) pairs are split over torch's intra-op threads. Its entry points are registered
operators (``survae::fused_attention`` and ``survae::fused_attention_backward``), so
``torch.compile`` keeps them in its graphs and ``torch.utils.flop_counter`` counts them. On a
GPU, PyTorch's fused ``scaled_dot_product_attention`` is already the fast path and this module
is not used.

A compiled library runs code when loaded, so survae builds and loads it only from a folder of
its own that nobody else can write: ``$SURVAE_EXTENSIONS_DIR``, else
``${XDG_CACHE_HOME:-~/.cache}/survae/extensions``, one subfolder per CPU instruction set, torch
and Python version. The folders are created ``0700``; one owned by another user, writable by
group or others, or below a folder others may rename it in (writable, not sticky) is refused
with :class:`UnsafeExtensionError`. After a build, the library's SHA-256 is recorded beside it
with a key of the sources, flags, compiler, torch and Python it was built from; a library is
loaded only when both match. One whose record does not match these sources and this compiler
(or has none) is deleted and rebuilt, never loaded; one that differs from the recorded hash
(planted or modified after the build) is refused with :class:`UnsafeExtensionError`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import stat
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

from survae.nn.dropout import keep_mask

_SOURCE = Path(__file__).with_name("csrc") / "attention.cpp"
#: head sizes the kernel is instantiated for
HEAD_SIZES = (4, 8, 16)


#: the build root when set (default ``${XDG_CACHE_HOME:-~/.cache}/survae/extensions``)
DIR_ENV = "SURVAE_EXTENSIONS_DIR"
#: beside the library: what it was built from and its SHA-256
RECORD = "survae-build.json"


class FusedAttentionBuildError(RuntimeError):
    """The fused attention kernel could not be built on this machine."""


class UnsafeExtensionError(FusedAttentionBuildError):
    """The kernel's build folder could be written by someone else, or the library in it is not
    the one survae built there: nothing is loaded."""


def _build_tag() -> str:
    """A short tag of this CPU's instruction set and the torch and Python versions, so that a
    home directory shared between machines (a cluster's) never hands one CPU another's
    ``-march=native`` code, nor a new torch a binary built against an old one."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    text = f"{platform.machine()} {platform.processor()} {flags} {torch.__version__} "
    text += platform.python_version()
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def build_root() -> Path:
    """The folder survae builds compiled kernels in (see the module docstring)."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser().absolute() / "survae" / "extensions"


def _refuse(path: Path, why: str) -> UnsafeExtensionError:
    return UnsafeExtensionError(
        f"speed.fused_attention: {path} {why}; survae builds and loads compiled code only "
        f"from a folder nobody else can write (make it yours and chmod go-w, or set {DIR_ENV} "
        "to a private folder). Nothing was loaded"
    )


def private_dir(path: Path) -> Path:
    """``path`` created (``0700``) if missing, then checked: owned by this user and writable
    by nobody else, and every folder above it owned by this user or root and, where others
    may write it, sticky (so that nobody can rename ``path`` away and put another in its
    place). Raises :class:`UnsafeExtensionError` naming the folder and the fault."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    uid = os.geteuid()
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise _refuse(path, "is not a folder (a symbolic link?)")
    if info.st_uid != uid:
        raise _refuse(path, f"is owned by user id {info.st_uid}, not by you ({uid})")
    if info.st_mode & 0o022:
        raise _refuse(path, f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})")
    # the folders above it as named (a symbolic link among them can be swapped by whoever may
    # write the folder holding the link) and as they really are
    for parent in dict.fromkeys([*path.absolute().parents, *path.resolve().parents]):
        info = parent.stat()
        if info.st_uid not in (uid, 0):
            raise _refuse(parent, f"(above the build folder) is owned by user id {info.st_uid}")
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            mode = stat.S_IMODE(info.st_mode)
            raise _refuse(parent, f"(above the build folder) is writable by others (mode {mode:o})")
    return path


def _compiler_identity() -> str:
    """The C++ compiler torch's builder uses (``$CXX`` or ``c++``): its path and version."""
    cxx = os.environ.get("CXX", "c++")
    path = shutil.which(cxx)
    if path is None:
        return f"{cxx}: not found"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        version = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        version = "?"
    return f"{os.path.realpath(path)} {version}"


def build_key(flags: list[str]) -> str:
    """A hash of what the library is built from: the sources, the flags, the compiler, torch
    and Python (a library recorded under another key is never loaded)."""
    h = hashlib.sha256(_SOURCE.read_bytes())
    for part in (*flags, _compiler_identity(), torch.__version__, platform.python_version()):
        h.update(b"\0" + part.encode())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_build(folder: Path, key: str, library: Path) -> None:
    """Record ``library`` (just built in ``folder`` from what ``key`` hashes) and its SHA-256."""
    record = {"key": key, "library": library.name, "sha256": _sha256(library)}
    tmp = folder / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, folder / RECORD)


def _verified_library(folder: Path, key: str) -> Path | None:
    """The recorded library of ``folder`` when it was built from ``key`` and is unchanged;
    None when there is none to load (an unrecorded or stale build is deleted, to be rebuilt).
    Raises :class:`UnsafeExtensionError` for a library that differs from its record."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        record = {}
    library = folder / str(record.get("library", ""))
    if record.get("key") == key and library.is_file() and library.parent == folder:
        if _sha256(library) == record.get("sha256"):
            return library
        raise UnsafeExtensionError(
            f"speed.fused_attention: {library} is not the library survae built there (its "
            "SHA-256 differs from the one recorded at build time): a planted or modified "
            f"binary. It was not loaded; find out who changed it, then delete {folder} to "
            "rebuild"
        )
    leftovers = [p for p in folder.iterdir() if p.suffix in (".so", ".pyd", ".dylib")]
    if leftovers:
        warnings.warn(
            f"speed.fused_attention: {', '.join(map(str, leftovers))} has no build record for "
            "these sources and this compiler; not loaded, rebuilding",
            stacklevel=3,
        )
    for entry in folder.iterdir():  # a clean build: ninja must not reuse anything found here
        if entry.name != ".survae-build.lock":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One process at a time checks, builds and records in ``folder``."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks: builds of parallel first uses may repeat
        yield
        return
    with open(folder / ".survae-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _import_library(name: str, library: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, library)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def load_extension() -> ModuleType:
    """Build (once per CPU type and torch version, then cached) and import the kernel, from
    survae's own checked folder and only as recorded at build time (module docstring).
    Raises :class:`FusedAttentionBuildError`, naming the cause, when it cannot be built, and
    :class:`UnsafeExtensionError` for an unsafe folder or a planted or modified library."""
    from torch.utils import cpp_extension

    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError as e:
        raise FusedAttentionBuildError(
            "speed.fused_attention needs ninja to build its kernel (pip install ninja); "
            "set speed.fused_attention=false to use PyTorch's attention"
        ) from e
    name = f"survae_attention_{_build_tag()}"
    folder = private_dir(private_dir(build_root()) / name)
    flags, openmp = _compile_flags()
    key = build_key(flags + openmp)
    with _locked(folder):
        library = _verified_library(folder, key)
        if library is not None:
            return _import_library(name, library)
        module = _build(name, folder, flags, openmp)
        record_build(folder, key, Path(module.__file__))
        return module


def _compile_flags() -> tuple[list[str], list[str]]:
    """The optimisation flags and the OpenMP flags (empty where torch has no OpenMP)."""
    flags = ["-O3", "-fno-math-errno"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    # at::parallel_for splits the (cloud, head) pairs over torch's intra-op threads only when
    # compiled with OpenMP; the extension then shares the libgomp torch has already loaded.
    return flags, ["-fopenmp"] if torch.backends.openmp.is_available() else []


def _build(name: str, folder: Path, flags: list[str], openmp: list[str]) -> ModuleType:
    """Compile the kernel into ``folder`` (empty: a clean build) and import it."""
    from torch.utils import cpp_extension

    try:
        return cpp_extension.load(
            name=name,
            sources=[str(_SOURCE)],
            extra_cflags=flags + openmp,
            extra_ldflags=openmp,
            build_directory=str(folder),
            verbose=False,
        )
    except Exception as e:  # compiler missing or failing: one clear error with the cause
        raise FusedAttentionBuildError(
            f"speed.fused_attention: building {_SOURCE.name} failed ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[-1] if str(e).strip() else e!r}). The kernel needs "
            "a C++ compiler (g++ or clang++); set speed.fused_attention=false to use "
            "PyTorch's attention"
        ) from e


# The kernel's two entry points as PyTorch operators: torch.compile keeps them in its graphs as
# opaque calls, and torch.utils.flop_counter counts them (the benchmark's FLOP/s column).
@torch.library.custom_op("survae::fused_attention", mutates_args=())
def _attention_forward(
    qkv: torch.Tensor, heads: int, keep: torch.Tensor | None, keep_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = load_extension().attention_forward(qkv, heads, keep, keep_scale)
    return out, lse


@_attention_forward.register_fake
def _(qkv, heads, keep, keep_scale):
    B, N, d3 = qkv.shape
    return qkv.new_empty(B, N, d3 // 3), qkv.new_empty(B, heads, N)


@torch.library.custom_op("survae::fused_attention_backward", mutates_args=())
def _attention_backward(
    qkv: torch.Tensor,
    heads: int,
    keep: torch.Tensor | None,
    keep_scale: float,
    lse: torch.Tensor,
    grad: torch.Tensor,
) -> torch.Tensor:
    return load_extension().attention_backward(qkv, heads, keep, keep_scale, lse, grad)


@_attention_backward.register_fake
def _(qkv, heads, keep, keep_scale, lse, grad):
    return torch.empty_like(qkv)


def _setup_context(ctx, inputs, output) -> None:
    qkv, heads, keep, keep_scale = inputs
    ctx.save_for_backward(qkv, output[1], keep)
    ctx.heads, ctx.keep_scale = heads, keep_scale
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_out, grad_lse):
    qkv, lse, keep = ctx.saved_tensors
    dqkv = _attention_backward(qkv, ctx.heads, keep, ctx.keep_scale, lse, grad_out)
    return dqkv, None, None, None


_attention_forward.register_autograd(_backward, setup_context=_setup_context)


def _register_flops() -> None:
    """The FLOPs of the two batched products per head that PyTorch's path runs (scores and
    weighted values: ``4·B·N²·d`` forward, twice that backward), so that fused and unfused
    steps report the same model FLOPs; the kernel's recomputation of the scores is not
    counted."""
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.survae.fused_attention)
    def _forward_flops(qkv_shape, *args, out_shape=None, **kwargs) -> int:
        B, N, d3 = qkv_shape
        return 4 * B * N * N * (d3 // 3)

    @register_flop_formula(torch.ops.survae.fused_attention_backward)
    def _backward_flops(qkv_shape, *args, out_shape=None, **kwargs) -> int:
        B, N, d3 = qkv_shape
        return 8 * B * N * N * (d3 // 3)


_register_flops()


def supports(qkv: torch.Tensor, heads: int) -> bool:
    """Whether the kernel takes this input: a CPU float32/float64 ``[B, N, 3·d]`` tensor whose
    heads have :data:`HEAD_SIZES` dimensions, outside autocast."""
    return (
        qkv.device.type == "cpu"
        and qkv.dtype in (torch.float32, torch.float64)
        and qkv.dim() == 3
        and qkv.shape[-1] % (3 * heads) == 0
        and qkv.shape[-1] // (3 * heads) in HEAD_SIZES
        and not torch.is_autocast_enabled("cpu")
    )


def fused_attention(qkv: torch.Tensor, heads: int, dropout: float = 0.0) -> torch.Tensor:
    """Multi-head self-attention ``[B, N, 3·d] → [B, N, d]`` of the projected queries, keys and
    values (``softmax(q kᵀ / √d_head) v`` per head, the weights dropped out with probability
    ``dropout``). Check :func:`supports` first."""
    B, N, _ = qkv.shape
    keep = keep_mask((B, heads, N, N), dropout) if dropout > 0.0 else None
    scale = 1.0 / (1.0 - dropout) if dropout > 0.0 else 1.0
    return _attention_forward(qkv.contiguous(), heads, keep, scale)[0]


__all__ = [
    "HEAD_SIZES",
    "FusedAttentionBuildError",
    "UnsafeExtensionError",
    "fused_attention",
    "load_extension",
    "supports",
]
