"""ddpmkit on a GPU: training and sampling speed of the CIFAR-10 DDPM U-Net, against diffusers.

Four parts, each a function that returns a dict (tests call them on CPU with tiny sizes):

a. :func:`bench_training` - training-step images/s (forward + backward + AdamW) of ddpmkit's
   U-Net (DDPM CIFAR-10, Ho et al. 2020 app. B, 35.7M parameters) and diffusers' UNet2DModel of
   the same architecture (``throughput.DiffusersUNet``), timed alternately ours / theirs in each
   mode of :data:`TRAIN_MODES`; the ratio ours/diffusers is the median of back-to-back pair
   ratios (``throughput.paired_ratio``); peak CUDA memory per model.
b. :func:`bench_sampling` - N samples with DPM-Solver++ 2M, 20 steps (``ddpmkit.sample``) in fp32,
   bf16 autocast and bf16 with ``ddpmkit.nets.compile_for_inference``: seconds, images/s, and the
   time spent outside the network per step, measured by running the same loop with the network
   replaced by a trivial callable (:class:`NullNet`).
c. :func:`bench_fp16_scaler` - fp16 autocast + GradScaler training of the U-Net on random data
   for 200 steps: does any loss or weight become NaN/inf? (CUDA only.)
d. :func:`sync_check` - each sampler's loop under ``torch.cuda.set_sync_debug_mode("error")``:
   did it raise, and where? And its syncs counted ("warn" mode) at 5 and 20 steps: equal counts
   mean none inside the loop (an end-of-run read is allowed). (CUDA only.)

    python benchmarks/gpu_bench.py --device cuda --out $OUT      # about 5 minutes on an H100
    .venv/bin/python benchmarks/gpu_bench.py --device cpu --quick --out /tmp/gb   # < 1 minute
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import sync  # noqa: E402
from throughput import (build_pair, cuda_peak_memory, make_batch, n_params,  # noqa: E402
                        paired_ratio, time_alternating, training_step)

import ddpmkit as dk  # noqa: E402  (throughput puts the repository root on sys.path)
from ddpmkit.nets import UNet, UNetConfig  # noqa: E402
from ddpmkit.training.distributed import set_tf32  # noqa: E402

QUICK_CONFIG = UNetConfig(image_size=8, in_channels=3, out_channels=3, channels=8, channel_mult=(1, 2),
                          num_res_blocks=1, attention_resolutions=(4,), num_heads=2, dropout=0.0, norm_groups=4)
SYNC_SAMPLERS = ("ddim", "ddpm", "euler", "heun", "dpmpp2m")


@dataclass(frozen=True)
class TrainMode:
    """One training configuration: TF32 on CUDA, bf16 autocast, memory layout, torch.compile (ours)."""

    name: str
    tf32: bool = False
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    cuda_only: bool = False


TRAIN_MODES = (
    TrainMode("fp32"),
    TrainMode("tf32", tf32=True, cuda_only=True),
    TrainMode("bf16", tf32=True, amp=True),
    TrainMode("bf16_channels_last", tf32=True, amp=True, channels_last=True),
    TrainMode("bf16_channels_last_compile", tf32=True, amp=True, channels_last=True, compile=True),
)


def cifar_config(quick: bool) -> UNetConfig:
    """The DDPM CIFAR-10 U-Net (dropout 0: timing only), or a tiny stand-in with ``quick``."""
    return QUICK_CONFIG if quick else UNetConfig.ddpm_cifar10(dropout=0.0)


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


@contextmanager
def _tf32(device: str, enabled: bool) -> Iterator[None]:
    """TF32 for matmuls and cuDNN set by ``ddpmkit``'s ``set_tf32`` (CUDA only), restored after."""
    if not device.startswith("cuda"):
        yield
        return
    try:   # newer torch refuses the legacy getters once its fp32_precision API was used
        before: tuple[bool, bool] | None = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        before = None
    set_tf32(device, enabled)
    try:
        yield
    finally:
        if before is not None:
            set_tf32(device, before[0])
            torch.backends.cudnn.allow_tf32 = before[1]


