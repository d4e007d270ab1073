"""scripts/benchmark.py: the JSON report's keys and types, positive timings, the untrained-loss
sanity values, speed-variant planning and the ablation table. No wall-clock value is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from survae.bench import benchmark, flops, report, runner, timing, workloads
from survae.bench import official as official_bench

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"

#: keys every successful measurement has, with their types
RESULT_TYPES = {
    "params": int,
    "batch": int,
    "train_ms_median": float,
    "train_ms_min": float,
    "eval_ms_median": float,
    "sample_ms": float,
    "peak_mem_mb": float,
    "loss_value": float,
    "loss_unit": str,
    "device": str,
    "torch_version": str,
    "speed_options": dict,
}


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_main(tmp_path):
    """The script's ``main`` in this process; returns (report, JSON file's report, markdown)."""
    script = load_script()
    threads = torch.get_num_threads()

    def _run(*args: str):
        out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
        # one thread: on a busy shared machine, spinning worker threads make small steps crawl
        argv = [*args, "--in-process", "--quiet", "--threads", "1", "--json", str(out_json)]
        report = script.main([*argv, "--markdown", str(out_md)])
        return report, json.loads(out_json.read_text()), out_md.read_text()

    yield _run
    torch.set_num_threads(threads)  # measure() sets the thread count: leave it as found


def check_result(result: dict, workload: str, batch: int) -> None:
    assert "error" not in result, result.get("error")
    for key, kind in RESULT_TYPES.items():
        assert isinstance(result[key], kind), f"{key}: {type(result[key]).__name__}"
    assert result["workload"] == workload
    assert result["batch"] == batch
    assert result["params"] > 0
    assert result["device"] == "cpu"
    assert result["torch_version"] == torch.__version__
    for key in ("train_ms_median", "train_ms_min", "eval_ms_median", "sample_ms", "peak_mem_mb"):
        assert result[key] > 0 and math.isfinite(result[key]), key
    assert result["train_ms_min"] <= result["train_ms_median"]
    assert math.isfinite(result["loss_value"])
    assert set(result["speed_options"]) >= {"compile", "bf16_couplings", "channels_last"}
    assert result["steps"] == 2 and result["warmup"] == 1


def test_toy_workload_with_ablation(run_main):
    name = "abs_flow_eight_gaussians"
    report, saved, md = run_main(
        "--workloads", name, "--steps", "2", "--warmup", "1", "--ablate", "--bf16",
        "--memory-saving", "--channels-last",
    )  # fmt: skip
    assert saved == json.loads(json.dumps(report))
    entry = report[name]
    check_result(entry, name, 128)  # the paper's batch, from the config
    assert entry["loss_unit"] == "nats" and entry["loss_metric"] == "nll"
    # untrained 2-D flow on eight_gaussians: a few nats (a standard normal on the data ≈ 5.3)
    assert 2.0 < entry["loss_value"] < 10.0
    # the top level of an ablation is the baseline: every feature off
    opts = entry["speed_options"]
    assert not any(opts[k] for k in ("compile", "bf16_couplings", "channels_last", "memory_saving"))
    # channels-last changes nothing for 2-D data: not ablated there
    assert list(entry["variants"]) == ["baseline", "bf16", "memory_saving", "all"]
    assert set(entry["ratios"]) == {"bf16", "memory_saving", "all"}
    for variant, result in entry["variants"].items():
        check_result(result, name, 128)
        on = {k for k in ("bf16_couplings", "memory_saving") if result["speed_options"][k]}
        expected = {
            "baseline": set(),
            "bf16": {"bf16_couplings"},
            "memory_saving": {"memory_saving"},
        }
        assert on == expected.get(variant, {"bf16_couplings", "memory_saving"}), variant
        # the features leave the likelihood unchanged up to bf16 rounding
        assert result["loss_value"] == pytest.approx(entry["loss_value"], rel=1e-2)
    for variant, ratio in entry["ratios"].items():
        base, other = entry["variants"]["baseline"], entry["variants"][variant]
        assert ratio["train"] == pytest.approx(base["train_ms_median"] / other["train_ms_median"])
        assert ratio["sample"] == pytest.approx(base["sample_ms"] / other["sample_ms"])
        assert all(v > 0 for v in ratio.values())
    # markdown: the summary row, then one ablation row per variant with its ratio columns
    lines = md.splitlines()
    assert lines[0].startswith("| workload | batch | params | train ms")
    assert sum(ln.startswith(f"| `{name}` |") for ln in lines) == 1 + 4
    ablation = [ln for ln in lines if ln.startswith(f"| `{name}` | ")][1:]
    assert [ln.split("|")[2].strip() for ln in ablation] == list(entry["variants"])
    header = next(ln for ln in lines if ln.startswith("| workload | variant |"))
    assert all(ln.count("|") == header.count("|") for ln in ablation)
    assert "× train" in header and "× memory" in header


def test_small_image_workload(run_main):
    name = "iaf_vae_mnist"
    report, _, md = run_main("--workloads", name, "--steps", "2", "--warmup", "1", "--batch", "4")
    entry = report[name]
    check_result(entry, name, 4)
    assert entry["data_kind"] == "image" and entry["data_shape"] == [1, 28, 28]
    assert entry["loss_unit"] == "bits/dim"
    # an untrained model on uniform random bytes: about 8 bits/dim (log2 256) or a bit more
    assert 8.0 < entry["loss_value"] < 10.0
    assert "variants" not in entry and "ratios" not in entry  # no speed flags: baseline only
    assert f"| `{name}` | 4 |" in md


def test_synthetic_batches_have_the_data_format():
    cfg = workloads.compose_experiment("permute_flow_spatial_mnist")
    dm = workloads._datamodule(cfg, 8, seed=0)
    x = workloads.synthetic_batch(dm, 8)
    assert x.dtype == torch.float32 and x.shape == (8, 50, 2)
    assert x.min() >= 0 and x.max() < 28
    cfg = workloads.compose_experiment("glow_cifar10")
    x = workloads.synthetic_batch(workloads._datamodule(cfg, 3, seed=0), 3)
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 32, 32)
    assert torch.equal(x, workloads.synthetic_batch(workloads._datamodule(cfg, 3, 0), 3))
    cfg = workloads.compose_experiment("abs_flow_eight_gaussians")
    x = workloads.synthetic_batch(workloads._datamodule(cfg, 16, seed=0), 16)
    assert x.shape == (16, 2) and x.abs().max() < 4  # the toy set's own samples


def test_variant_plans():
    plan = workloads.plan_variants
    assert plan("image", [], ablate=False) == [("baseline", ())]
    assert plan("image", ["compile", "bf16"], ablate=False) == [
        ("baseline", ()),
        ("compile+bf16", ("compile", "bf16")),
    ]
    assert plan("toy", ["compile"], ablate=False, baseline=False) == [("compile", ("compile",))]
    full = plan("image", [], ablate=True)
    assert [n for n, _ in full] == [
        "baseline", "defaults", "compile", "bf16", "channels_last", "memory_saving", "all",
    ]  # fmt: skip
    assert full[-1][1] == ("defaults", "compile", "bf16", "channels_last", "memory_saving")
    assert [n for n, _ in plan("points", [], ablate=True)] == [
        "baseline", "defaults", "compile", "bf16", "memory_saving", "fused_attention", "all",
    ]  # fmt: skip
    assert "fused_attention" not in [n for n, _ in plan("toy", [], ablate=True)]
    assert plan("image", ["bf16"], ablate=True) == [("baseline", ()), ("bf16", ("bf16",))]
    cfg = {"speed": {"memory_saving": True, "memory_saving_anchor_every": 4}}
    speed = workloads.variant_speed(cfg, ["compile"])
    assert speed["compile"] and not speed["memory_saving"]  # baseline switches are off
    assert speed["preset"] == "off" and speed["channels_last"] is None  # off: the bare model
    assert speed["memory_saving_anchor_every"] == 4  # the config's settings stay
    assert workloads.variant_speed(cfg, ["defaults"])["preset"] == "auto"
    toy = workloads.compose_experiment("abs_flow_eight_gaussians")
    assert workloads.planned_steps(toy) == 10 * 128_000 / 128  # the official 10 epochs
    assert math.isnan(workloads.planned_steps({"trainer": {"max_epochs": 3}, "data": {}}))
    assert workloads.planned_steps({"trainer": {"max_steps": 7}}) == 7


def test_ratios_and_failed_workloads(run_main):
    base = {"train_ms_median": 10.0, "eval_ms_median": 4.0, "sample_ms": 2.0, "peak_mem_mb": 100}
    fast = {"train_ms_median": 5.0, "eval_ms_median": 4.0, "sample_ms": 4.0, "peak_mem_mb": 50}
    assert runner.ratios(base, fast) == {"train": 2.0, "eval": 1.0, "sample": 0.5,
                                               "peak_mem": 2.0}  # fmt: skip
    assert runner.ratios(base, {"error": "x"})["train"] is None
    report, _, md = run_main("--workloads", "no_such_experiment", "--steps", "1")
    assert "no_such_experiment" in report["no_such_experiment"]["error"]
    assert benchmark.failed(report) == ["no_such_experiment"]
    assert "failed" in md


@pytest.mark.slow
def test_subprocess_per_workload(tmp_path):
    """Default mode: the measurement runs in a fresh process (its own peak RSS)."""
    out = tmp_path / "bench.json"
    code = benchmark.cli(
        ["--workloads", "plain_flow_eight_gaussians", "--steps", "1", "--warmup", "0",
         "--batch", "8", "--quiet", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())["plain_flow_eight_gaussians"]
    assert result["isolated"] is True and result["batch"] == 8
    assert result["peak_mem_mb"] > 0 and result["train_ms_median"] > 0


# --------------------------------------------------------------------------- FLOP/s
def test_flop_count_of_a_matrix_product_and_backward():
    """One linear layer: 2·B·in·out forward, twice that backward (input and weight grads)."""
    layer = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(4, 16, requires_grad=True)

    def step(i):
        layer(x).sum().backward()

    assert flops.count_flops(step) == 3 * 2 * 4 * 16 * 8


def test_measurement_reports_flop_rate_and_can_skip_evaluation(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVAE_CACHE_DIR", str(tmp_path))  # the peak: small kernels, not cached
    monkeypatch.setattr(flops, "_PEAK_CACHE", {})
    real = flops.kernel_rates
    small = {"matmul": 64, "conv_batch": 2, "conv_channels": 16, "conv_size": 8}
    monkeypatch.setattr(flops, "kernel_rates", lambda d, p, s=None, r=5: real(d, p, small, 1))
    threads = torch.get_num_threads()
    try:
        r = timing.measure(
            "plain_flow_eight_gaussians", steps=2, warmup=1, batch=16, threads=1, evaluate=False
        )
    finally:
        torch.set_num_threads(threads)
    # 4 couplings, MLP 1 → 200 → 100 → 2 over 16 points: forward 2·16·(200 + 20,000 + 200)
    # per coupling, backward about twice that (the first layer's input needs no gradient)
    assert 4 * 2 * 16 * 20_400 <= r["train_flops"] <= 3 * 4 * 2 * 16 * 20_400
    assert set(r["train_flops_by_precision"]) == {"fp32"}
    assert r["train_gflops_per_s"] > 0 and r["peak_gflops_per_s"]["fp32"] > 0
    assert r["flops_fraction_of_peak"] == pytest.approx(
        r["train_gflops_per_s"] / r["peak_gflops_per_s"]["fp32"]
    )
    assert r["eval_ms_median"] is None and r["sample_ms"] is None
    assert "GFLOP/s" in report.markdown({"plain_flow_eight_gaussians": r})


@pytest.mark.parametrize("override,expected", [([], True), (["retain_heap=false"], False)])
def test_measurement_retains_the_heap_as_run_py_does(monkeypatch, override, expected):
    calls = []
    monkeypatch.setattr(timing, "retain_heap", lambda: calls.append(1) or True)
    threads = torch.get_num_threads()
    try:
        r = timing.measure(
            "plain_flow_eight_gaussians", steps=1, warmup=0, batch=8, threads=1,
            evaluate=False, flops=False, overrides=override,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert r["retain_heap"] is expected and len(calls) == int(expected)


# --------------------------------------------------------------------------- official code
def test_every_official_workload_has_its_survae_config_and_readme_arguments():
    assert set(official_bench.OFFICIAL_WORKLOADS) == {
        "abs_flow_eight_gaussians", "plain_flow_eight_gaussians", "maxpool_flow_cifar10",
        "slice_flow_cifar10", "permute_flow_spatial_mnist", "sort_flow_spatial_mnist",
    }  # fmt: skip
    configs = Path(workloads.CONFIG_DIR) / "experiment"
    for name, info in official_bench.OFFICIAL_WORKLOADS.items():
        assert (configs / f"{name}.yaml").is_file(), name
        assert info["kind"] in ("toy", "image", "points")
    for name, pooling in (("maxpool_flow_cifar10", "max"), ("slice_flow_cifar10", "none")):
        argv = official_bench.OFFICIAL_WORKLOADS[name]["argv"]
        assert argv[argv.index("--pooling") + 1] == pooling
    # the official point-flow scripts run at dropout 0 unless told otherwise
    assert official_bench.OFFICIAL_WORKLOADS["sort_flow_spatial_mnist"]["overrides"] == [
        "model.dropout=0.0"
    ]


def test_official_batches_are_survae_batches_in_the_official_dtypes():
    x = official_bench.official_batch("maxpool_flow_cifar10", 2)
    assert x.dtype == torch.int64 and x.shape == (2, 3, 32, 32) and 0 <= x.min() <= x.max() < 256
    ours = workloads.synthetic_batch(
        workloads._datamodule(workloads.compose_experiment("maxpool_flow_cifar10"), 2, 0), 2
    )
    assert torch.equal(x, ours.long())
    toy = official_bench.official_batch("abs_flow_eight_gaussians", 64)
    assert toy.abs().max() <= official_bench.OFFICIAL_TOY_CLAMP


def test_back_to_back_rounds_alternate_and_give_median_ratios(monkeypatch, tmp_path):
    """With the two measurements faked: the order alternates between rounds, the ratio is
    official / survae per round, reported as median and range."""
    official = tmp_path / "official"
    (official / "survae" / "flows").mkdir(parents=True)
    (official / "experiments").mkdir()
    calls = []
    ours = iter([10.0, 20.0, 10.0])
    theirs = iter([15.0, 20.0, 30.0])

    def fake_ours(spec, timeout):
        calls.append("survae")
        assert spec["evaluate"] is False and "model.dropout=0.0" in spec["overrides"]
        t = next(ours)
        return {"train_ms_median": t, "train_ms_min": t / 2, "params": 5, "loss_value": 1.0,
                "retain_heap": True}  # fmt: skip

    def fake_theirs(spec, x, timeout):
        calls.append("official")
        assert spec["script"] == "train_perm_flow.py" and x.shape == (4, 50, 2)
        t = next(theirs)
        return {"train_ms_median": t, "train_ms_min": t, "params": 5, "loss_value": 1.0}

    monkeypatch.setattr(official_bench, "_run_child", fake_ours)
    monkeypatch.setattr(official_bench, "_run_official_child", fake_theirs)
    common = {"steps": 1, "warmup": 0, "threads": 1, "batch": 4, "seed": 0, "overrides": []}
    report = official_bench.run_official(
        ["permute_flow_spatial_mnist", "glow_cifar10"], official, common, rounds=3
    )
    assert calls == ["survae", "official", "official", "survae", "survae", "official"]
    entry = report["permute_flow_spatial_mnist"]
    assert entry["ratios"] == [1.5, 1.0, 3.0]
    assert entry["ratio"] == {"median": 1.5, "min": 1.0, "max": 3.0}
    assert entry["ratio_of_minima"] == {"median": 3.0, "min": 2.0, "max": 6.0}
    assert "no official counterpart" in report["glow_cifar10"]["error"]
    md = official_bench.official_markdown(report)
    assert "**1.50**" in md and "1.00–3.00" in md and "3.00 (2.00–6.00)" in md and "failed" in md
    assert "survae's side kept its freed heap memory" in md
    with pytest.raises(ValueError, match="not a checkout"):
        official_bench.run_official(["abs_flow_eight_gaussians"], tmp_path, common)


def test_back_to_back_survae_speed_features_reach_survae_side_and_are_named(monkeypatch, tmp_path):
    """``--official --compile``: survae's side runs with compile on, the official side is
    unchanged, and the table names the feature and its (untimed) compilation seconds."""
    official = tmp_path / "official"
    (official / "survae" / "flows").mkdir(parents=True)
    (official / "experiments").mkdir()
    seen = []

    def fake_ours(spec, timeout):
        seen.append(spec["features"])
        compile_s = 9.25 if "compile" in spec["features"] else None  # as measure() reports
        return {"train_ms_median": 2.0, "train_ms_min": 2.0, "params": 5, "loss_value": 1.0,
                "compile_s": compile_s}  # fmt: skip

    def fake_theirs(spec, x, timeout):
        assert "features" not in spec
        return {"train_ms_median": 3.0, "train_ms_min": 3.0, "params": 5, "loss_value": 1.0}

    monkeypatch.setattr(official_bench, "_run_child", fake_ours)
    monkeypatch.setattr(official_bench, "_run_official_child", fake_theirs)
    common = {"steps": 1, "warmup": 0, "threads": 1, "batch": 4, "seed": 0, "overrides": []}
    report = official_bench.run_official(
        ["abs_flow_eight_gaussians"], official, common, rounds=2, features=["compile"]
    )
    assert seen == [["compile"], ["compile"]]
    entry = report["abs_flow_eight_gaussians"]
    assert entry["survae_features"] == ["compile"] and entry["ratio"]["median"] == 1.5
    assert entry["survae_compile_s"]["median"] == 9.25
    md = official_bench.official_markdown(report)
    assert "survae + compile (9.2 s compilation, untimed)" in md
    # without features: no label, and survae's side runs with none
    seen.clear()
    plain = official_bench.run_official(["abs_flow_eight_gaussians"], official, common, rounds=1)
    plain_md = official_bench.official_markdown(plain)
    assert seen == [[]] and "survae +" not in plain_md and "compilation" not in plain_md
    assert "survae_compile_s" not in plain["abs_flow_eight_gaussians"]
    assert "heap" not in plain_md  # the faked measurements did not retain it


def test_back_to_back_reports_the_ratio_of_cpu_time(monkeypatch, tmp_path):
    """Each side's CPU seconds per step give a second ratio, steadier on a shared machine."""
    official = tmp_path / "official"
    (official / "survae" / "flows").mkdir(parents=True)
    (official / "experiments").mkdir()
    ours, theirs = iter([(10.0, 4.0), (30.0, 5.0)]), iter([(20.0, 8.0), (20.0, 15.0)])

    def fake(it):
        def run(*args):
            wall, cpu = next(it)
            return {"train_ms_median": wall, "train_ms_min": wall, "params": 5,
                    "loss_value": 1.0, "train_cpu_ms_median": cpu}  # fmt: skip

        return run

    monkeypatch.setattr(official_bench, "_run_child", fake(ours))
    monkeypatch.setattr(official_bench, "_run_official_child", fake(theirs))
    common = {"steps": 1, "warmup": 0, "threads": 1, "batch": 4, "seed": 0, "overrides": []}
    report = official_bench.run_official(["abs_flow_eight_gaussians"], official, common, rounds=2)
    entry = report["abs_flow_eight_gaussians"]
    # rounds alternate the order: round 2 runs official first, then survae
    assert entry["cpu_ratio"] == {"median": 2.5, "min": 2.0, "max": 3.0}
    assert "`abs_flow_eight_gaussians` 2.50 (2.00–3.00)" in official_bench.official_markdown(report)


