"""Checkpoints written before survae's modules moved into subpackages still load and compute the
same log-likelihood.

``tests/fixtures/pre_layout/`` holds a toy AbsFlow checkpoint written by ``run.py`` and a small
Flow++ checkpoint, both written by the code before the move, with the log-likelihoods that code
computed for fixed inputs (``expected_log_prob.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from survae import load_model

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pre_layout"
EXPECTED = json.loads((FIXTURES / "expected_log_prob.json").read_text())


def test_toy_checkpoint_written_by_run_py_loads_with_the_same_density():
    model = load_model(FIXTURES / "abs_flow_toy.ckpt").double()
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model.log_prob(x)
    assert got.tolist() == pytest.approx(EXPECTED["abs_flow_toy"], rel=1e-12, abs=1e-12)


def test_flowpp_checkpoint_loads_with_the_same_state_dict_keys_and_density():
    model = load_model(FIXTURES / "flowpp_small.ckpt")
    ckpt = torch.load(FIXTURES / "flowpp_small.ckpt", weights_only=True)
    saved = {k.removeprefix("model.") for k in ckpt["state_dict"]}
    assert set(model.state_dict()) == saved
    x = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    with torch.no_grad():
        got = model.log_prob(x)
    assert got.tolist() == pytest.approx(EXPECTED["flowpp_small"], rel=1e-5)
