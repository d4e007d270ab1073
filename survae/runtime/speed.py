"""Optional speed features, each switched on by configuration and each leaving the
log-likelihood unchanged (up to the stated precision):

* :func:`set_coupling_autocast` — coupling *networks* run under ``torch.autocast`` (bfloat16);
  their outputs are cast back, so every log-determinant and base density stays float32
  (difference in ``log_prob``: bfloat16 rounding of the network outputs, ~0.4 % relative);
* :func:`to_channels_last` — image models keep 4-D weights and their input in the
  channels-last memory format (same values; faster convolutions on GPUs);
* :func:`enable_memory_saving` — runs of consecutive bijections reconstruct their activations
  in the backward pass instead of storing them (:mod:`survae.transforms.memory`), so activation
  memory does not grow with depth (same values and gradients up to reconstruction rounding);
* :func:`compile_model` — ``torch.compile`` of the model's forward (``model(x)`` is
  ``log_prob``), and with it the backward pass of the training step;
* :func:`set_fused_attention` — the point-set transformers' attention runs as one compiled
  CPU kernel (:mod:`survae.nn.fused_attention`; same function up to float rounding; needs a
  C++ compiler).

:func:`apply_speed_options` applies them from a config mapping. :func:`assert_no_host_sync`
checks that a forward pass never synchronises with the host.

The memory-format conversion and the memory-saving blocks are installed as a *forward plan*
(:meth:`survae.flows.Flow.forward_plan`): the same modules regrouped, not re-registered, so
parameters, ``state_dict`` keys, checkpoints and ``copy.deepcopy`` (EMA) are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from survae.config_check import ConfigError
from survae.flows import Flow
from survae.transforms.base import Transform
from survae.transforms.memory import MemorySavingBlock, is_reconstructible

#: the options :func:`apply_speed_options` understands, with their defaults (all off)
SPEED_DEFAULTS: dict[str, Any] = {
    "compile": False,
    "compile_mode": "default",
    "bf16_couplings": False,
    "channels_last": False,
    "memory_saving": False,
    "memory_saving_anchor_every": None,
    "fused_attention": False,
}

_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# --------------------------------------------------------------------------- bf16 couplings
def set_coupling_autocast(model: nn.Module, dtype: torch.dtype | None = torch.bfloat16) -> int:
    """Run every coupling network in ``model`` under ``torch.autocast(dtype=dtype)`` (None:
    full precision again). Returns the number of layers set.

    Applies to every submodule whose class declares a ``net_autocast`` attribute (the affine,
    additive and logistic-mixture couplings). Only the networks change precision; their outputs
    are cast back before the coupling's shift/scale arithmetic, so log-determinants and the base
    log-density are computed in the model's dtype (float32).
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(
            f"set_coupling_autocast: dtype must be a floating dtype or None, got {dtype!r}"
        )
    count = 0
    for m in model.modules():
        if hasattr(type(m), "net_autocast"):
            m.net_autocast = dtype
            count += 1
    return count


# --------------------------------------------------------------------------- forward plans
class ToMemoryFormat(Transform):
    """Identity that returns 4-D inputs in ``memory_format`` (values unchanged).

    Likelihood contribution: 0. Installed at the front of a flow's forward plan by
    :func:`to_channels_last`; it is not a registered layer of any model.
    """

    def __init__(self, memory_format: torch.memory_format = torch.channels_last):
        super().__init__()
        self.memory_format = memory_format

    def forward(self, x, context=None):
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        return x, x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return z


def _flows(model: nn.Module) -> list[Flow]:
    return [m for m in model.modules() if isinstance(m, Flow)]


def _rebuild_plan(flow: Flow) -> None:
    """Install the forward plan that the flow's speed flags ask for (or none)."""
    plan: list[Transform] = []
    if flow.__dict__.get("_speed_channels_last", False):
        plan.append(ToMemoryFormat(torch.channels_last))
    if flow.__dict__.get("_speed_memory_saving", False):
        anchor_every = flow.__dict__.get("_speed_anchor_every")
        run: list[Transform] = []

        def close_run() -> None:
            if any(p.requires_grad for t in run for p in t.parameters()):
                plan.append(MemorySavingBlock(run, anchor_every=anchor_every))
            else:  # nothing to differentiate: grouping would only store the output
                plan.extend(run)
            run.clear()

        for t in flow.transforms:
            if is_reconstructible(t):
                run.append(t)
            else:
                close_run()
                plan.append(t)
        close_run()
    else:
        plan.extend(flow.transforms)
    changed = len(plan) != len(flow.transforms) or any(
        a is not b for a, b in zip(plan, flow.transforms)
    )
    # a plain tuple attribute: not registered, so modules and state_dict keys stay as they are
    flow.__dict__["_forward_plan"] = tuple(plan) if changed else None