# ---------------------------------------------------------------------------- a. training
def bench_training(cfg: UNetConfig, batch: int, device: str = "cpu", reps: int = 5, warmup: int = 2,
                   modes: tuple[TrainMode, ...] = TRAIN_MODES, compile_ok: bool = True) -> dict[str, Any]:
    """Training-step images/s of ours and diffusers' twin in each mode, timed alternately.
    In the compile mode only ours is compiled; its ratio is over diffusers eager in that mode."""
    cuda = device.startswith("cuda")
    rows: list[dict[str, Any]] = []
    params: dict[str, int] = {}
    for mode in modes:
        row: dict[str, Any] = {**asdict(mode), "batch": batch, "reps": reps}
        if mode.cuda_only and not cuda:
            rows.append({**row, "note": "skipped: cuda only"})
            continue
        if mode.compile and not compile_ok:
            rows.append({**row, "note": "skipped: compile off (--quick on cpu or --no-compile)"})
            continue
        with _tf32(device, mode.tf32):
            models = build_pair(cfg, device, channels_last=mode.channels_last)
            params = params or {k: n_params(m) for k, m in models.items()}
            if mode.compile:
                models["ours"] = torch.compile(models["ours"])
            x, t, target = make_batch(cfg, batch, device, channels_last=mode.channels_last)
            fns = {k: training_step(m, x, t, target, amp=mode.amp) for k, m in models.items()}
            try:
                for _ in range(warmup):
                    for fn in fns.values():
                        fn()
            except Exception as exc:  # noqa: BLE001  (compile can fail in many ways: say how, go on)
                rows.append({**row, "note": f"skipped: warm-up failed: {_first_line(exc)}"})
                del models, fns
                _free(device)
                continue
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times = time_alternating(fns, reps, device, warmup=0)
            rate = {k: batch / statistics.median(v) for k, v in times.items()}
            row.update(images_per_s=rate, ratio_ours_over_diffusers=paired_ratio(times["diffusers"], times["ours"]),
                       seconds=times, peak_step_mib=None, max_allocated_mib=None)
            if cuda:
                row["max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
                row["peak_step_mib"] = {k: cuda_peak_memory(fn) for k, fn in fns.items()}
            if mode.compile:
                row["note"] = "ours compiled (torch.compile default mode), diffusers eager"
            rows.append(row)
            print(f"  train {mode.name:28s} ours {rate['ours']:9.1f} img/s  diffusers {rate['diffusers']:9.1f} img/s"
                  f"  ratio {row['ratio_ours_over_diffusers']:.3f}", flush=True)
            del models, fns, x, t, target
            _free(device)
    return {"config": "quick" if cfg == QUICK_CONFIG else "cifar10-ddpm", "params": params, "batch": batch,
            "modes": rows,
            "peak_memory": "peak_step_mib: max_memory_allocated during one step minus the memory allocated "
                           "before it (weights, AdamW state of both models); max_allocated_mib: peak over the mode's "
                           "timed steps, both models resident" if cuda else "cpu: not measured (None)"}


# ---------------------------------------------------------------------------- b. sampling
class NullNet:
    """A network stand-in of the same output shape whose cost is one small kernel; it counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        self.calls += 1
        return torch.zeros_like(x)


def _sample_batch(process: dk.GaussianDiffusion, model: Callable[..., torch.Tensor], shape: tuple[int, ...],
                  steps: int, seed: int, device: str, amp: bool) -> torch.Tensor:
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if amp else nullcontext()
    with torch.no_grad(), autocast:
        return dk.sample(process, model, shape, sampler="dpmpp2m", steps=steps, seed=seed, device=device,
                         progress=False)


def _compiler() -> tuple[Callable[[torch.nn.Module, Any], torch.nn.Module], str]:
    """``ddpmkit.nets.compile_for_inference`` where it exists, else plain ``torch.compile``."""
    from ddpmkit import nets

    fn = getattr(nets, "compile_for_inference", None)
    if fn is not None:
        return fn, "ddpmkit.nets.compile_for_inference"
    return (lambda net, device: torch.compile(net)), "torch.compile (no compile_for_inference in ddpmkit.nets)"


def bench_sampling(cfg: UNetConfig, n: int, batch: int, device: str = "cpu", steps: int = 20,
                   n_other: int | None = None, compile_ok: bool = True, time_budget_s: float | None = None,
                   overhead_reps: int = 3) -> dict[str, Any]:
    """DPM-Solver++ 2M sampling of ``n`` images (``n_other`` for the fp32 and bf16 eager rows) in
    batches of ``batch``; each variant stops early past ``time_budget_s`` and says so."""
    process = dk.GaussianDiffusion(dk.Schedule.linear(1000))
    torch.manual_seed(0)
    net = UNet(replace(cfg, zero_init=False)).to(device).eval()   # zero_init: eps = 0 exactly, too easy
    shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    compile_fn, compile_name = _compiler()
    variants = [("fp32", False, False, n_other or n), ("bf16", True, False, n_other or n), ("bf16_compiled", True, True, n)]
    rows, first = [], {}
    with _tf32(device, True):
        for name, amp, compiled, count in variants:
            row: dict[str, Any] = {"variant": name, "bf16": amp, "compiled": compiled, "tf32": device.startswith("cuda"),
                                   "batch": batch, "steps": steps, "n_requested": count}
            if compiled and not compile_ok:
                rows.append({**row, "note": "skipped: compile off (--quick on cpu or --no-compile)"})
                continue
            try:
                model = compile_fn(net, device) if compiled else net
                for _ in range(2 if compiled else 1):   # same shapes: CUDA graphs record on the 2nd call
                    _sample_batch(process, model, shape, 3, 10_000, device, amp)
            except Exception as exc:  # noqa: BLE001
                rows.append({**row, "note": f"skipped: warm-up failed: {_first_line(exc)}"})
                continue
            batch_s: list[float] = []
            sync(device)
            start = time.perf_counter()
            for i in range(-(-count // batch)):
                t0 = time.perf_counter()
                x = _sample_batch(process, model, shape, steps, i, device, amp)
                if i == 0:
                    first[name] = x.float().clone()
                sync(device)
                batch_s.append(time.perf_counter() - t0)
                if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                    break
            total = time.perf_counter() - start
            done = len(batch_s) * batch
            null = NullNet()
            null_s = []
            for _ in range(overhead_reps):
                sync(device)
                t0 = time.perf_counter()
                _sample_batch(process, null, shape, steps, 0, device, amp)
                sync(device)
                null_s.append(time.perf_counter() - t0)
            nfe = null.calls // overhead_reps
            row.update(n_done=done, complete=done >= count, seconds=total, images_per_s=done / total,
                       median_batch_s=statistics.median(batch_s), nfe_per_batch=nfe,
                       finite=bool(torch.isfinite(x).all()),
                       outside_network_ms_per_step=1e3 * statistics.median(null_s) / nfe,
                       outside_network_fraction=statistics.median(null_s) / statistics.median(batch_s),
                       seconds_for_50k_at_this_rate=50_000 * total / done)
            if compiled:
                row["compiler"] = compile_name
                if "bf16" in first:
                    row["max_abs_diff_vs_bf16_eager_first_batch"] = float((first[name] - first["bf16"]).abs().max())
            rows.append(row)
            print(f"  sample {name:14s} {done:6d} images in {total:8.2f} s = {row['images_per_s']:9.1f} img/s; "
                  f"outside the network {100 * row['outside_network_fraction']:.1f}%", flush=True)
            _free(device)
    return {"sampler": "dpmpp2m", "steps": steps, "schedule": "linear(1000)", "shape": list(shape),
            "variants": rows, "goal": "50,000 samples in under 60 s on an H100 (bf16, compiled); under 5% outside the network",
            "outside_network_method": "the same sample() loop, same batch, autocast and steps, timed with the network "
                                      "replaced by NullNet (returns zeros_like(x), one kernel): its wall time per "
                                      "network call is the sampler's own cost per step (host bookkeeping, launches, "
                                      "the solver's tensor arithmetic); outside_network_fraction = that loop's time / "
                                      "the real loop's (median batch). An upper bound where host work overlaps GPU work."}


# ---------------------------------------------------------------------------- c. fp16 + GradScaler
def bench_fp16_scaler(cfg: UNetConfig, device: str = "cpu", steps: int = 200, batch: int = 32,
                      allow_cpu: bool = False) -> dict[str, Any]:
    """Train ours with fp16 autocast and a GradScaler on random images in [-1, 1] (DDPM's simple
    loss, AdamW 2e-4) for ``steps`` steps; report non-finite losses and weights and the scale."""
    if not device.startswith("cuda") and not allow_cpu:
        return {"status": "skipped: cuda only"}
    torch.manual_seed(0)
    process = dk.GaussianDiffusion(dk.Schedule.linear(1000))
    model = UNet(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    dev_type = torch.device(device).type
    scaler = torch.amp.GradScaler(dev_type)
    g = torch.Generator(device=device).manual_seed(0)
    if dev_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    losses, scales = [], []
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        x0 = torch.rand(shape, generator=g, device=device) * 2 - 1
        with torch.autocast(dev_type, dtype=torch.float16):
            loss = process.loss(model, x0).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach().float())
        scales.append(scaler.get_scale())
    sync(device)
    seconds = time.perf_counter() - start
    loss_t = torch.stack(losses).cpu()
    params_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    bad = int((~torch.isfinite(loss_t)).sum())
    return {"status": "ran", "steps": steps, "batch": batch, "nonfinite_losses": bad, "params_finite": params_finite,
            "first_loss": float(loss_t[0]), "last_loss": float(loss_t[-1]), "final_scale": float(scales[-1]),
            "scale_decreases": sum(b < a for a, b in zip(scales, scales[1:])), "seconds": seconds,
            "passed": params_finite and bad == 0,
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if dev_type == "cuda" else None}


# ---------------------------------------------------------------------------- d. sync check
def _sync_debug_error() -> Any:
    from ddpmkit.sampling.loop import cuda_sync_debug

    return cuda_sync_debug("cuda", "error")


_LIBRARY_DIR = Path(dk.__file__).resolve().parent


def _in_library(filename: str) -> bool:
    """Whether a traceback frame's file lies inside the installed ddpmkit package itself (decided by
    the package's own directory, not by a substring of the path: a clone in a folder named
    ``ddpmkit`` puts that word in the path of every test and benchmark file too)."""
    return Path(filename).resolve().is_relative_to(_LIBRARY_DIR)


def _where(exc: BaseException) -> str | None:
    """The innermost ddpmkit frame of the traceback, as ``path:line in function``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _in_library(f.filename)]
    if not frames:
        return None
    f = frames[-1]
    return f"{Path(f.filename).name}:{f.lineno} in {f.name}: {f.line}"


