"""``run.py`` as a user runs it: a fast_dev_run, the experiment list, a submitit sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.train_size=256", "data.val_size=64", "data.test_size=64"]


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    env.pop("SURVAE_RUN_STAMP", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_fast_dev_run_prints_checkpoint_and_metric(tmp_path):
    proc = _run(["debug=fast_dev_run", *TINY, f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[survae] checkpoint:" in proc.stdout
    assert "[survae] test/nll = " in proc.stdout


def test_list_experiments_shows_one_line_each(tmp_path):
    proc = _run(["--list-experiments"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    names = {ln.split()[0] for ln in lines}
    expected = {p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml")}
    assert names == expected
    assert all(len(ln.split(None, 1)) == 2 for ln in lines), "an experiment has no description"


def test_multirun_sweep_through_submitit_local_launcher(tmp_path):
    proc = _run(
        [
            "-m",
            "hydra/launcher=local",
            "hydra.launcher.cpus_per_task=1",
            "seed=0,1",
            "debug=fast_dev_run",
            *TINY,
        ],
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one folder per sweep: multirun.yaml and both jobs' folders land together
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    assert sweep_dir.name.startswith("sweep_") and (sweep_dir / "multirun.yaml").is_file()
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert jobs == ["0_debug-abs_flow_four_circles", "1_debug-abs_flow_four_circles"], jobs
    logs = sorted(sweep_dir.rglob("*_log.out"))
    outs = "\n".join(p.read_text() for p in sweep_dir.rglob("*.out"))
    assert outs.count("[survae] checkpoint:") == 2, outs[-3000:] or str(logs)
    records = sorted(sweep_dir.rglob("results.json"))
    assert len(records) == 2, records
