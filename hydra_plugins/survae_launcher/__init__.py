"""survae's Hydra launchers (``hydra/launcher=slurm``, ``hydra/launcher=local``): the submitit
launchers, waiting for every job of a sweep and ending it with a table of their states. Hydra
finds launcher classes only in the ``hydra_plugins`` package; what they do is in
:mod:`survae.app.launcher` (imported when a sweep is launched, not when Hydra scans plugins)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _plugin


class SlurmLauncher(_plugin.SlurmLauncher):
    """One Slurm job per sweep point (see :mod:`survae.app.launcher`)."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        from survae.app.launcher import adjust_params

        adjust_params(self.params)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from survae.app.launcher import launch

        return launch(self, job_overrides, initial_job_idx)


class LocalLauncher(_plugin.LocalLauncher):
    """The sweep's jobs as subprocesses on this machine (see :mod:`survae.app.launcher`)."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from survae.app.launcher import launch

        return launch(self, job_overrides, initial_job_idx)
