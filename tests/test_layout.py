"""The package's layout: the root holds only the core and the subpackages, modules and
functions stay small, and the import paths of modules that moved keep working."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import survae

PACKAGE = Path(survae.__file__).resolve().parent

#: the core modules at the package root
CORE = {
    "__init__",
    "__main__",
    "checkpoints",
    "config_check",
    "errors",
    "flows",
    "models",
    "registry",
    "testing",
    "utils",
}
#: the subpackages at the package root
SUBPACKAGES = {
    "app",
    "architectures",
    "bench",
    "data",
    "distributions",
    "metrics",
    "nn",
    "runtime",
    "training",
    "transforms",
}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
#: functions kept longer than MAX_FUNCTION_LINES, and why
LONG_FUNCTIONS = {
    # the Glow builder: one keyword argument per paper option, each documented in place
    "architectures/glow.py:glow",
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "configs" not in p.parts)


def test_package_root_holds_only_the_core_and_subpackages():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules == CORE
    assert packages == SUBPACKAGES


def test_no_module_is_longer_than_the_limit():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_longer_than_the_limit_except_the_listed_ones():
    long = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long.add(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert long <= LONG_FUNCTIONS, sorted(long - LONG_FUNCTIONS)


@pytest.mark.parametrize("old", sorted(survae.MOVED_MODULES))
def test_a_moved_module_imports_under_its_old_path_with_a_warning_naming_the_new_one(old):
    new = survae.MOVED_MODULES[old]
    # a fresh interpreter: the old name must not already be in sys.modules
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import survae\n"
        f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print(w)\n"
        f"warnings.simplefilter('ignore')\nimport {old} as a, {new} as b\n"
        "print(a is b)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert f"{old} has moved to {new}" in out
    assert out.strip().endswith("True")


def test_moved_modules_are_attributes_of_the_package_and_unknown_names_are_not():
    with pytest.warns(DeprecationWarning):
        assert survae.speed is importlib.import_module("survae.runtime.speed")
    assert survae.load_model is importlib.import_module("survae.models").load_model
    with pytest.raises(AttributeError, match="no_such_module"):
        survae.no_such_module  # noqa: B018