OFFICIAL = Path("/work/official_survae")


@pytest.mark.slow
@pytest.mark.skipif(not (OFFICIAL / "survae").is_dir(), reason="no official SurVAE checkout")
def test_official_toy_model_timed_in_its_own_process():
    """The real official toy script, built in an isolated process: same parameter count."""
    report = official_bench.run_official(
        ["plain_flow_eight_gaussians"],
        OFFICIAL,
        {"steps": 2, "warmup": 1, "threads": 1, "batch": 32, "seed": 0, "overrides": []},
        rounds=1,
    )
    entry = report["plain_flow_eight_gaussians"]
    assert "error" not in entry, entry.get("error")
    assert entry["params"]["official"] == entry["params"]["survae"] == 82_808
    assert entry["ratio"]["median"] > 0


# --------------------------------------------------------------------------- peer libraries
def test_peer_comparison_matches_parameter_counts_and_skips_missing_libraries(monkeypatch):
    from survae.bench import peers as bp

    real = bp.installed
    monkeypatch.setattr(bp, "installed", lambda peer: peer != "zuko" and real(peer))
    threads = torch.get_num_threads()
    try:
        report = bp.run_peers(["toy", "maf_nobn"], rounds=2, steps=1, warmup=0, isolate=False)
    finally:
        torch.set_num_threads(threads)
    assert report["skipped"]["zuko"] == "not installed"
    for name, count in (("toy", 82_808), ("maf_nobn", 60_060)):
        entry = report[name]
        assert entry["params"]["survae"] == count
        assert all(n == count for n in entry["params"].values()), entry["params"]
        assert "zuko" not in entry["ms"]
        for lib, q in entry["ratio"].items():
            assert q["min"] <= q["median"] <= q["max"]
            assert len(entry["ms"][lib]) == 2
    md = bp.peers_markdown(report)
    assert "| `toy` | survae | 82,808 |" in md and "skipped: not installed" in md


