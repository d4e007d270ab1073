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
``$TORCH_EXTENSIONS_DIR``, per CPU instruction set and torch version), with OpenMP where torch
has it, so that the (cloud, head) pairs are split over torch's intra-op threads. Its entry
points are registered operators (``survae::fused_attention`` and
``survae::fused_attention_backward``), so ``torch.compile`` keeps them in its graphs and
``torch.utils.flop_counter`` counts them. On a GPU, PyTorch's fused
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


def _build_tag() -> str:
    """A short tag of this CPU's instruction set and the torch and Python versions, so that a
    build directory shared between machines (a cluster's home directory) never hands one CPU
    another's ``-march=native`` code, nor a new torch a binary built against an old one."""
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


@functools.cache
def load_extension() -> ModuleType:
    """Build (once per CPU type and torch version, then cached) and import the kernel. Raises
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
            name=f"survae_attention_{_build_tag()}",
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
    "fused_attention",
    "load_extension",
    "supports",
]
