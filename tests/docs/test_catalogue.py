"""The generated reference is complete: every registered name (layer, network, distribution,
architecture, data set) gets a catalogue page with its own docstring, and the paper zoo lists
every experiment with its published number. Uses the generator's functions directly: no Sphinx,
no build."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import yaml

from survae import registry

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("survae_docgen", ROOT / "docs/_ext/survae_docgen.py")
docgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(docgen)

NAMES = [(kind, name) for kind in registry.KINDS for name in registry.available(kind)]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    out = tmp_path_factory.mktemp("catalogue")
    return out, docgen.write_catalogue(out)


def test_every_kind_has_a_catalogue_section():
    assert set(docgen.KIND_TITLES) == set(registry.KINDS) == set(docgen.KIND_INTROS)


def test_catalogue_writes_a_page_for_every_registered_name(catalogue):
    out, written = catalogue
    assert {k: sorted(v) for k, v in written.items()} == {
        kind: registry.available(kind) for kind in registry.KINDS
    }
    index = (out / "index.rst").read_text()
    for kind, name in NAMES:
        page = out / kind / f"{name}.rst"
        assert page.is_file(), f"{kind} {name!r} has no catalogue page"
        assert f"   {kind}/{name}\n" in index, f"{kind} {name!r} is not in the catalogue index"


@pytest.mark.parametrize("kind,name", NAMES, ids=lambda v: str(v))
def test_catalogue_page_documents_the_registered_object(kind, name, catalogue):
    obj = registry.get(kind, name)
    assert docgen.own_docstring(obj), (
        f"{kind} {name!r} ({obj.__module__}.{obj.__qualname__}) has no docstring of its own: "
        "its catalogue page would be empty (an inherited docstring is not shown)"
    )
    text = (catalogue[0] / kind / f"{name}.rst").read_text()
    directive = "autoclass" if inspect.isclass(obj) else "autofunction"
    assert f".. {directive}:: {obj.__module__}.{obj.__qualname__}" in text
    example = text.split(".. code-block:: yaml\n", 1)[1]
    assert f": {name}" in example, f"{kind} {name!r}: the YAML example does not name it"


def test_yaml_example_gives_every_required_key():
    keys = [("kernel_size", "int", "2"), ("features", "int", "required"), ("net", "", "required")]
    example = docgen.yaml_example("layer", "my_layer", keys)
    assert example == "layers:\n  - {name: my_layer, features: 2, net: ???}"
    assert yaml.safe_load(example.replace("???", "x"))["layers"][0]["features"] == 2


def test_zoo_lists_every_experiment_with_its_published_number():
    page = docgen.zoo_page()
    targets = yaml.safe_load((ROOT / "experiments/targets.yaml").read_text())
    for path in sorted((ROOT / "configs/experiment").glob("*.yaml")):
        rows = [line for line in page.splitlines() if line.startswith(f"| `{path.stem}` |")]
        assert len(rows) == 1, f"experiment {path.stem!r} is not in the zoo once"
        if path.stem in targets:
            assert f"{targets[path.stem]['value']} " in rows[0], f"{path.stem}: no published value"


def test_ci_builds_the_docs_and_opens_them_in_a_browser():
    """.ci/run builds the site (warnings are errors) and runs the browser tests on it."""
    ci = (ROOT / ".ci/run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make docs-test" in ci
    assert "apt-get install" in ci and "chromium" in ci
    assert "docs-test: docs\n" in makefile and "-m docs tests/docs" in makefile
    assert "sphinx -W" in makefile