def test_peer_libraries_run_in_their_own_processes(monkeypatch):
    """The default: one worker process per library, kept for all rounds; the parent's thread
    setting is left alone."""
    from survae.bench import peers as bp

    has_nflows = importlib.util.find_spec("nflows") is not None
    monkeypatch.setattr(bp, "installed", lambda peer: peer == "nflows" and has_nflows)
    threads = torch.get_num_threads()
    started: list[str] = []
    real_worker = bp._Worker

    def worker(lib, spec):
        started.append(lib)
        return real_worker(lib, spec)

    monkeypatch.setattr(bp, "_Worker", worker)
    report = bp.run_peers(["toy"], rounds=2, steps=2, warmup=1, threads=1)
    assert torch.get_num_threads() == threads
    libs = ["survae"] + (["nflows"] if has_nflows else [])
    assert started == libs
    assert report["isolated"] is True and "errors" not in report
    entry = report["toy"]
    assert sorted(entry["ms"]) == sorted(libs)
    assert all(len(v) == 2 and min(v) > 0 for v in entry["ms"].values())
    assert entry["params"] == {lib: 82_808 for lib in libs}
    assert report["retain_heap"] is True
    assert "Each library ran in its own process, with freed heap memory kept" in (
        bp.peers_markdown(report)
    )


