"""Runtime settings of a process, not part of any model: thread counts (:mod:`.threads`), the
glibc heap policy (:mod:`.heap`), device checks (:mod:`.devices`), the speed options applied to
a built model (:mod:`.speed`, with its host-synchronisation check :mod:`.host_sync`) and the
torchvision import shim (:mod:`.torchvision_compat`).

Kept free of imports so that the shim can be installed before torchvision is first imported.
"""
