"""benchmarks/gpu_bench.py and benchmarks/gpu_check.sh on CPU with tiny sizes, and the test-device
fixtures of conftest.py. Bookkeeping only: no assert on speed. The `device` tests here are the
ones gpu_check.sh runs on the GPU (``pytest --device cuda -m device``)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import DEVICE_ENV, resolve_test_device, sync_debug_error

pytest.importorskip("diffusers")
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu_bench.py")
gb = importlib.util.module_from_spec(_spec)
sys.modules["gpu_bench"] = gb
_spec.loader.exec_module(gb)

import ddpmkit as dk  # noqa: E402
from ddpmkit.nets import UNet  # noqa: E402

TINY = gb.QUICK_CONFIG


def _finite_positive(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One ``gpu_bench.py --device cpu --quick`` run (a few seconds), shared by the tests below."""
    out = tmp_path_factory.mktemp("gpu_bench")
    threads = torch.get_num_threads()
    try:
        report = gb.main(["--device", "cpu", "--quick", "--out", str(out), "--fp16-steps", "2", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    return report, out


def test_quick_run_trains_both_networks_in_each_cpu_mode(quick_report):
    report = quick_report[0]
    assert "failed_parts" not in report
    training = {**report["training"], "modes": report["training"]["modes"] + report["training_compiled"]["modes"]}
    assert [r["name"] for r in training["modes"]] == [m.name for m in gb.TRAIN_MODES]
    assert training["params"]["ours"] == training["params"]["diffusers"] > 0      # the same architecture
    ran = {r["name"]: r for r in training["modes"] if "images_per_s" in r}
    assert set(ran) == {"fp32", "bf16", "bf16_channels_last"}
    for row in ran.values():
        assert all(_finite_positive(v) for v in row["images_per_s"].values())
        assert set(row["images_per_s"]) == {"ours", "diffusers"}
        assert len(row["seconds"]["ours"]) == len(row["seconds"]["diffusers"]) == 2     # --quick: 2 pairs
        assert row["ratio_ours_over_diffusers"] == gb.paired_ratio(row["seconds"]["diffusers"], row["seconds"]["ours"])
        assert row["images_per_s"]["ours"] == pytest.approx(4 / statistics.median(row["seconds"]["ours"]))   # batch 4
        assert row["peak_step_mib"] is None                       # cpu: not measured
    skipped = {r["name"]: r["note"] for r in training["modes"] if "images_per_s" not in r}
    assert skipped["tf32"] == "skipped: cuda only" and skipped["bf16_channels_last_compile"].startswith("skipped")


def test_quick_run_samples_and_measures_the_sampler_overhead(quick_report):
    sampling = quick_report[0]["sampling"]
    assert sampling["sampler"] == "dpmpp2m" and sampling["steps"] == 10 and sampling["shape"] == [4, 3, 8, 8]
    rows = {r["variant"]: r for r in sampling["variants"]}
    assert rows["bf16_compiled"]["note"].startswith("skipped")
    for name in ("fp32", "bf16"):
        row = rows[name]
        assert row["n_done"] == 8 and row["complete"] and row["finite"]
        assert row["nfe_per_batch"] == 10                          # DPM-Solver++ 2M: one call per step
        for key in ("seconds", "images_per_s", "median_batch_s", "outside_network_ms_per_step",
                    "outside_network_fraction", "seconds_for_50k_at_this_rate"):
            assert _finite_positive(row[key]), key
        assert row["images_per_s"] == pytest.approx(8 / row["seconds"])
    assert "NullNet" in sampling["outside_network_method"]


def test_quick_run_writes_json_and_markdown(quick_report):
    report, out = quick_report
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) >= {"command", "machine", "training", "sampling", "fp16_scaler", "sync"}
    assert saved["fp16_scaler"] == {"status": "skipped: cuda only"} and saved["sync"] == {"status": "skipped: cuda only"}
    assert saved["training"]["modes"][0]["images_per_s"] == report["training"]["modes"][0]["images_per_s"]
    text = (out / "results.md").read_text()
    for row in report["training"]["modes"]:
        assert f"| {row['name']} |" in text
    fp32 = next(r for r in report["training"]["modes"] if r["name"] == "fp32")
    assert f"{fp32['ratio_ours_over_diffusers']:.3f}" in text
    assert "| bf16_compiled |" in text and "fp16 + GradScaler: skipped: cuda only" in text


def test_sampling_stops_at_its_time_budget_and_says_so():
    rows = gb.bench_sampling(TINY, n=6, batch=2, steps=2, n_other=6, compile_ok=False, time_budget_s=0.0,
                             overhead_reps=1)["variants"]
    for row in rows[:2]:
        assert row["n_done"] == 2 and row["complete"] is False and row["n_requested"] == 6
        assert row["seconds_for_50k_at_this_rate"] == pytest.approx(50_000 * row["seconds"] / 2)


def test_fp16_scaler_trains_without_nan_and_is_cuda_only_by_default():
    assert gb.bench_fp16_scaler(TINY, "cpu") == {"status": "skipped: cuda only"}
    row = gb.bench_fp16_scaler(TINY, "cpu", steps=3, batch=2, allow_cpu=True)
    assert row["status"] == "ran" and row["steps"] == 3 and row["passed"]
    assert row["nonfinite_losses"] == 0 and row["params_finite"]
    assert _finite_positive(row["first_loss"]) and _finite_positive(row["final_scale"])


def test_a_failing_part_is_recorded_and_the_others_still_written(tmp_path):
    report = {"command": "x", "machine": {"device": "cpu", "device_name": "cpu", "torch": "t", "cuda": None,
                                          "diffusers": "d"}}
    def fails() -> dict:
        raise ValueError("broken part")

    gb._part(report, "sampling", tmp_path, fails)
    gb._part(report, "sync", tmp_path, lambda: gb.sync_check(TINY, "cpu"))
    assert report["failed_parts"] == ["sampling"]
    assert report["sampling"] == {"error": "ValueError: broken part", "where": None}    # no ddpmkit frame
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["sync"] == {"status": "skipped: cuda only"} and saved["failed_parts"] == ["sampling"]
    assert "## sampling: FAILED: ValueError" in (tmp_path / "results.md").read_text()


def test_sync_check_names_the_ddpmkit_frame_that_raised():
    assert gb.sync_check(TINY, "cpu") == {"status": "skipped: cuda only"}
    with pytest.raises(ValueError) as info:
        dk.sample(dk.GaussianDiffusion(dk.Schedule.linear(10)), UNet(TINY), (1, 3, 8, 8), sampler="nope", progress=False)
    where = gb._where(info.value)
    assert where is not None and ".py:" in where and "raise ValueError" in where
    assert gb._where(RuntimeError("not from ddpmkit")) is None


def test_null_net_counts_calls_and_keeps_the_shape():
    null = gb.NullNet()
    x = torch.randn(2, 3, 4, 4)
    out = null(x, torch.zeros(2))
    assert null.calls == 1 and out.shape == x.shape and not out.any()


def test_profile_lists_the_top_ops_of_both_networks():
    prof = gb.profile_training_kernels(TINY, 2, "cpu", top=3)
    for name in ("ours", "diffusers"):
        assert len(prof[name]["top"]) == 3 and _finite_positive(prof[name]["total_ms"])
        assert prof[name]["top"][0]["ms"] >= prof[name]["top"][-1]["ms"]


# ---------------------------------------------------------------------------- conftest's device fixtures
def test_device_option_then_environment_then_cpu():
    assert resolve_test_device(None, {}) == "cpu"
    assert resolve_test_device(None, {DEVICE_ENV: "cuda"}) == "cuda"
    assert resolve_test_device("cuda:1", {DEVICE_ENV: "cpu"}) == "cuda:1"


def test_sync_guard_is_a_no_op_off_cuda(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("touched torch.cuda on cpu")

    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", boom)
    with sync_debug_error("cpu"):
        torch.ones(2).sum().item()        # a host read: allowed off CUDA


def test_sync_guard_on_the_test_device(device, sync_guard, request):
    """On CUDA: a host read inside the guard raises, and the previous mode comes back after."""
    assert request.node.get_closest_marker("device") is not None      # `-m device` selects this test
    assert isinstance(device, torch.device)
    if device.type != "cuda":
        with sync_guard():
            torch.ones(2).sum().item()
        return
    before = torch.cuda.get_sync_debug_mode()
    with pytest.raises(RuntimeError):
        with sync_guard():
            assert torch.cuda.get_sync_debug_mode() == 2
            torch.ones(2, device=device).sum().item()
    assert torch.cuda.get_sync_debug_mode() == before


@pytest.mark.filterwarnings("ignore:grid=:UserWarning")      # a short uniform grid's start: not this test's point
@pytest.mark.parametrize("sampler", ["ddim", "dpmpp2m"])
def test_sampling_loop_syncs_do_not_grow_with_steps_on_the_test_device(device, sampler):
    """On the test device (CUDA in gpu_check.sh): the host syncs of a sampling run, counted by
    ``set_sync_debug_mode("warn")``, are the same at 2 and 6 steps (none inside the loop); on any
    device the same seed gives the same finite samples on that device."""
    process = dk.GaussianDiffusion(dk.Schedule.linear(100))
    torch.manual_seed(0)
    net = UNet(TINY).to(device).eval()

    def run(steps: int) -> torch.Tensor:
        return dk.sample(process, net, (2, 3, 8, 8), sampler=sampler, steps=steps, seed=1, device=device, progress=False)

    run(2)   # warm-up
    if device.type == "cuda":
        counts = [gb.count_syncs(lambda: run(steps))[0] for steps in (2, 6)]
        assert counts[0] == counts[1], f"host syncs at 2 and 6 steps: {counts}"
    x, again = run(5), run(5)
    assert x.device.type == device.type and torch.isfinite(x).all()
    assert torch.equal(x, again)


# ---------------------------------------------------------------------------- the shell script
def test_gpu_check_script_refuses_an_unknown_device(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "tpu"],
                         env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "--device must be cuda or cpu" in run.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DDPMKIT_GPU_CHECK") == "1", reason="already inside gpu_check.sh")
def test_gpu_check_script_runs_on_cpu_quick(tmp_path):
    # generous limits: under `pytest -n 2` the other worker keeps this 2-core machine busy
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "TEST_TIMEOUT": "300"}
    env.pop(DEVICE_ENV, None)
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "tests: passed" in log and "bench: done" in log and "exit status 0" in log
    assert "torch " + torch.__version__ in log
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]["quick"] and results["machine"]["device"] == "cpu"
    assert (tmp_path / "results.md").read_text().startswith("# ddpmkit on")
    assert 'tests="' in (tmp_path / "tests.xml").read_text()