@pytest.mark.parametrize("retain", [True, False])
def test_peer_processes_retain_the_heap_unless_told_not_to(monkeypatch, retain):
    from survae.bench import peers as bp

    calls = []
    monkeypatch.setattr(bp, "_retain_heap", lambda: calls.append(1) or True)
    monkeypatch.setattr(bp, "installed", lambda peer: False)
    threads = torch.get_num_threads()
    try:
        report = bp.run_peers(
            ["toy"], rounds=1, steps=1, warmup=0, isolate=False, retain_heap=retain
        )
    finally:
        torch.set_num_threads(threads)
    assert bool(calls) is retain and report["retain_heap"] is retain
    heap = "freed heap memory kept" if retain else "glibc's default heap thresholds"
    assert f"Each library ran in the benchmark's process, with {heap}" in (
        bp.peers_markdown(report)
    )


def test_peer_build_failure_is_reported_not_fatal(monkeypatch):
    from survae.bench import peers as bp

    def broken(model):
        raise RuntimeError("no such layer")

    monkeypatch.setattr(bp, "installed", lambda peer: peer == "FrEIA")
    monkeypatch.setitem(bp.BUILDERS, "FrEIA", broken)
    report = bp.run_peers(["toy"], rounds=1, steps=1, warmup=0, isolate=False)
    assert "RuntimeError: no such layer" in report["errors"]["toy/FrEIA"]
    assert list(report["toy"]["ms"]) == ["survae"] and report["toy"]["ratio"] == {}
    assert "| `toy` | FrEIA | failed: RuntimeError: no such layer |" in bp.peers_markdown(report)


