"""Optional speed features, each switched on by configuration and each leaving the
log-likelihood unchanged (up to the stated precision):

* :func:`set_coupling_autocast` — coupling *networks* run under ``torch.autocast`` (bfloat16);
  their outputs are cast back, so every log-determinant and base density stays float32
  (difference in ``log_prob``: bfloat16 rounding of the network outputs, ~0.4 % relative);
* :func:`networks_channels_last` — the convolutional networks of image models (coupling,
  context and decoder networks) run channels-last: weights stored so, inputs converted on the
  way in and outputs back on the way out (same values; oneDNN and cuDNN convolutions without
  per-call reorders); :func:`to_channels_last` converts a whole model instead;
* :func:`enable_memory_saving` — runs of consecutive bijections reconstruct their activations
  in the backward pass instead of storing them (:mod:`survae.transforms.memory`), so activation
  memory does not grow with depth (same values and gradients up to reconstruction rounding);
* :func:`compile_model` — ``torch.compile`` of the model's forward (``model(x)`` is
  ``log_prob``), and with it the backward pass of the training step;
* :func:`set_fused_attention` — the point-set transformers' attention runs as one compiled
  CPU kernel (:mod:`survae.nn.fused_attention`; same function up to float rounding; needs a
  C++ compiler).

``speed.preset`` picks them per model when a switch is left ``null``: ``auto`` (the run
configs' default, :func:`preset_options`) turns on channels-last for convolutional models, the
fused attention kernel for point-set transformers where it builds (else PyTorch's attention,
with one log line) and, for toy models of runs with at least :data:`COMPILE_MIN_STEPS`
training steps, ``torch.compile`` (:func:`compile_if_it_pays`); precision stays float32.
``off`` is the bare model. A switch set to ``true``/``false`` wins over the preset.

:func:`apply_speed_options` applies them from a config mapping. :func:`assert_no_host_sync`
checks that a forward pass never synchronises with the host.

The memory-format conversion and the memory-saving blocks are installed as a *forward plan*
(:meth:`survae.flows.Flow.forward_plan`): the same modules regrouped, not re-registered, so
parameters, ``state_dict`` keys, checkpoints and ``copy.deepcopy`` (EMA) are unaffected.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from survae.config_check import ConfigError
from survae.flows import Flow
from survae.runtime.host_sync import HostSyncError, assert_no_host_sync
from survae.transforms.base import Transform
from survae.transforms.memory import MemorySavingBlock, is_reconstructible

#: the options :func:`apply_speed_options` understands, with their defaults: preset ``off``
#: (the bare model); ``None`` switches are decided by the preset
SPEED_DEFAULTS: dict[str, Any] = {
    "preset": "off",
    "compile": None,
    "compile_mode": "default",
    "bf16_couplings": False,
    "channels_last": None,
    "memory_saving": False,
    "memory_saving_anchor_every": None,
    "fused_attention": None,
}

PRESETS = ("auto", "off")

#: the switches a preset decides when they are left ``None``
PRESET_SWITCHES = ("channels_last", "fused_attention", "compile")

#: ``auto`` compiles a toy model's training step for runs of at least this many steps: the
#: compiled step saves ~0.9 ms of a 2.8 ms AbsFlow step (1 thread), against 2–3 s of
#: compilation with a warm inductor cache and ~9 s with a cold one (BENCHMARKS.md)
COMPILE_MIN_STEPS = 10_000

#: the data kinds whose steps are per-operation overhead that a compiled graph removes
COMPILE_KINDS = ("toy",)

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


def _to_format(value: Any, fmt: torch.memory_format) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=fmt)
    if isinstance(value, tuple):
        return tuple(_to_format(v, fmt) for v in value)
    return value


def _networks(model: nn.Module) -> list[nn.Module]:
    """The convolutional networks of ``model``'s layers: the modules with a 2-D convolution
    that are direct children of a transform or distribution and not themselves one (coupling
    networks, context networks, decoders); containers of layers are looked into."""
    from survae.distributions.base import Distribution

    layer_types = (Transform, Distribution, Flow, nn.ModuleList, nn.ModuleDict)
    found: list[nn.Module] = []

    def visit(owner: nn.Module) -> None:
        for child in owner.children():
            if isinstance(child, layer_types):
                visit(child)
            elif any(isinstance(m, nn.Conv2d) for m in child.modules()):
                found.append(child)

    visit(model)
    return found


def networks_channels_last(model: nn.Module, enabled: bool = True) -> int:
    """Run the convolutional networks of ``model`` (:func:`_networks`) channels-last: their
    4-D weights are stored channels-last, and their 4-D inputs are converted on the way in and
    their outputs back to contiguous on the way out, so the flow's own layers see the tensors
    they always saw. oneDNN's convolutions take channels-last without reordering each call's
    tensors. Same values (up to the convolutions' summation order); parameters and
    ``state_dict`` keys unchanged. ``enabled=False`` undoes it. Returns how many networks."""
    fmt = torch.channels_last if enabled else torch.contiguous_format
    nets = _networks(model)
    for net in nets:
        for handle in net.__dict__.pop("_speed_channels_last_hooks", ()):
            handle.remove()
        net.to(memory_format=fmt)
        if enabled:
            net.__dict__["_speed_channels_last_hooks"] = (
                net.register_forward_pre_hook(
                    lambda m, args: _to_format(args, torch.channels_last)
                ),
                net.register_forward_hook(
                    lambda m, args, out: _to_format(out, torch.contiguous_format)
                ),
            )
    return len(nets)


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


# --------------------------------------------------------------------------- preset
def _log(message: str) -> None:
    print(f"[survae] speed: {message}", flush=True)


def has_compiler() -> bool:
    """Whether a C++ compiler is on the path (torch.compile's CPU code and the fused
    attention kernel are built with it)."""
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def _fused_attention_builds(model: nn.Module) -> bool:
    """Whether ``model`` has self-attention and the fused kernel builds here; logs the reason
    when a model with attention stays on PyTorch's path."""
    from survae.nn.transformer import SelfAttention

    if not any(isinstance(m, SelfAttention) for m in model.modules()):
        return False
    from survae.nn.fused_attention import FusedAttentionBuildError, load_extension

    try:
        load_extension()
    except FusedAttentionBuildError as err:
        _log(f"fused attention unavailable, PyTorch's attention is used ({err})")
        return False
    return True


def preset_options(
    model: nn.Module, options: Mapping[str, Any], kind: str | None = None
) -> dict[str, Any]:
    """``options`` with every ``None`` switch decided by ``options["preset"]``.

    ``off``: all off. ``auto``: ``channels_last`` for models with convolutional networks
    (:func:`networks_channels_last`; CPU and GPU: the convolution libraries' native layout,
    no reorders per call), ``fused_attention`` for
    models with self-attention where the kernel builds, and ``compile`` left ``None`` for
    toy models (``kind``) when a C++ compiler is present: :func:`compile_if_it_pays` decides
    it once the run's length is known. Precision is never changed.
    """
    opts = dict(options)
    auto = opts.get("preset", "off") == "auto"
    if opts.get("channels_last") is None:
        opts["channels_last"] = auto and bool(_networks(model))
    if opts.get("fused_attention") is None:
        opts["fused_attention"] = auto and _fused_attention_builds(model)
    if opts.get("compile") is None and not (auto and kind in COMPILE_KINDS and has_compiler()):
        opts["compile"] = False
    return opts


def compile_if_it_pays(model: nn.Module, planned_steps: float) -> bool:
    """Compile ``model`` now when :func:`apply_speed_options` left the decision to the run's
    length (preset ``auto``, a toy model, ``compile`` unset) and the run has at least
    :data:`COMPILE_MIN_STEPS` training steps; returns whether it compiled. Call before the
    first training step (the compiled wrapper changes no parameter or state-dict key)."""
    mode = model.__dict__.pop("_speed_compile_deferred", None)
    if mode is None:
        return False
    if not planned_steps >= COMPILE_MIN_STEPS:  # also False for an unknown (nan) length
        if "_speed_options" in model.__dict__:
            model.__dict__["_speed_options"]["compile"] = False
        return False
    _log(f"torch.compile for {int(planned_steps):,} steps (>= {COMPILE_MIN_STEPS:,})")
    compile_model(model, mode=mode)
    if "_speed_options" in model.__dict__:
        model.__dict__["_speed_options"]["compile"] = True
    return True


# --------------------------------------------------------------------------- options
def validate_speed_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``speed`` options with their defaults filled in; a :class:`ConfigError` naming the
    key and its valid values for an unknown key or a bad value (checked before anything is
    built, by :func:`survae.training.validation.validate_run_config`, and again here). The
    preset's switches may stay ``None`` (the preset decides them: :func:`preset_options`)."""
    opts = dict(SPEED_DEFAULTS)
    given = dict(options or {})
    unknown = sorted(set(given) - set(SPEED_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"speed: unknown option(s) {unknown}; valid: {', '.join(sorted(SPEED_DEFAULTS))}"
        )
    opts.update(given)
    if opts["preset"] not in PRESETS:
        raise ConfigError(
            f"speed.preset: must be one of {', '.join(PRESETS)}, got {opts['preset']!r}"
        )
    for key in ("compile", "bf16_couplings", "channels_last", "memory_saving", "fused_attention"):
        value = opts[key]
        if not (isinstance(value, bool) or (value is None and key in PRESET_SWITCHES)):
            null = " (or null: the preset decides)" if key in PRESET_SWITCHES else ""
            raise ConfigError(f"speed.{key}: must be true or false{null}, got {value!r}")
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


def resolve_speed_options(
    model: nn.Module, options: Mapping[str, Any] | None, kind: str | None = None
) -> dict[str, Any]:
    """The validated options of a config mapping (:func:`validate_speed_options`) with the
    preset's choices filled in (:func:`preset_options`); ``compile`` may stay ``None``
    (decided by :func:`compile_if_it_pays`)."""
    return preset_options(model, validate_speed_options(options), kind)


def apply_speed_options(
    model: nn.Module, options: Mapping[str, Any] | None, kind: str | None = None
) -> nn.Module:
    """Apply the speed options of a config mapping to ``model`` and return it.

    Keys (all optional, defaults in :data:`SPEED_DEFAULTS`): ``preset`` (``auto`` or
    ``off``, which decides the switches left ``None``: :func:`preset_options`),
    ``bf16_couplings`` (bool), ``channels_last`` (bool or None:
    :func:`networks_channels_last`), ``memory_saving`` (bool),
    ``memory_saving_anchor_every`` (positive int or None), ``compile`` (bool or None),
    ``compile_mode`` (``default``, ``reduce-overhead``, ``max-autotune``,
    ``max-autotune-no-cudagraphs``), ``fused_attention`` (bool or None). ``kind`` is the data
    kind (``toy``, ``image``, ...), which the preset's compile rule reads. Call it after
    building the model and before creating optimizers or EMA copies; with the compile
    decision left to the run's length, call :func:`compile_if_it_pays` before training.
    """
    opts = resolve_speed_options(model, options, kind)
    model.__dict__["_speed_options"] = opts  # what was applied (not a module attribute)
    if opts["fused_attention"]:
        set_fused_attention(model, True)
    if opts["bf16_couplings"]:
        set_coupling_autocast(model, torch.bfloat16)
    if opts["channels_last"]:
        networks_channels_last(model)
    if opts["memory_saving"]:
        enable_memory_saving(model, anchor_every=opts["memory_saving_anchor_every"])
    if opts["compile"]:
        compile_model(model, mode=opts["compile_mode"])
    elif opts["compile"] is None:  # the preset compiles once the run's length is known
        model.__dict__["_speed_compile_deferred"] = opts["compile_mode"]
    return model


__all__ = [
    "COMPILE_MIN_STEPS",
    "PRESETS",
    "SPEED_DEFAULTS",
    "HostSyncError",
    "ToMemoryFormat",
    "apply_speed_options",
    "assert_no_host_sync",
    "compile_if_it_pays",
    "compile_model",
    "set_fused_attention",
    "enable_memory_saving",
    "memory_saving_blocks",
    "networks_channels_last",
    "preset_options",
    "resolve_speed_options",
    "set_coupling_autocast",
    "to_channels_last",
    "validate_speed_options",
]
