"""The README's own-layer example, run as written (its code, config and command taken from the
README): it trains, and its checkpoint loads through ``load_model`` and ``eval_loglik.py``,
which import the run's saved ``imports`` only when told to (or when already imported)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from conftest import QUIET, tiny_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SECTION = "Your own layers and configs need no fork"


def _readme_blocks() -> dict[str, str]:
    """The python, yaml and bash blocks of the README's own-layer section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n#")]
    return dict(re.findall(r"```(python|yaml|bash)\n(.*?)```", section, re.S))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SURVAE_RUN_STAMP", "PYTHONPATH")}
    return {**env, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **extra}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_readme_own_layer_example_trains_and_loads(tmp_path):
    blocks = _readme_blocks()
    assert "@register(" in blocks["python"] and "(Bijection)" in blocks["python"]
    project = tmp_path / "my_project"
    (project / "configs" / "model").mkdir(parents=True)
    (project / "my_layers.py").write_text(blocks["python"])
    (project / "configs" / "model" / "my_flow.yaml").write_text(blocks["yaml"])

    # the command as written: `PYTHONPATH=~/my_project .venv/bin/python run.py ARGS`
    command = shlex.split(blocks["bash"].replace("\\\n", " ").replace("~", str(tmp_path)))
    assignment, python, script, *args = command
    assert (python, script) == (".venv/bin/python", "run.py")
    key, value = assignment.split("=", 1)
    extra = [*tiny_data(256), *QUIET, "trainer.max_steps=4", f"hydra.run.dir={tmp_path}/run"]
    env = _env(**{key: value + os.pathsep + str(ROOT)})  # and this checkout's survae
    proc = _run([sys.executable, str(ROOT / "run.py"), *args, *extra], tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    eval_loglik = [sys.executable, str(ROOT / "scripts" / "eval_loglik.py"), str(ckpt)]
    eval_loglik += ["--k", "1", "--no-progress"]
    refused = _run(eval_loglik, tmp_path, env)
    assert refused.returncode != 0
    (line,) = refused.stderr.strip().splitlines()
    assert "my_layers" in line and "--trust-config" in line
    trusted = _run([*eval_loglik, "--trust-config"], tmp_path, env)
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert "test/nll = " in trusted.stdout

    check = f"""
from survae import load_model
from survae.config_check import ConfigError
try:
    load_model({str(ckpt)!r})
except ConfigError as err:
    print("refused:", err)
print("trusted:", load_model({str(ckpt)!r}, trust_config=True).sample(3).shape)
"""
    out = _run([sys.executable, "-c", check], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused:" in out.stdout and "my_layers" in out.stdout
    assert "trusted: torch.Size([3, 2])" in out.stdout
    imported = _run(
        [sys.executable, "-c", f"import my_layers\nfrom survae import load_model\n"
         f"print(load_model({str(ckpt)!r}).sample(2).shape)"],
        tmp_path,
        env,
    )  # fmt: skip
    assert imported.returncode == 0 and "torch.Size([2, 2])" in imported.stdout, imported.stderr