def test_peer_failing_mid_run_is_dropped_and_reported(monkeypatch):
    """A library whose training step raises (in-process) or whose worker dies (isolated) is
    reported under ``errors`` and left out of the table; the others are still timed."""
    from survae.bench import peers as bp

    def failing(model, **options):
        module = torch.nn.Linear(2, 2)

        def log_prob(x):
            raise FloatingPointError("loss is nan")

        return module, log_prob

    monkeypatch.setattr(bp, "installed", lambda peer: peer == "FrEIA")
    monkeypatch.setitem(bp.BUILDERS, "FrEIA", failing)
    report = bp.run_peers(["toy"], rounds=2, steps=1, warmup=0, isolate=False)
    assert "FloatingPointError: loss is nan" in report["errors"]["toy/FrEIA"]
    assert list(report["toy"]["ms"]) == ["survae"] and list(report["toy"]["params"]) == ["survae"]
    assert len(report["toy"]["ms"]["survae"]) == 2
    monkeypatch.setitem(bp.BUILDERS, "survae", failing)  # nothing left to time: no division
    report = bp.run_peers(["toy"], rounds=2, steps=1, warmup=0, isolate=False)
    assert report["toy"]["ms"] == {} and set(report["errors"]) == {"toy/survae", "toy/FrEIA"}
    assert "| `toy` | survae | failed: FloatingPointError: loss is nan |" in (
        bp.peers_markdown(report)
    )

    worker = bp._Worker("survae", {"model": "toy", "batch": 4, "shape": (2,), "threads": 1,
                                   "seed": 0, "warmup": 0})  # fmt: skip
    try:
        assert worker.ready() == {"params": 82_808}
        assert len(worker.steps(1)) == 1
        worker.process.kill()
        worker.process.join()
        assert "worker exited" in worker.steps(1)["error"]
    finally:
        worker.close()


