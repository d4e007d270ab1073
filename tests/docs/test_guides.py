"""The guides' examples work as written: the model configs they show build and give a
log-likelihood, and the user layer of "Your own layers and data" registers, builds from a
config and passes the checks the guide recommends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from survae import build_model, registry
from survae.testing import assert_invertible, assert_logdet_matches_autograd

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _blocks(page: str, language: str) -> list[str]:
    text = (DOCS / page).read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def test_the_model_config_of_the_extending_guide_builds():
    (spec,) = [yaml.safe_load(b) for b in _blocks("guides/extending.md", "yaml")]
    model = build_model(spec, data_shape=[2])
    assert model.log_prob(torch.randn(4, 2)).shape == (4,)


@pytest.fixture
def user_layer():
    """The guide's own layer, registered as its module would register it, then removed."""
    (code,) = [b for b in _blocks("guides/extending.md", "python") if "@register" in b]
    namespace: dict = {}
    exec(compile(code, "docs/guides/extending.md", "exec"), namespace)  # the guide's own text
    yield "my_shift"
    registry._REGISTRIES["layer"].pop("my_shift")


def test_the_user_layer_of_the_extending_guide_works(user_layer):
    spec = {
        "layers": [{"name": user_layer, "num_channels": 2}],
        "base": {"name": "standard_normal"},
    }
    model = build_model(spec, data_shape=[2])
    layer = model.transforms[0]
    with torch.no_grad():
        layer.b.fill_(0.5)
    x = torch.randn(3, 2, dtype=torch.float64)
    assert_invertible(layer.double(), x)
    assert_logdet_matches_autograd(layer, x)
    assert model.double().log_prob(x).shape == (3,)


def test_the_speed_guide_names_every_speed_option():
    config = yaml.safe_load((DOCS.parent / "configs/train.yaml").read_text())
    guide = (DOCS / "guides/speed.md").read_text()
    missing = [k for k in config["speed"] if f"`speed.{k}=" not in guide]
    assert not missing, f"docs/guides/speed.md does not describe speed.{missing}"
    for key in ("threads", "retain_heap"):
        assert f"`{key}`" in guide


INCLUDE = re.compile(r"```\{include\} (\S+)\n((?::[\w-]+: .*\n)*)```")


@pytest.mark.parametrize("page", sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")))
def test_included_sections_are_where_the_guides_say(page):
    """A guide that includes a section of the README names its first and next headings; a
    README edit that renames one fails here (and would fail the docs build) instead of
    silently including the wrong text."""
    text = (DOCS / page).read_text()
    for target, options in INCLUDE.findall(text):
        source = ((DOCS / page).parent / target).resolve().read_text()
        for option in re.findall(r":(?:start-after|end-before): (.*)", options):
            marker = option.strip().strip('"')
            assert source.count(marker) == 1, (
                f"{page}: {marker!r} occurs {source.count(marker)} times in {target}"
            )
