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
``ninja`` are needed; the build takes ~30 s once and is cached under
``$TORCH_EXTENSIONS_DIR``, per CPU instruction set), with OpenMP where torch has it, so that
the (cloud, head) pairs are split over torch's intra-op threads. Under ``torch.compile`` the
kernel is a graph break (it runs eagerly between compiled graphs). On a GPU, PyTorch's fused
``scaled_dot_product_attention`` is already the fast path and this module is not used.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path
from types import ModuleType

import torch

from survae.nn.dropout import keep_mask

_SOURCE = Path(__file__).with_name("csrc") / "attention.cpp"
#: head sizes the kernel is instantiated for
HEAD_SIZES = (4, 8, 16)


class FusedAttentionBuildError(RuntimeError):
    """The fused attention kernel could not be built on this machine."""


def _cpu_tag() -> str:
    """A short tag of this CPU's instruction set, so that a build directory shared between
    machines (a cluster's home directory) never hands one CPU another's ``-march=native``
    code."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    text = f"{platform.machine()} {platform.processor()} {flags}"
    return hashlib.sha1(text.encode()).hexdigest()[:10]


@functools.cache
def load_extension() -> ModuleType:
    """Build (once per CPU type, then cached) and import the kernel. Raises
    :class:`FusedAttentionBuildError`, naming the cause, when it cannot be built."""
    from torch.utils import cpp_extension

    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError as e:
        raise FusedAttentionBuildError(
            "speed.fused_attention needs ninja to build its kernel (pip install ninja); "
            "set speed.fused_attention=false to use PyTorch's attention"
        ) from e
    flags = ["-O3", "-fno-math-errno"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    # at::parallel_for splits the (cloud, head) pairs over torch's intra-op threads only when
    # compiled with OpenMP; the extension then shares the libgomp torch has already loaded.
    openmp = ["-fopenmp"] if torch.backends.openmp.is_available() else []
    try:
        return cpp_extension.load(
            name=f"survae_attention_{_cpu_tag()}",
            sources=[str(_SOURCE)],
            extra_cflags=flags + openmp,
            extra_ldflags=openmp,
            verbose=False,
        )
    except Exception as e:  # compiler missing or failing: one clear error with the cause
        raise FusedAttentionBuildError(
            f"speed.fused_attention: building {_SOURCE.name} failed ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[-1] if str(e).strip() else e!r}). The kernel needs "
            "a C++ compiler (g++ or clang++); set speed.fused_attention=false to use "
            "PyTorch's attention"
        ) from e


class _FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, heads: int, keep: torch.Tensor | None, scale: float):
        ext = load_extension()
        out, lse = ext.attention_forward(qkv, heads, keep, scale)
        ctx.save_for_backward(qkv, lse, keep)
        ctx.heads, ctx.scale = heads, scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        qkv, lse, keep = ctx.saved_tensors
        dqkv = load_extension().attention_backward(qkv, ctx.heads, keep, ctx.scale, lse, grad)
        return dqkv, None, None, None


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
    return _FusedAttention.apply(qkv.contiguous(), heads, keep, scale)


__all__ = [
    "HEAD_SIZES",
    "FusedAttentionBuildError",
    "fused_attention",
    "load_extension",
    "supports",
]