def test_peer_models_compute_a_density():
    """Each installed library's model is a normalised density: a standard normal base and a
    near-identity initial flow give a log-density near that of N(0, I)."""
    from survae.bench import peers as bp

    x = torch.randn(64, 2)
    for lib, build in bp.BUILDERS.items():
        if lib != "survae" and not bp.installed(lib):
            continue
        built = build("toy")
        if built is None:
            continue
        module, log_prob = built
        with torch.no_grad():
            lp = log_prob(x)
        assert lp.shape == (64,) and torch.isfinite(lp).all(), lib
        assert abs(lp.mean().item() + 2.84) < 2.0, (lib, lp.mean().item())


#: the small Glow's parameters per library: survae's (Glow's coupling network: an actnorm after
#: each hidden convolution, a learned output scale) minus, over the 4 + 4 steps of 4 and 8
#: channels with 128 hidden ones: normflows no output scale (C per step), nflows plain biased
#: convolutions with a biased 1×1 convolution (2·128 per step), FrEIA plain biased
#: convolutions (2·128 + C per step)
GLOW_PARAMS = {
    "survae": 218_624,
    "normflows": 218_624 - 4 * (4 + 8),
    "nflows": 218_624 - 8 * 2 * 128,
    "FrEIA": 218_624 - 8 * 2 * 128 - 4 * (4 + 8),
}