def to_channels_last(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Store 4-D parameters and buffers channels-last and convert every flow's 4-D input to
    channels-last at the start of ``log_prob`` (``enabled=False`` undoes it). Values are
    unchanged; GPU convolutions get faster. Returns ``model``."""
    fmt = torch.channels_last if enabled else torch.contiguous_format
    model.to(memory_format=fmt)
    for flow in _flows(model):
        flow.__dict__["_speed_channels_last"] = enabled
        _rebuild_plan(flow)
    return model


def enable_memory_saving(
    model: nn.Module, enabled: bool = True, anchor_every: int | None = None
) -> nn.Module:
    """Make every :class:`~survae.flows.Flow` in ``model`` (including flows nested in layers,
    e.g. Flow++'s dequantizer) run each maximal run of consecutive reconstructible transforms
    (:func:`~survae.transforms.memory.is_reconstructible`: bijections and Sequential stacks of
    them, without batch statistics) as one
    :class:`~survae.transforms.memory.MemorySavingBlock`. Surjections and stochastic layers
    stay as they are and split the runs. ``anchor_every`` is passed to the blocks (keep every
    ``k``-th layer's input to bound float32 reconstruction drift). ``enabled=False`` undoes
    it. Returns ``model``.

    Only the training forward pass (``log_prob``/``transform_to_latent``) changes; modules,
    parameters, ``state_dict`` keys, sampling and ``inverse`` are untouched.
    """
    for flow in _flows(model):
        flow.__dict__["_speed_memory_saving"] = enabled
        flow.__dict__["_speed_anchor_every"] = anchor_every
        _rebuild_plan(flow)
    return model


def memory_saving_blocks(model: nn.Module) -> list[MemorySavingBlock]:
    """The blocks installed by :func:`enable_memory_saving` (for inspection and tests)."""
    return [
        t for flow in _flows(model) for t in flow.forward_plan() if isinstance(t, MemorySavingBlock)
    ]


# --------------------------------------------------------------------------- compile
def compile_model(
    model: nn.Module,
    mode: str | None = "default",
    backend: str = "inductor",
    fullgraph: bool = False,
    dynamic: bool | None = None,
) -> nn.Module:
    """Compile ``model``'s ``__call__`` with ``torch.compile`` (``nn.Module.compile``); for a
    :class:`~survae.flows.Flow`, ``model(x)`` is ``model.log_prob(x)``, so the training step
    must call ``model(batch)`` to use the compiled graph (and its compiled backward).

    The compiled wrapper is dropped by ``copy.deepcopy``/pickling (so an EMA copy runs eagerly
    and checkpoints are unaffected). ``mode`` applies to the inductor backend only.
    Memory-saving blocks are graph breaks (their backward calls autograd itself). Returns
    ``model``.
    """
    if mode is not None and mode not in _COMPILE_MODES:
        raise ValueError(
            f"compile_model: unknown mode {mode!r}; valid: {', '.join(_COMPILE_MODES)}"
        )
    kwargs: dict[str, Any] = {"backend": backend, "fullgraph": fullgraph, "dynamic": dynamic}
    if backend == "inductor" and mode is not None:
        kwargs["mode"] = mode
    model.compile(**kwargs)
    return model


# --------------------------------------------------------------------------- fused attention
def set_fused_attention(model: nn.Module, enabled: bool = True) -> int:
    """Switch the fused CPU attention kernel on (or off) in every
    :class:`~survae.nn.transformer.SelfAttention` of ``model``; returns how many. Switching it
    on builds the kernel now (once per machine, then cached), so that a missing compiler stops
    the run before training with :class:`~survae.nn.fused_attention.FusedAttentionBuildError`
    rather than at the first step."""
    from survae.nn.fused_attention import load_extension
    from survae.nn.transformer import SelfAttention

    layers = [m for m in model.modules() if isinstance(m, SelfAttention)]
    if enabled and layers:
        load_extension()
    for layer in layers:
        layer.fused = enabled
    return len(layers)


# --------------------------------------------------------------------------- options
def validate_speed_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``speed`` options with their defaults filled in; a :class:`ConfigError` naming the
    key and its valid values for an unknown key or a bad value (checked before anything is
    built, by :func:`survae.training.validation.validate_run_config`, and again here)."""
    opts = dict(SPEED_DEFAULTS)
    given = dict(options or {})
    unknown = sorted(set(given) - set(SPEED_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"speed: unknown option(s) {unknown}; valid: {', '.join(sorted(SPEED_DEFAULTS))}"
        )
    opts.update(given)
    for key in ("compile", "bf16_couplings", "channels_last", "memory_saving", "fused_attention"):
        if not isinstance(opts[key], bool):
            raise ConfigError(f"speed.{key}: must be true or false, got {opts[key]!r}")
    anchor = opts["memory_saving_anchor_every"]
    if anchor is not None and (
        isinstance(anchor, bool) or not isinstance(anchor, int) or anchor < 1
    ):
        raise ConfigError(
            f"speed.memory_saving_anchor_every: must be a positive integer or null, got {anchor!r}"
        )
    if opts["compile_mode"] not in _COMPILE_MODES:
        raise ConfigError(
            f"speed.compile_mode: must be one of {', '.join(_COMPILE_MODES)}, "
            f"got {opts['compile_mode']!r}"
        )
    return opts


def apply_speed_options(model: nn.Module, options: Mapping[str, Any] | None) -> nn.Module:
    """Apply the speed options of a config mapping to ``model`` and return it.

    Keys (all optional, defaults in :data:`SPEED_DEFAULTS`): ``bf16_couplings`` (bool),
    ``channels_last`` (bool), ``memory_saving`` (bool), ``memory_saving_anchor_every``
    (positive int or None), ``compile`` (bool), ``compile_mode`` (``default``,
    ``reduce-overhead``, ``max-autotune``, ``max-autotune-no-cudagraphs``),
    ``fused_attention`` (bool). Call it after building the model and before creating
    optimizers or EMA copies.
    """
    opts = validate_speed_options(options)
    anchor = opts["memory_saving_anchor_every"]
    if opts["fused_attention"]:
        set_fused_attention(model, True)
    if opts["bf16_couplings"]:
        set_coupling_autocast(model, torch.bfloat16)
    if opts["channels_last"]:
        to_channels_last(model)
    if opts["memory_saving"]:
        enable_memory_saving(model, anchor_every=anchor)
    if opts["compile"]:
        compile_model(model, mode=opts["compile_mode"])
    return model


# --------------------------------------------------------------------------- checks
class HostSyncError(RuntimeError):
    """A forward pass reads a device value on the host or has a data-dependent shape."""


#: tensor methods that copy values to the host
_HOST_METHODS = frozenset({"item", "tolist", "cpu", "numpy"})


def _host_sync_nodes(gm: torch.fx.GraphModule) -> list[str]:
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

    found = []
    for node in gm.graph.nodes:
        value = node.meta.get("example_value")
        if node.op == "call_method" and node.target in _HOST_METHODS:
            found.append(node.format_node())
        elif value is not None and free_unbacked_symbols(value):
            # a value known only after reading device memory: .item(), nonzero, masks
            found.append(node.format_node())
    return found


def assert_no_host_sync(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` and fail if it synchronises with the host.

    With CUDA tensors among ``args`` it runs under ``torch.cuda.set_sync_debug_mode("error")``
    (any ``.item()``, ``nonzero``, boolean-mask indexing or device-to-host copy raises). On the
    CPU it compiles ``fn`` with ``fullgraph=True``: a Python branch on a tensor value is a graph
    break and raises, and the captured graph is inspected for host reads (``.item()``,
    ``.tolist()``, ``.cpu()``) and data-dependent shapes (``nonzero``, boolean-mask indexing),
    raising :class:`HostSyncError` with the offending operations. Returns ``fn``'s result.
    """
    on_cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
    if on_cuda:
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            return fn(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(previous)

    def checking_backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Callable[..., Any]:
        found = _host_sync_nodes(gm)
        if found:
            raise HostSyncError(
                "the forward pass synchronises with the host at:\n  " + "\n  ".join(found)
            )
        return gm.forward

    torch._dynamo.reset()  # fresh caches: no recompilation limit carried over from elsewhere
    try:
        return torch.compile(fn, fullgraph=True, backend=checking_backend)(*args, **kwargs)
    finally:
        torch._dynamo.reset()


__all__ = [
    "SPEED_DEFAULTS",
    "HostSyncError",
    "ToMemoryFormat",
    "apply_speed_options",
    "assert_no_host_sync",
    "compile_model",
    "set_fused_attention",
    "enable_memory_saving",
    "memory_saving_blocks",
    "set_coupling_autocast",
    "to_channels_last",
]