def count_syncs(fn: Callable[[], Any]) -> tuple[int, list[str]]:
    """Host syncs during ``fn()`` on CUDA, counted under ``set_sync_debug_mode("warn")`` (one
    warning per synchronizing call), and where they came from (``file:line``, first 5)."""
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    return len(syncs), list(dict.fromkeys(f"{Path(w.filename).name}:{w.lineno}" for w in syncs))[:5]


def sync_check(cfg: UNetConfig, device: str = "cpu", batch: int = 16, steps: tuple[int, int] = (5, 20),
               samplers: tuple[str, ...] = SYNC_SAMPLERS) -> dict[str, Any]:
    """Each sampler's loop under ``set_sync_debug_mode("error")`` (did it raise, where), and its host
    syncs counted at two step counts: a loop free of syncs has the same count at both (the
    end-of-run NaN read, say), a per-step sync makes it grow."""
    if not device.startswith("cuda"):
        return {"status": "skipped: cuda only"}
    process = dk.GaussianDiffusion(dk.Schedule.linear(1000))
    torch.manual_seed(0)
    net = UNet(replace(cfg, zero_init=False)).to(device).eval()
    shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    rows = []
    for name in (s for s in samplers if s in dk.SAMPLERS):
        run = functools.partial(dk.sample, process, net, shape, sampler=name, seed=0, device=device, progress=False)
        run(steps=2)   # warm-up, unguarded
        row: dict[str, Any] = {"sampler": name, "raised": False}
        try:
            with _sync_debug_error():
                run(steps=steps[-1])
        except Exception as exc:  # noqa: BLE001  (the sync error is a RuntimeError; record anything else too)
            row.update(raised=True, error=_first_line(exc), where=_where(exc))
        counts = {n: count_syncs(functools.partial(run, steps=n)) for n in steps}
        row.update(syncs_by_steps={n: c for n, (c, _) in counts.items()}, sync_sites=counts[steps[-1]][1],
                   grows_with_steps=counts[steps[-1]][0] > counts[steps[0]][0])
        rows.append(row)
        print(f"  sync {name:8s} error mode: {'RAISED at ' + str(row.get('where')) if row['raised'] else 'no sync'}; "
              f"syncs at {steps} steps: {list(row['syncs_by_steps'].values())}", flush=True)
    return {"status": "ran", "steps": list(steps), "batch": batch, "samplers": rows,
            "passed": all(not r["raised"] for r in rows), "loops_sync_free": all(not r["grows_with_steps"] for r in rows)}