@pytest.mark.parametrize("lib", sorted(GLOW_PARAMS))
def test_peer_glow_builds_with_matched_parameters_and_a_density(lib):
    """The small Glow in each installed library: the expected parameter count, and at
    initialisation (data-initialised actnorms, near-identity couplings) a log-density of
    N(0, I) data near that of N(0, I) itself (784 · −1.42)."""
    from survae.bench import peers as bp

    if lib != "survae":
        pytest.importorskip(bp.PEERS[lib])
    torch.manual_seed(0)
    module, log_prob = bp.BUILDERS[lib]("glow")
    module.train()
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == GLOW_PARAMS[lib]
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lp = log_prob(x)
    assert lp.shape == (4,) and torch.isfinite(lp).all()
    reference = (-0.5 * (x.square() + math.log(2 * math.pi))).flatten(1).sum(1)
    assert (lp - reference).abs().max() < 40.0, (lp, reference)


def test_peer_glow_timing_runs_in_every_installed_library(monkeypatch):
    from survae.bench import peers as bp

    if bp.installed("zuko"):  # no image layers: no Glow
        assert bp.BUILDERS["zuko"]("glow") is None
    monkeypatch.setitem(bp.PEER_MODELS, "glow", (2, (1, 28, 28)))
    threads = torch.get_num_threads()
    try:
        report = bp.run_peers(["glow"], rounds=1, steps=1, warmup=0, isolate=False)
    finally:
        torch.set_num_threads(threads)
    entry = report["glow"]
    libs = ["survae"] + [lib for lib in ("nflows", "normflows", "FrEIA") if bp.installed(lib)]
    assert entry["batch"] == 2 and sorted(entry["ms"]) == sorted(libs)
    assert {lib: entry["params"][lib] for lib in libs} == {lib: GLOW_PARAMS[lib] for lib in libs}
    assert all(len(v) == 1 and v[0] > 0 for v in entry["ms"].values())
    md = bp.peers_markdown(report)
    assert "| `glow` | survae | 218,624 |" in md
    if len(libs) > 1:  # the differing counts are noted under the table, with the reason
        note = next(line for line in md.splitlines() if line.startswith("`glow`: parameters"))
        assert f"{libs[1]} {GLOW_PARAMS[libs[1]] - 218_624:+,}" in note
        assert bp.PEER_NOTES["glow"] in note


def test_survae_peer_models_run_with_the_speed_preset(monkeypatch):
    """survae's side of --peers is survae as a run uses it: the auto preset, planned as the
    paper toy run (compiled), channels-last Glow networks; ``off`` is the bare model."""
    from survae.bench import peer_models
    from survae.runtime import speed

    monkeypatch.setattr(speed, "has_compiler", lambda: True)
    toy, call = peer_models._survae("toy")
    assert toy._compiled_call_impl is not None and call is toy  # flow(x) goes through it
    bare, _ = peer_models._survae("toy", preset="off")
    assert bare._compiled_call_impl is None
    torch.manual_seed(0)
    glow, _ = peer_models._survae("glow")
    torch.manual_seed(0)
    plain, _ = peer_models._survae("glow", preset="off")
    convs = [m for m in glow.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = torch.randn(2, *peer_models.PEER_MODELS["glow"][1])
    torch.testing.assert_close(glow(x), plain(x), rtol=1e-5, atol=1e-3)
