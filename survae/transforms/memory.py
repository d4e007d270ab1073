"""Memory-saving backpropagation through invertible layers (Gomez et al. 2017, "The Reversible
Residual Network"; Jacobsen et al. 2018, "i-RevNet"; Behrmann et al. 2019, "Invertible
Residual Networks").

Plain autograd keeps every intermediate activation of a stack of layers (including all the
hidden activations of every coupling network) until the backward pass, so activation memory
grows linearly with depth. A bijection's input can be recomputed from its output, so a run of
bijections only needs to keep its *final* output:

* forward: the layers run under ``torch.no_grad()``; the block returns ``(z, Σ ldj)`` and saves
  only ``z`` (and the context, which does not grow with depth);
* backward: walking the layers from last to first, the input of layer ``k`` is reconstructed
  from its output with ``inverse``, the layer is re-run with gradients on that input, and
  ``torch.autograd.grad`` gives the gradients w.r.t. its input (the gradient flowing into layer
  ``k − 1``), its parameters and the context. Only one layer's graph exists at a time.

The reconstruction is chained through the whole run inside one ``torch.autograd.Function``, so
no intermediate tensor is ever stored or freed by hand (RevTorch/MemCNN instead free each
block's input storage with ``resize_(0)`` and refill it in backward, which breaks when anything
else holds a reference to that input). The price is one extra forward and one inverse per
layer in the backward pass, and a reconstruction error that grows with the number of layers:
the gradients are the exact gradients at inputs perturbed by it (about 1e-7 relative per
float32 layer, 1e-16 in float64). Where a model's gradient is very sensitive to its input
(deep untrained stacks can be), ``anchor_every=k`` additionally keeps the input of every
``k``-th layer, bounding the drift at the cost of ``n_layers / k`` stored tensors.

Requirements on the wrapped layers (checked by :func:`is_reconstructible`): bijections (or
:class:`~survae.transforms.base.Sequential` stacks of them) whose forward is a deterministic
function of input, parameters and context. Layers with batch statistics
(:class:`~survae.transforms.bijections.batchnorm.BatchNormBijection`, ``nn.BatchNorm*`` inside
networks) are refused: their output depends on the batch *and* each call updates running
averages. Layers can refuse explicitly with the class attribute ``memory_saving_safe = False``.
Dropout inside coupling networks is handled by replaying the random-number state: the global
RNG state is recorded before each layer in the forward pass and restored for both the inverse
and the re-run (a coupling calls its network once, on the same conditioning input, in both
directions, so the dropout masks agree).

Data-dependent initialisation (ActNorm, Glow's network actnorm, Flow++'s): while any
submodule in training mode still reports ``_initialized``/``_is_initialized`` False, the block
first runs the layers once without gradient (which performs the initialisation on exactly the
data a plain forward pass would see, with the RNG state rewound afterwards), then proceeds.
Parameters must not be modified in place between the forward and the backward pass; the
backward pass checks their version counters and raises if they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from survae.registry import build_from_spec, register
from survae.transforms.base import Bijection, Sequential, Transform
from survae.transforms.bijections.batchnorm import BatchNormBijection

#: attribute names by which data-dependently initialised modules report their state
_INIT_FLAGS = ("_initialized", "_is_initialized")

_RNGState = tuple[torch.Tensor, torch.Tensor | None]


def _batch_statistics_module(module: nn.Module) -> nn.Module | None:
    for m in module.modules():
        if isinstance(m, (BatchNormBijection, nn.modules.batchnorm._BatchNorm)):
            return m
    return None


def why_not_reconstructible(t: nn.Module) -> str | None:
    """None when ``t`` can be wrapped in a :class:`MemorySavingBlock`, else the reason."""
    if not getattr(t, "memory_saving_safe", True):
        return f"{type(t).__name__} sets memory_saving_safe = False"
    if isinstance(t, (Sequential, MemorySavingBlock)):
        if len(t.transforms) == 0:
            return "an empty Sequential"
        for child in t.transforms:
            reason = why_not_reconstructible(child)
            if reason is not None:
                return reason
        return None
    if not isinstance(t, Bijection):
        return (
            f"{type(t).__name__} is not a bijection (its input cannot be recomputed from its "
            "output)"
        )
    bn = _batch_statistics_module(t)
    if bn is not None:
        return (
            f"{type(t).__name__} contains {type(bn).__name__}, whose output depends on batch "
            "statistics and whose running averages every call updates"
        )
    return None


def is_reconstructible(t: nn.Module) -> bool:
    """Whether ``t``'s input can be recomputed from its output and ``t`` re-run identically,
    so that it may sit in a :class:`MemorySavingBlock` (see the module docstring)."""
    return why_not_reconstructible(t) is None


def _flatten(transforms: Iterable[nn.Module]) -> list[Bijection]:
    leaves: list[Bijection] = []
    for t in transforms:
        if isinstance(t, (Sequential, MemorySavingBlock)):
            leaves.extend(_flatten(t.transforms))
        else:
            leaves.append(t)  # type: ignore[arg-type]
    return leaves


def _capture_rng(device: torch.device) -> _RNGState:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _restore_rng(state: _RNGState, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    try:
        return (
            device_type,
            torch.is_autocast_enabled(device_type),
            torch.get_autocast_dtype(device_type),
        )
    except RuntimeError:  # a device type without autocast support
        return "cpu", False, torch.bfloat16


class _ReconstructingFunction(torch.autograd.Function):
    """``(z, Σ ldj)`` of a run of bijections, saving only ``z`` (see the module docstring).

    Inputs: the block, ``x``, ``context`` (or None), then the parameters that need gradients
    (passed explicitly so that autograd routes their gradients through this node).
    """

    @staticmethod
    def forward(ctx, block: MemorySavingBlock, x, context, *params):  # type: ignore[override]
        leaves = block.leaves
        every = block.anchor_every
        rng: list[_RNGState] | None = [] if block._replays_rng() else None
        h, total = x, None
        anchors: list[torch.Tensor] = []
        with torch.no_grad():
            for i, leaf in enumerate(leaves):
                if rng is not None:
                    rng.append(_capture_rng(x.device))
                if every and i > 0 and i % every == 0:
                    anchors.append(h)  # the input of leaf i, kept to stop drift
                h, ldj = leaf(h, context)
                total = ldj if total is None else total + ldj
        if h is x or h._is_view():  # an output must own its storage
            h = h.clone()
        if total._is_view():
            total = total.clone()
        ctx.block = block
        ctx.rng = rng
        ctx.autocast = _autocast_state(x.device.type)
        ctx.params = params
        ctx.versions = [p._version for p in params]
        ctx.save_for_backward(h, context, *anchors)
        return h, total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z, grad_ldj):  # type: ignore[override]
        z, context, *anchors = ctx.saved_tensors
        every = ctx.block.anchor_every
        params: tuple[torch.Tensor, ...] = ctx.params
        for p, version in zip(params, ctx.versions):
            if p._version != version:
                raise RuntimeError(
                    "MemorySavingBlock: a parameter was modified in place between the forward "
                    "and the backward pass, so the layers' inputs cannot be reconstructed; "
                    "call backward before the optimizer step"
                )
        index = {id(p): i for i, p in enumerate(params)}
        param_grads: list[torch.Tensor | None] = [None] * len(params)
        need_x, need_ctx = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        ctx_grad: torch.Tensor | None = None
        device = z.device
        device_type, autocast_on, autocast_dtype = ctx.autocast
        rng: list[_RNGState] | None = ctx.rng
        saved_rng = _capture_rng(device) if rng is not None else None
        leaves = ctx.block.leaves
        y, grad_y = z.detach(), grad_z
        try:
            for k in range(len(leaves) - 1, -1, -1):
                leaf = leaves[k]
                if every and k > 0 and k % every == 0:
                    x_k = anchors[k // every - 1]
                else:
                    with (
                        torch.no_grad(),
                        torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_on),
                    ):
                        if rng is not None:
                            _restore_rng(rng[k], device)
                        x_k = leaf.inverse(y, context)
                want_x = k > 0 or need_x
                with (
                    torch.enable_grad(),
                    torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_on),
                ):
                    if rng is not None:
                        _restore_rng(rng[k], device)
                    x_in = x_k.detach().requires_grad_(want_x)
                    c_in = context
                    if need_ctx:
                        c_in = context.detach().requires_grad_(True)
                    out, ldj = leaf(x_in, c_in)
                leaf_params = [p for p in leaf.parameters() if id(p) in index]
                inputs = [x_in] if want_x else []
                if need_ctx:
                    inputs.append(c_in)
                inputs.extend(leaf_params)
                outputs, grad_outputs = [], []
                for o, g in ((out, grad_y), (ldj, grad_ldj)):
                    if o.requires_grad and g is not None:
                        outputs.append(o)
                        grad_outputs.append(g)
                grads: Sequence[torch.Tensor | None] = [None] * len(inputs)
                if outputs and inputs:
                    grads = torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True)
                pos = 0
                if want_x:
                    grad_y = grads[0] if grads[0] is not None else torch.zeros_like(x_k)
                    pos = 1
                if need_ctx:
                    g = grads[pos]
                    if g is not None:
                        ctx_grad = g if ctx_grad is None else ctx_grad + g
                    pos += 1
                for p, g in zip(leaf_params, grads[pos:]):
                    if g is not None:
                        i = index[id(p)]
                        param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
                y = x_k
        finally:
            if saved_rng is not None:
                _restore_rng(saved_rng, device)
        return (None, grad_y if need_x else None, ctx_grad, *param_grads)


@torch.compiler.disable
def _apply_reconstructing(
    block: MemorySavingBlock,
    x: torch.Tensor,
    context: torch.Tensor | None,
    params: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    # Kept out of compiled graphs: the backward pass calls autograd itself.
    return _ReconstructingFunction.apply(block, x, context, *params)


@register("layer", "invertible_block")
class MemorySavingBlock(Bijection):
    """A run of bijections whose backward pass reconstructs activations instead of storing them
    (RevNet/i-RevNet-style memory saving; see the module docstring).

    Likelihood contribution: the sum of the wrapped layers' ``log|det dz/dx|``; values and
    gradients are those of the plain stack (up to the rounding of the reconstruction). Memory
    for activations saved for backward: the block's output only, whatever the depth.

    ``layers`` are transforms or layer specs (``{"name": ..., **kwargs}``); each must be
    reconstructible (:func:`is_reconstructible`), Sequential stacks are flattened.
    ``preserve_rng_state`` replays the random state for layers whose networks use dropout.
    ``anchor_every = k`` also keeps the input of layers ``k, 2k, ...`` (flattened order), so
    reconstruction error cannot accumulate over more than ``k`` layers (memory: about
    ``1 + n_layers / k`` outputs; default None, the output only).
    The reconstructing path is used when gradients are needed (under ``torch.compile`` it is a
    graph break and runs eagerly); otherwise the layers simply run in order.
    """

    def __init__(
        self,
        layers: Sequence[Transform | Mapping[str, Any]],
        preserve_rng_state: bool = True,
        anchor_every: int | None = None,
    ):
        super().__init__()
        if anchor_every is not None and (not isinstance(anchor_every, int) or anchor_every < 1):
            raise ValueError(
                f"MemorySavingBlock: anchor_every must be a positive int or None, got "
                f"{anchor_every!r}"
            )
        built = [
            t if isinstance(t, nn.Module) else build_from_spec("layer", t)  # type: ignore[arg-type]
            for t in layers
        ]
        if not built:
            raise ValueError("MemorySavingBlock: needs at least one layer")
        for i, t in enumerate(built):
            reason = why_not_reconstructible(t)
            if reason is not None:
                raise ValueError(f"MemorySavingBlock: layer {i} cannot be wrapped: {reason}")
        self.transforms = nn.ModuleList(built)
        self.preserve_rng_state = preserve_rng_state
        self.anchor_every = anchor_every
        #: the wrapped layers with Sequential stacks flattened, in forward order (a plain list:
        #: the modules are registered once, through ``transforms``)
        self.leaves: list[Bijection] = _flatten(built)
        self._init_done = False

    def _replays_rng(self) -> bool:
        # Only training-mode passes draw random numbers (dropout). The layers' own flags are
        # read: a block installed by ``enable_memory_saving`` is not itself a registered
        # submodule, so its ``training`` flag does not follow the model's.
        return self.preserve_rng_state and any(leaf.training for leaf in self.leaves)

    def _data_init_pending(self) -> bool:
        if self._init_done:
            return False
        waiting = [
            m
            for m in self.transforms.modules()
            if any(getattr(m, flag, True) is False for flag in _INIT_FLAGS)
        ]
        if not waiting:
            self._init_done = True  # once initialised, modules stay initialised
        return any(m.training for m in waiting)

    def _run_plain(
        self, x: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        total = None
        for leaf in self.leaves:
            x, ldj = leaf(x, context)
            total = ldj if total is None else total + ldj
        assert total is not None
        return x, total

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.is_grad_enabled():
            return self._run_plain(x, context)
        params = [p for p in self.transforms.parameters() if p.requires_grad]
        ctx_grad = context is not None and context.requires_grad
        if not (params or x.requires_grad or ctx_grad):
            return self._run_plain(x, context)
        if self._data_init_pending():
            # initialise on the data a plain pass would see, then rewind the random state
            state = _capture_rng(x.device)
            with torch.no_grad():
                self._run_plain(x, context)
            _restore_rng(state, x.device)
        return _apply_reconstructing(self, x, context, params)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        total = None
        for leaf in reversed(self.leaves):
            z, ldj = leaf.inverse_with_ldj(z, context)
            total = ldj if total is None else total + ldj
        assert total is not None
        return z, total

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for leaf in reversed(self.leaves):
            z = leaf.inverse(z, context)
        return z

    def extra_repr(self) -> str:
        s = f"num_layers={len(self.leaves)}"
        return s + (f", anchor_every={self.anchor_every}" if self.anchor_every else "")


InvertibleCheckpoint = MemorySavingBlock

__all__ = [
    "InvertibleCheckpoint",
    "MemorySavingBlock",
    "is_reconstructible",
    "why_not_reconstructible",
]
