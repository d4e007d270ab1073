"""Configuration and environment errors through the real command line: one line on stderr
naming the key or file and the valid values, exit status 2, before any model is built; with
``--debug`` or ``HYDRA_FULL_ERROR=1`` the traceback.

Each case runs ``survae.app.cli.main`` (what ``run.py`` calls) in a forked child of one
interpreter that imported survae once, so the many cases cost one start-up; two cases also
run as ``python run.py`` subprocesses. Downloads go to a closed local port (no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

#: (name, command line, text the one stderr line must contain)
CASES = [
    ("missing_data", ["experiment=maf_power"], "Data set 'power' not found. Looked for: "),
    ("lr", ["optim.lr=-1"], "optim.lr: must be a number > 0, got -1"),
    ("batch_size", ["data.batch_size=0"], "data.batch_size: must be an integer >= 1, got 0"),
    ("max_epochs", ["trainer.max_epochs=-5"], "trainer.max_epochs: must be an integer >= 1"),
    ("seed", ["seed=abc"], "seed: must be an integer in [0, 4294967295], got 'abc'"),
    ("unknown_key", ["+trainer.max_step=100"], "Did you mean 'max_steps'"),
    ("key_not_there", ["trainer.max_step=100"], "trainer.max_step: no such key (did you mean"),
    ("imports", ["imports=[no_such_module_xyz]"], "imports: cannot import 'no_such_module_xyz'"),
    ("fused", ["speed.fused_attention=maybe"], "speed.fused_attention: must be true or false"),
    (
        "experiment",
        ["experiment=abs_flow_corner"],
        "experiment=abs_flow_corner: no such experiment (did you mean abs_flow_corners",
    ),
    (
        "group",
        ["trainer=gpux"],
        "trainer=gpux: no such trainer (did you mean gpu?); valid: cpu, ddp, default, gpu",
    ),
    ("parse", ["seed=["], "seed=[: cannot parse this override"),
    (
        "download",
        ["experiment=maf_power", "data.download=true"],
        "failed ([Errno 111] Connection refused); check the network or proxy",
    ),
]
if not torch.cuda.is_available():
    CASES.append(("accelerator", ["trainer=gpu"], "trainer.accelerator: 'gpu' needs a CUDA GPU"))

#: every download goes to a closed local port: refused at once, never the network
OFFLINE = {
    name: "http://127.0.0.1:9"
    for name in ("https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY")
}

DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from survae.app import cli
    cases, out = json.loads(sys.argv[1]), sys.argv[2]
    results = {}
    for name, argv in cases:
        err = os.path.join(out, name + ".err")
        pid = os.fork()
        if pid == 0:
            os.chdir(os.path.join(out, name))
            fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 2)
            code = 0
            try:
                sys.argv = ["run.py", *argv]
                cli.main(argv)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        results[name] = os.waitstatus_to_exitcode(status)
    print(json.dumps(results))
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", **OFFLINE}
    for key in ("HYDRA_FULL_ERROR", "SURVAE_RUN_STAMP", "SURVAE_DATA", "SURVAE_ROOT"):
        env.pop(key, None)
    for key in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(key, None)
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    out = tmp_path_factory.mktemp("cli_errors")
    for name, _, _ in CASES:
        (out / name).mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps([[n, a] for n, a, _ in CASES]), str(out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    return {n: (codes[n], (out / f"{n}.err").read_text(), out / n) for n, _, _ in CASES}


@pytest.mark.parametrize("name,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_error_is_one_line_with_exit_status_2(outcomes, name, argv, expected):
    code, stderr, cwd = outcomes[name]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("Error: ") and expected in lines[0], lines[0]
    # nothing was built: no run folder is left behind
    assert not (cwd / "outputs").exists() or not any((cwd / "outputs").rglob("*.yaml"))


def _run_py(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_run_py_prints_one_line_and_the_traceback_on_request(tmp_path):
    proc = _run_py(["optim.lr=-1"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Error: optim.lr: must be a number > 0, got -1"
    full = _run_py(["optim.lr=-1"], tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1
    assert "Traceback (most recent call last)" in full.stderr
    assert "ConfigError: optim.lr: must be a number > 0, got -1" in full.stderr


def test_debug_flag_shows_the_traceback(tmp_path):
    proc = _run_py(["--debug", "seed=abc"], tmp_path)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr


def test_fetch_offline_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "survae.data.fetch", "maf", "--root", str(tmp_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: downloading https://zenodo.org/")
    assert "Connection refused" in lines[0]
    assert not list(tmp_path.glob("*.part"))


def test_sweep_job_stopped_by_a_config_error_leaves_a_failed_record(tmp_path):
    tiny = ["data.train_size=256", "data.val_size=64", "data.test_size=64", "logger=none"]
    args = ["-m", "seed=abc,1", "trainer.max_steps=2", "callbacks.samples.every_n_epochs=0"]
    proc = _run_py([*args, *tiny], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: seed: must be an integer")
    records = {
        p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/results.json")
    }
    assert {name[0]: r["state"] for name, r in records.items()} == {"0": "failed", "1": "finished"}
    failed = next(r for name, r in records.items() if name.startswith("0"))
    assert failed["reason"].startswith("ConfigError: seed: must be an integer")
    assert "seed=abc" in failed["overrides"]
