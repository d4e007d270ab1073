"""Every registered building block is documented and exercised by a test."""

from pathlib import Path

import pytest

from survae import registry

TESTS = Path(__file__).parent
TEST_SOURCE = "\n".join(
    p.read_text() for p in TESTS.rglob("test_*.py") if p.name != Path(__file__).name
)

BLOCKS = [(kind, name) for kind in ("layer", "network", "distribution", "architecture",
                                     "dataset") for name in registry.available(kind)]  # fmt: skip


@pytest.mark.parametrize("kind,name", BLOCKS, ids=lambda v: str(v))
def test_block_has_docstring_and_a_test(kind, name):
    obj = registry.get(kind, name)
    doc = (obj.__doc__ or "").strip()
    assert len(doc) > 20, f"{kind} {name!r} ({obj.__qualname__}) needs a docstring"
    mentioned = name in TEST_SOURCE or obj.__name__ in TEST_SOURCE
    assert mentioned, f"{kind} {name!r} ({obj.__name__}) is not referenced by any test"


@pytest.mark.parametrize("name", registry.available("layer"))
def test_layer_docstring_states_its_likelihood_contribution(name):
    doc = (registry.get("layer", name).__doc__ or "").lower()
    words = ("likelihood", "log|det", "log |det", "ldj", "contribution", "log-det", "jacobian")
    assert any(w in doc for w in words), f"layer {name!r}: docstring must give its contribution"