# ---------------------------------------------------------------------------- profile
def profile_training_kernels(cfg: UNetConfig, batch: int, device: str = "cpu", top: int = 12) -> dict[str, Any]:
    """torch.profiler's top kernels (self device time on CUDA, self CPU time elsewhere) for one
    bf16 channels_last training step of each network, after two warm-up steps."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    x, t, target = make_batch(cfg, batch, device, channels_last=True)
    result: dict[str, Any] = {"batch": batch, "mode": "bf16_channels_last", "time": "self_device" if cuda else "self_cpu"}
    with _tf32(device, True):
        for name, model in build_pair(cfg, device, channels_last=True).items():
            step = training_step(model, x, t, target, amp=True)
            step(), step()
            sync(device)
            with profile(activities=activities) as prof:
                step()
                sync(device)
            key = "self_device_time_total" if cuda else "self_cpu_time_total"
            events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
            events.sort(key=lambda e: -getattr(e, key))
            result[name] = {"total_ms": sum(getattr(e, key) for e in events) / 1e3,
                            "top": [{"name": e.key, "ms": getattr(e, key) / 1e3, "calls": e.count} for e in events[:top]]}
            del model, step
            _free(device)
    return result


# ---------------------------------------------------------------------------- report
def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _training_md(tr: dict[str, Any]) -> list[str]:
    lines = [f"## Training step, batch {tr['batch']} ({tr['config']}, {tr['params'].get('ours', 0) / 1e6:.2f}M parameters)",
             "", "| mode | ours img/s | diffusers img/s | ours/diffusers | ours peak MiB | diffusers peak MiB | note |",
             "|---|---|---|---|---|---|---|"]
    for r in tr["modes"]:
        rate, peak = r.get("images_per_s") or {}, r.get("peak_step_mib") or {}
        lines.append(f"| {r['name']} | {_fmt(rate.get('ours'))} | {_fmt(rate.get('diffusers'))} | "
                     f"{_fmt(r.get('ratio_ours_over_diffusers'), '.3f')} | {_fmt(peak.get('ours'), '.0f')} | "
                     f"{_fmt(peak.get('diffusers'), '.0f')} | {r.get('note', '')} |")
    return lines + ["", f"Peak memory: {tr['peak_memory']}.", ""]


def _sampling_md(s: dict[str, Any]) -> list[str]:
    lines = [f"## Sampling: {s['sampler']}, {s['steps']} steps, batch shape {s['shape']}", "",
             "| variant | images | complete | seconds | img/s | s per 50k | outside network ms/step | outside % | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in s["variants"]:
        frac = r.get("outside_network_fraction")
        lines.append(f"| {r['variant']} | {r.get('n_done', '-')} | {r.get('complete', '-')} | {_fmt(r.get('seconds'), '.2f')} | "
                     f"{_fmt(r.get('images_per_s'))} | {_fmt(r.get('seconds_for_50k_at_this_rate'))} | "
                     f"{_fmt(r.get('outside_network_ms_per_step'), '.3f')} | {_fmt(None if frac is None else 100 * frac)} | "
                     f"{r.get('note', '')} |")
    return lines + ["", f"Goal: {s['goal']}. Outside the network: {s['outside_network_method']}", ""]


def markdown(report: dict[str, Any]) -> str:
    """The results as markdown; parts not (yet) measured are left out."""
    m = report["machine"]
    lines = [f"# ddpmkit on {m['device_name']} ({m['device']})", "", f"`{report['command']}`  ",
             f"torch {m['torch']}, CUDA {m['cuda']}, diffusers {m['diffusers']}", ""]
    for key, part in report.items():
        if isinstance(part, dict) and "error" in part:
            lines += [f"## {key}: FAILED: {part['error']} (at {part['where']})", ""]
    training = report.get("training", {})
    if "modes" in training:
        more = report.get("training_compiled", {}).get("modes", [])
        lines += _training_md({**training, "modes": training["modes"] + more})
    if "variants" in report.get("sampling", {}):
        lines += _sampling_md(report["sampling"])
    f16 = report.get("fp16_scaler")
    if f16 and "status" in f16:
        lines += [f"## fp16 + GradScaler: {f16['status']}" + (
            f", {f16['steps']} steps at batch {f16['batch']}: non-finite losses {f16['nonfinite_losses']}, weights "
            f"finite {f16['params_finite']}, final scale {f16['final_scale']:g}, loss {f16['first_loss']:.3f} -> "
            f"{f16['last_loss']:.3f}" if f16["status"] == "ran" else ""), ""]
    sc = report.get("sync")
    if sc and "status" in sc:
        lines.append(f"## Sampling loops under set_sync_debug_mode('error'): {sc['status']}")
        lines += [f"- {r['sampler']}: " + (f"raised {r['error']} at {r['where']}" if r["raised"] else "no host sync")
                  + f"; syncs per run by steps {r['syncs_by_steps']} at {r['sync_sites']}" for r in sc.get("samplers", [])]
        lines.append("")
    prof = report.get("profile")
    if prof and "batch" in prof:
        lines += [f"## Profile: one {prof['mode']} training step, batch {prof['batch']} ({prof['time']} ms)", "",
                  "| network | kernel | ms | calls |", "|---|---|---|---|"]
        lines += [f"| {k} | {e['name'][:80]} | {e['ms']:.2f} | {e['calls']} |"
                  for k in ("ours", "diffusers") for e in prof[k]["top"]]
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> None:
    """results.json and results.md under ``out`` (called after every part: a run cut short keeps its parts)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "results.md").write_text(markdown(report))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny network and counts (under a minute on a 2-core CPU)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "gpu"))
    p.add_argument("--batch", type=int, default=None, help="training batch (default 128, quick 4)")
    p.add_argument("--reps", type=int, default=None, help="timed A/B pairs per training mode (default 7, quick 2)")
    p.add_argument("--samples", type=int, default=None, help="samples, compiled bf16 (default 50000, quick 8)")
    p.add_argument("--samples-other", type=int, default=None, help="samples, fp32 and bf16 eager (default 5000, quick 8)")
    p.add_argument("--sample-batch", type=int, default=None, help="default 2500, quick 4")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds per sampling variant after which it stops and says so (default 90; none with --quick)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 20, quick 10)")
    p.add_argument("--fp16-steps", type=int, default=200)
    p.add_argument("--fp16-batch", type=int, default=None, help="default 32, quick 2")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--no-profile", action="store_true", help="skip the torch.profiler summary")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: unchanged)")
    args = p.parse_args(argv)
    q = args.quick
    args.batch = args.batch or (4 if q else 128)
    args.reps = args.reps or (2 if q else 7)
    args.steps = args.steps or (10 if q else 20)
    args.samples = args.samples or (8 if q else 50_000)
    args.samples_other = args.samples_other or (8 if q else 5_000)
    args.sample_batch = args.sample_batch or (4 if q else 2_500)
    args.time_budget = args.time_budget or (None if q else 90.0)
    args.fp16_batch = args.fp16_batch or (2 if q else 32)
    args.compile_ok = not args.no_compile and not (q and args.device == "cpu")
    return args


