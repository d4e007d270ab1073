"""The measured peak per precision and the fractions of it (logic only: no timing asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from survae.bench import flops, report

SMALL = {"matmul": 64, "conv_batch": 2, "conv_channels": 16, "conv_size": 8}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVAE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(flops, "_PEAK_CACHE", {})
    return tmp_path


def test_flops_are_split_by_the_precision_each_kernel_ran_in():
    layer = torch.nn.Linear(16, 8, bias=False)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    x, img = torch.randn(4, 16, requires_grad=True), torch.randn(2, 3, 5, 5)

    def step(i):
        layer(x).sum().backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(img).float().sum().backward()

    by = flops.count_flops_by_precision(step)
    assert by["fp32"] == 3 * 2 * 4 * 16 * 8  # forward, input and weight gradients
    # forward and weight gradient (the image needs none): 2 · (2·25 outputs · 4 · 27 taps)
    assert by["bf16"] == 2 * 2 * (2 * 25) * 4 * 27
    assert flops.count_flops(step) == by["fp32"] + by["bf16"]


def test_kernel_rates_cover_matmul_and_both_convolution_layouts():
    rates = flops.kernel_rates("cpu", "fp32", sizes=SMALL, repeats=1)
    assert set(rates) == {"matmul", "conv3x3", "conv3x3_cl", "conv1x1", "conv1x1_cl"}
    assert all(v > 0 for v in rates.values())


def test_the_peak_is_the_best_kernel():
    assert flops.peak_of({"matmul": 1.0, "conv3x3": 3.0, "conv1x1_cl": 2.0}) == 3.0
    with pytest.raises(ValueError):
        flops.peak_of({})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_peak_is_at_least_every_measured_kernel_and_cached_on_disk(
    cache_dir, monkeypatch, precision
):
    measured = []
    real = flops.kernel_rates

    def small(device, precision, sizes=None, repeats=5):
        measured.append(precision)
        return real(device, precision, SMALL, 1)

    monkeypatch.setattr(flops, "kernel_rates", small)
    peak = flops.peak_flops("cpu", precision)
    rates = flops.peak_rates("cpu", precision)
    assert peak == max(rates.values()) and all(peak >= v for v in rates.values())
    assert measured == [precision]  # the second call read the cache
    stored = json.loads((cache_dir / "peak_flops.json").read_text())
    assert stored[flops.machine_key("cpu")][precision] == rates
    # a new process (empty memory cache) reads the file instead of measuring again
    monkeypatch.setattr(flops, "_PEAK_CACHE", {})
    assert flops.peak_flops("cpu", precision) == peak and measured == [precision]


def test_the_cache_is_per_thread_count(cache_dir, monkeypatch):
    monkeypatch.setattr(flops, "kernel_rates", lambda *a, **k: {"matmul": 1.0})
    before = torch.get_num_threads()
    try:
        key1 = flops.machine_key("cpu")
        torch.set_num_threads(2 if before == 1 else 1)
        assert flops.machine_key("cpu") != key1
    finally:
        torch.set_num_threads(before)


def test_fraction_of_peak_weighs_each_precision_by_its_own_peak():
    peak = {"fp32": 100e9, "bf16": 400e9}
    # 50 GFLOP fp32 (0.5 s at peak) + 100 GFLOP bf16 (0.25 s at peak) in 1 s
    assert flops.fraction_of_peak({"fp32": 50e9, "bf16": 100e9}, 1.0, peak) == pytest.approx(0.75)
    assert flops.fraction_of_peak({"fp32": 50e9}, 1.0, peak) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no peak"):
        flops.fraction_of_peak({"fp16": 1.0}, 1.0, peak)


def test_no_fraction_exceeds_one_for_work_at_or_below_the_peak():
    """A step whose kernels each ran no faster than the peak of their precision (they took
    at least flops / peak seconds, plus any other work) is at most 100 % of peak."""
    gen = torch.Generator().manual_seed(0)
    peak = {"fp32": 120e9, "bf16": 240e9}
    for _ in range(100):
        f = {p: float(torch.rand((), generator=gen)) * 1e12 for p in peak}
        slack = float(torch.rand((), generator=gen))
        seconds = sum(f[p] / peak[p] for p in f) + slack
        assert flops.fraction_of_peak(f, seconds, peak) <= 1.0


def test_report_names_the_peak_of_each_precision():
    one = {
        "train_gflops_per_s": 60.0,
        "flops_fraction_of_peak": 0.5,
        "train_ms_median": 1e3,
        "train_flops_by_precision": {"fp32": 60e9},
        "peak_gflops_per_s": {"fp32": 120.0},
    }
    assert report._fmt_rate(one) == "60.0 GFLOP/s, 50 % of fp32 peak 120"
    mixed = {
        "train_gflops_per_s": 160.0,
        "flops_fraction_of_peak": 0.75,
        "train_ms_median": 1e3,
        "train_flops_by_precision": {"fp32": 60e9, "bf16": 100e9},
        "peak_gflops_per_s": {"fp32": 120.0, "bf16": 400.0},
    }
    assert report._fmt_rate(mixed) == (
        "bf16 100.0, fp32 60.0 GFLOP/s, 75 % of peak (bf16 400, fp32 120)"
    )


def test_a_refresh_keeps_the_better_rate_of_each_kernel(cache_dir, monkeypatch):
    rates = iter([{"matmul": 2.0, "conv3x3": 5.0}, {"matmul": 3.0, "conv3x3": 4.0}])
    monkeypatch.setattr(flops, "kernel_rates", lambda *a, **k: next(rates))
    assert flops.peak_rates("cpu", "fp32") == {"matmul": 2.0, "conv3x3": 5.0}
    assert flops.peak_rates("cpu", "fp32", refresh=True) == {"matmul": 3.0, "conv3x3": 5.0}
    monkeypatch.setattr(flops, "_PEAK_CACHE", {})  # a new process reads the merged rates
    assert flops.peak_flops("cpu", "fp32") == 5.0


def test_a_step_above_a_stale_peak_measures_the_peak_again(cache_dir, monkeypatch):
    """A peak measured while the cores were shared is too low; a faster step than it makes
    the benchmark measure again, and the better peak is kept."""
    rates = iter([{"matmul": 50.0}, {"matmul": 200.0}])
    monkeypatch.setattr(flops, "kernel_rates", lambda *a, **k: next(rates))
    flops.peak_rates("cpu", "fp32")  # cached at 50
    fraction, peak = flops.step_fraction({"fp32": 100.0}, 1.0, "cpu")
    assert peak == {"fp32": 200.0} and fraction == pytest.approx(0.5)
    fraction, peak = flops.step_fraction({"fp32": 100.0}, 2.0, "cpu")  # below: no measurement
    assert fraction == pytest.approx(0.25)
