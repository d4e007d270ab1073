"""Make ``import torchvision`` work when its compiled extension cannot load.

Some torchvision wheels are built against a different torch build (e.g. a CUDA wheel on a
CPU-only torch). Their ``_C`` extension then fails to load and importing torchvision raises
``RuntimeError: operator torchvision::nms does not exist`` while registering fake kernels for
the missing compiled operators. Since torchmetrics and pytorch-lightning import torchvision,
this would break the whole framework. survae uses only torchvision's pure-Python parts
(datasets, transforms, ``make_grid``/``save_image``), so when — and only when — the extension
cannot load, the two registration modules are replaced by empty stand-ins. Compiled operators
(nms, roi_align, io decoding) stay unavailable in that case.
"""

from __future__ import annotations

import importlib.util
import sys
import types

_STUBBED = ("torchvision._meta_registrations", "torchvision._autograd_registrations")

#: set to True by :func:`install` when the stand-ins were needed
active: bool = False


def extension_loads() -> bool:
    """Whether torchvision's compiled extension loads against the installed torch."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision absent: nothing to patch
    import glob
    import os

    import torch

    for location in spec.submodule_search_locations:
        for lib in glob.glob(os.path.join(location, "_C*.so")) + glob.glob(
            os.path.join(location, "_C*.pyd")
        ):
            try:
                torch.ops.load_library(lib)
                return True
            except (OSError, RuntimeError):
                return False
    return False


def install() -> bool:
    """Install the stand-ins if needed (before torchvision's first import). Returns ``active``."""
    global active
    if "torchvision" in sys.modules or active:
        return active
    if extension_loads():
        return False
    for name in _STUBBED:
        sys.modules.setdefault(name, types.ModuleType(name))
    active = True
    return True
