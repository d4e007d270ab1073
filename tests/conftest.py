"""Shared test configuration: CPU, deterministic, no network."""

import os

import pytest
import torch

import survae  # noqa: F401  (first: installs the torchvision shim before Lightning loads)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per worker: parallel workers with several OpenMP threads each oversubscribe
    # the cores and make small tensor operations tens of times slower
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
