"""A run's ``cli.log`` holds what the run printed, and output that is not a terminal gets
plain progress lines (every ``callbacks.progress_every_n_steps`` steps and per validation)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from survae.app.run_log import TeeStream

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "experiment=abs_flow_corners",
    "data.train_size=640",
    "data.val_size=64",
    "data.test_size=64",
    "data.batch_size=64",
    "trainer.max_steps=15",
    "callbacks.progress_every_n_steps=5",
    "callbacks.samples.every_n_epochs=0",
    "logger=none",
]


def test_run_log_holds_the_output_and_progress_is_plain_lines(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("SURVAE_RUN_STAMP", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *TINY, f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    progress = [ln for ln in lines if ln.startswith("[survae] epoch ")]
    assert [ln.split(" step ")[1].split()[0] for ln in progress if "validated" not in ln] == [
        "5/15",
        "10/15",
        "15/15",
    ]
    validated = [ln for ln in progress if "validated | val/nll " in ln]
    assert len(validated) == 2  # epoch 1 (10 steps) and the last step, mid-epoch 2
    assert "\r" not in proc.stdout and "\x1b[" not in proc.stdout
    log = (tmp_path / "run" / "cli.log").read_text()
    for line in ("[survae] model: ", validated[-1], "[survae] test/nll = "):
        assert line in log


def test_tee_leaves_live_redraws_and_colours_out_of_the_file():
    screen, log = io.StringIO(), io.StringIO()
    tee = TeeStream(screen, log)
    tee.write("\x1b[2K\x1b[1Aepoch 1 ━━━ 3/10\r")
    tee.write("\x1b[32mdone\x1b[0m\n")
    assert screen.getvalue() == "\x1b[2K\x1b[1Aepoch 1 ━━━ 3/10\r\x1b[32mdone\x1b[0m\n"
    assert log.getvalue() == "done\n"
