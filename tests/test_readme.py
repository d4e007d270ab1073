"""README.md says what exists: its generated lists match the configs and the registry, every
experiment, data set and model config is named, and the commands it shows work as written."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _tables():
    spec = importlib.util.spec_from_file_location(
        "readme_tables", ROOT / "scripts/readme_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(name: str) -> str:
    begin, end = f"<!-- BEGIN generated: {name} -->", f"<!-- END generated: {name} -->"
    return README[README.index(begin) : README.index(end)]


def _names(text: str) -> list[str]:
    """The names in backticks, ``stem_{a,b}suffix`` expanded."""
    out = []
    for code in re.findall(r"`([^`]+)`", text):
        for word in code.split():
            match = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", word)
            if match:
                out += [f"{match[1]}{part}{match[3]}" for part in match[2].split(",")]
            else:
                out.append(word)
    return out


def test_generated_sections_are_current():
    stale = _tables().stale_sections(README)
    assert not stale, f"README.md is out of date ({stale}): run `python scripts/readme_tables.py`"


def test_every_config_is_listed():
    zoo = _names(_section("zoo"))
    experiments = sorted(p.stem for p in (ROOT / "configs/experiment").glob("*.yaml"))
    assert sorted(n for n in zoo if n in experiments) == experiments  # each exactly once
    groups = set(_names(_section("config-groups")))
    for group in ("data", "model", "optim", "trainer", "logger", "debug", "hparams_search"):
        missing = {p.stem for p in (ROOT / "configs" / group).glob("*.yaml")} - groups
        assert not missing, f"configs/{group}: {sorted(missing)} not in README"


def test_an_experiment_of_a_new_family_is_listed_not_dropped(tmp_path, monkeypatch):
    tables = _tables()
    configs = tmp_path / "configs"
    (configs / "experiment").mkdir(parents=True)
    (configs / "experiment" / "brand_new_power.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /data: power\n  - override /model: novel\n"
    )
    monkeypatch.setattr(tables, "CONFIGS", configs)
    assert "| other (`model=novel`) | `brand_new_power` |" in tables.zoo_table()


def test_every_file_based_data_set_says_where_its_files_go():
    from survae.data.fake import FOLDERS

    data_table = README[README.index("| data set | files under `data.root`") :]
    data_table = data_table[: data_table.index("\n\n")]
    for name, folder in FOLDERS.items():
        assert name in data_table and f"{folder}/" in data_table, name


def test_the_power_error_and_the_readme_suggest_the_same_command(tmp_path):
    from survae import registry
    from survae.data.errors import DatasetNotFoundError

    dm = registry.get("dataset", "power")(root=str(tmp_path), batch_size=4)
    with pytest.raises(DatasetNotFoundError) as err:
        dm.setup("fit")
    command = "-m survae.data.fetch maf --root"
    assert command in str(err.value) and "data.download=true" in str(err.value)
    assert f".venv/bin/python {command} data" in README


def test_readme_commands_run_from_a_checkout():
    """Every command in the README's shell blocks starts with something a checkout has
    (``.venv/bin/...``, ``make``, ...), never a bare ``python`` that may not be the venv's."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    lines = [ln.strip() for block in blocks for ln in block.splitlines()]
    bare = [ln for ln in lines if re.match(r"(python3?|survae-\w+|PYTHONPATH=\S+ python)\s", ln)]
    assert not bare, bare
