"""A check that a forward pass never synchronises with the host (no ``.item()``, no
data-dependent shapes): what keeps a compiled or CUDA-graphed step free of stalls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


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


__all__ = ["HostSyncError", "assert_no_host_sync"]
