"""The cluster suite: sweeps and jobs through a real Slurm (``scripts/slurm_local.sh start``
on this machine, or any cluster ``sinfo`` answers for, with a partition ``debug``).

Every test is skipped, with the reason, when no Slurm answers. Jobs are toy models on CPU with
one CPU and 1 GB each; sweeps are run with ``run.py -m hydra/launcher=slurm`` in a temporary
folder, as a user would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SLURM_CONF = Path(os.environ.get("SURVAE_SLURM_DIR", "/tmp/survae-slurm")) / "slurm.conf"
PARTITION = os.environ.get("SURVAE_SLURM_PARTITION", "debug")


def slurm_env() -> dict[str, str]:
    """The environment of the suite's commands: this checkout's code, the local Slurm's config
    when no other is set, W&B offline, one thread."""
    env = dict(os.environ)
    if not env.get("SLURM_CONF") and LOCAL_SLURM_CONF.is_file():
        env["SLURM_CONF"] = str(LOCAL_SLURM_CONF)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("SURVAE_RUN_STAMP", None)
    return env


@pytest.fixture(scope="session")
def slurm() -> dict[str, str]:
    """The environment for commands on the cluster; skips when no Slurm answers."""
    env = slurm_env()
    hint = "start one with `sudo scripts/slurm_local.sh start`"
    conf = env.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    if not os.path.isfile(conf):
        pytest.skip(f"no Slurm configured ({conf} does not exist); {hint}")
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P %a"], env=env, capture_output=True, text=True, timeout=20
        )
    except FileNotFoundError:
        pytest.skip(f"Slurm is not installed (no sinfo); {hint}")
    except subprocess.TimeoutExpired:
        pytest.skip(f"Slurm does not answer (sinfo timed out); {hint}")
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no Slurm answers (sinfo: {reason}); {hint}")
    partitions = {line.split()[0].rstrip("*") for line in out.stdout.splitlines() if line}
    if PARTITION not in partitions:
        pytest.skip(f"Slurm has no partition {PARTITION!r} (SURVAE_SLURM_PARTITION)")
    return env
