"""An absent --device is refused up front with one line (benchmark, evaluation scripts)."""

from __future__ import annotations

import pytest
import torch

from survae.bench import benchmark
from survae.runtime.devices import DeviceUnavailableError, available_devices, check_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cpu_is_always_there():
    assert check_device("cpu") == torch.device("cpu")
    assert available_devices()[0] == "cpu"


def test_cuda_without_cuda_says_so_and_what_there_is(no_cuda):
    with pytest.raises(DeviceUnavailableError, match=r"--device cuda: no CUDA device.*cpu"):
        check_device("cuda")
    assert "cuda" not in available_devices()


def test_cuda_index_beyond_the_devices(two_gpus):
    assert check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceUnavailableError, match=r"2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        check_device("cuda:2")
    assert available_devices()[:4] == ["cpu", "cuda", "cuda:0", "cuda:1"]


def test_a_typo_is_not_a_device(no_cuda):
    with pytest.raises(DeviceUnavailableError, match=r"--gpu 'gpu' is not a device name"):
        check_device("gpu", option="--gpu")


def test_mps_off_macos(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="no mps device"):
        check_device("mps")


def test_benchmark_stops_at_once_on_an_absent_device(no_cuda, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("a workload was composed or measured for an absent device")

    monkeypatch.setattr(benchmark, "compose_experiment", no_work)
    monkeypatch.setattr(benchmark, "run_workload", no_work)
    code = benchmark.cli(["--workloads", "glow_cifar10,abs_flow_corners", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("benchmark: --device cuda: no CUDA device")
    assert "Traceback" not in err