def _part(report: dict[str, Any], key: str, out: Path, fn: Callable[[], dict[str, Any]]) -> None:
    """``report[key] = fn()``, or ``{"error": ...}`` if it raised (one device run must not lose the
    other parts to one failure); results written after each part."""
    print(f"{key}:", flush=True)
    try:
        report[key] = fn()
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        report[key] = {"error": _first_line(exc), "where": _where(exc)}
        report.setdefault("failed_parts", []).append(key)
    write_report(report, out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the four parts (eager training modes first, the compiled one last: compiling is the
    slowest and the likeliest to fail) and write results.json / results.md after each. Exits with
    status 1 after writing when a part failed."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: --device cuda but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import diffusers
    except ImportError as exc:
        raise SystemExit(f"gpu_bench: diffusers is needed for the training comparison ({exc}); carry its wheel") from exc
    cfg, cuda, out, dev = cifar_config(args.quick), args.device == "cuda", Path(args.out), args.device
    report: dict[str, Any] = {"command": " ".join(["python benchmarks/gpu_bench.py",
                                                   *(sys.argv[1:] if argv is None else argv)])}
    report["machine"] = {"device": dev, "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
                         "torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
                         "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "quick": args.quick}
    warmup = 1 if args.quick else 3
    eager, compiled = tuple(m for m in TRAIN_MODES if not m.compile), tuple(m for m in TRAIN_MODES if m.compile)
    _part(report, "training", out, lambda: bench_training(cfg, args.batch, dev, args.reps, warmup, eager))
    _part(report, "sampling", out, lambda: bench_sampling(
        cfg, args.samples, args.sample_batch, dev, args.steps, n_other=args.samples_other, compile_ok=args.compile_ok,
        time_budget_s=args.time_budget, overhead_reps=2 if args.quick else 3))
    _part(report, "fp16_scaler", out, lambda: bench_fp16_scaler(cfg, dev, steps=args.fp16_steps, batch=args.fp16_batch))
    _part(report, "sync", out, lambda: sync_check(cfg, dev))
    if not args.no_profile and cuda:
        _part(report, "profile", out, lambda: profile_training_kernels(cfg, args.batch, dev))
    _part(report, "training_compiled", out,
          lambda: bench_training(cfg, args.batch, dev, args.reps, warmup + 1, compiled, compile_ok=args.compile_ok))
    print("\n" + markdown(report), flush=True)
    if report.get("failed_parts"):
        raise SystemExit(f"gpu_bench: parts failed: {report['failed_parts']} (see results.json)")
    return report


if __name__ == "__main__":
    main()
