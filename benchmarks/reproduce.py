"""Reproduce the orderings of DDPM Table 2, improved-DDPM Tables 1-2, DDIM Table 1 and DPM-Solver++
on the 8x8 digits, on one CPU thread, with error bars.

    python benchmarks/reproduce.py            # the full run (budget: 45 minutes on one thread)
    python benchmarks/reproduce.py --quick    # every code path in a few minutes (runs/reproduce-quick/)

Each configuration is the ``digits`` preset with only the diffusion fields of its paper row
changed, trained for ``--train-steps`` steps (fewer than the preset: a compute budget). Trained
runs are cached under ``runs/reproduce/<name>-<config hash>/``; a re-run loads them (``train(...,
resume=True)``) and only evaluates. Measured per model:

- bits/dim by the full variational bound (all T terms, the 17-level discretized decoder) on the
  first ``--bpd-examples`` examples of the test split, mean +- standard error over examples;
  comparisons use paired per-example differences (same examples, same noise draws);
- FD-proxy: the Frechet distance in the committed digit classifier's features between
  ``--num-samples`` samples and the train split, beside its floor (the test split's first
  ``--num-samples`` images against the train split), +- the bootstrap standard deviation over
  samples; comparisons use paired bootstrap differences (every row starts from the same noise).

The sampler sweep (DDIM Table 1 and DPM-Solver++) runs on the linear-schedule L_simple model,
the configuration DDIM took from DDPM. Writes ``--json``, ``--doc`` and ``--plot``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (ROOT, QualityRunner, RunCache, code_info, fd_cell, machine_info, minutes,  # noqa: E402
                    paired_bpd, paired_fd)
from ddpmkit.training.config import TrainConfig, apply_overrides, load_config  # noqa: E402
from ddpmkit.data import load_dataset  # noqa: E402
from ddpmkit.core.diffusion import GaussianDiffusion  # noqa: E402
from ddpmkit.evaluation.evaluate import plot_quality  # noqa: E402
from ddpmkit.likelihood.bound import vlb_bpd  # noqa: E402
from ddpmkit.training.train import TrainingDiverged, train  # noqa: E402


@dataclass(frozen=True)
class ModelSpec:
    """One trained configuration: the diffusion fields its paper row sets."""

    name: str
    label: str
    schedule: str
    prediction: str
    variance: str
    objective: str
    timestep_sampler: str = "uniform"

    def overrides(self) -> list[str]:
        return [f"diffusion.{k}={getattr(self, k)}" for k in
                ("schedule", "prediction", "variance", "objective", "timestep_sampler")]


MODELS = (
    ModelSpec("linear-simple", "linear, eps, L_simple, fixed variance", "linear", "eps", "fixed_small", "simple"),
    ModelSpec("linear-x0-vlb", "linear, mean (x0) prediction, true bound L_vlb, fixed variance", "linear", "x0",
              "fixed_small", "vlb"),
    ModelSpec("cosine-simple", "cosine, eps, L_simple, fixed variance", "cosine", "eps", "fixed_small", "simple"),
    ModelSpec("cosine-hybrid", "cosine, eps, L_hybrid, learned range", "cosine", "eps", "learned_range", "hybrid"),
    ModelSpec("cosine-vlb", "cosine, eps, L_vlb, learned range, importance-sampled t", "cosine", "eps",
              "learned_range", "vlb", "importance"),
    ModelSpec("linear-hybrid", "linear, eps, L_hybrid, learned range", "linear", "eps", "learned_range", "hybrid"),
)
SWEEP_MODEL = "linear-simple"
# DDIM Table 1's rows: the name, the sampler, its parameters and the variance of the process it runs on.
SWEEP_ROWS = {
    "ddim-eta0": ("ddim", {"eta": 0.0}, "fixed_small"),
    "ddim-eta0.5": ("ddim", {"eta": 0.5}, "fixed_small"),
    "ddim-eta1": ("ddim", {"eta": 1.0}, "fixed_small"),
    "ddpm-large": ("ddpm", {}, "fixed_large"),
}
SKIP = "uniform"   # DDIM's sub-sequence (0, c, 2c, ...) for every respaced DDIM-table row


FULL = {"train_steps": 800, "bpd_examples": 64, "num_samples": 450, "model_steps": 100, "sweep_steps": "10,20,50,100",
        "bootstrap": 200, "runs": "runs/reproduce", "json": "benchmarks/out/reproduce.json",
        "doc": "docs/REPRODUCTION.md", "plot": "docs/reproduction_samplers.png"}
QUICK = {**FULL, "train_steps": 30, "bpd_examples": 4, "num_samples": 60, "model_steps": 10, "sweep_steps": "5,10",
         "bootstrap": 20, "runs": "runs/reproduce-quick", "json": "runs/reproduce-quick/reproduce.json",
         "doc": "runs/reproduce-quick/REPRODUCTION.md", "plot": "runs/reproduce-quick/reproduction_samplers.png"}
QUICK_OVERRIDES = ["diffusion.T=100", "network.channels=16", "network.num_res_blocks=1", "optim.warmup=5"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_OVERRIDES}, few steps and samples")
    p.add_argument("--models", default="linear-simple,linear-x0-vlb,cosine-simple,cosine-hybrid,cosine-vlb",
                   help=f"comma-separated, from {[m.name for m in MODELS]}")
    p.add_argument("--train-steps", type=int, help=f"training steps per model ({FULL['train_steps']})")
    p.add_argument("--bpd-examples", type=int, help=f"test examples for the bound ({FULL['bpd_examples']})")
    p.add_argument("--num-samples", type=int, help=f"samples per FD row ({FULL['num_samples']})")
    p.add_argument("--model-steps", type=int, help=f"ancestral steps for the per-model FD ({FULL['model_steps']})")
    p.add_argument("--sweep-steps", help=f"DDIM-table step counts ({FULL['sweep_steps']})")
    p.add_argument("--full-rows", default="ddim-eta0,ddpm-large",
                   help="DDIM-table rows that also run all T steps (the expensive ones)")
    p.add_argument("--extra-seeds", default="1,2", help="sampling seeds repeated for the rows of <= 20 steps")
    p.add_argument("--bootstrap", type=int, help=f"bootstrap resamples per FD ({FULL['bootstrap']})")
    for name in ("runs", "json", "doc", "plot"):
        p.add_argument(f"--{name}", help=f"({FULL[name]}; under {QUICK['runs']}/ with --quick)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--render-only", action="store_true", help="rewrite --doc and --plot from --json, no compute")
    a = p.parse_args(argv)
    for key, value in (QUICK if a.quick else FULL).items():
        if getattr(a, key) is None:
            setattr(a, key, str(ROOT / value) if key in ("runs", "json", "doc", "plot") else value)
    a.models = [m for m in a.models.split(",") if m]
    unknown = set(a.models) - {m.name for m in MODELS}
    if unknown or SWEEP_MODEL not in a.models:
        p.error(f"--models must name models of {[m.name for m in MODELS]} including {SWEEP_MODEL!r}, got {a.models}")
    a.sweep_steps = [int(s) for s in str(a.sweep_steps).split(",") if s]
    a.full_rows = [r for r in a.full_rows.split(",") if r]
    if set(a.full_rows) - set(SWEEP_ROWS):
        p.error(f"--full-rows must name rows of {list(SWEEP_ROWS)}, got {a.full_rows}")
    a.extra_seeds = [int(s) for s in a.extra_seeds.split(",") if s]
    return a


# ------------------------------------------------------------------------------ measurements
def model_config(spec: ModelSpec, args: argparse.Namespace, preset: dict[str, Any]) -> TrainConfig:
    """The digits preset (read once per invocation) with the row's diffusion fields, the step
    budget and a cache directory named by a hash of everything that shapes the weights."""
    overrides = [*spec.overrides(), *(QUICK_OVERRIDES if args.quick else []), f"optim.steps={args.train_steps}", "num_threads=1", "sample_every=0",
                 "keep_last=1", f"checkpoint_every={max(1, args.train_steps // 2)}", f"name=reproduce-{spec.name}"]
    config = TrainConfig.from_dict(apply_overrides(preset, overrides))
    shaping = {k: v for k, v in config.to_dict().items() if k in ("data", "network", "diffusion", "optim",
                                                                 "ema_rates", "ema_warmup", "precision", "seed")}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:8]
    return config.replace(out=str(Path(args.runs) / f"{spec.name}-{digest}"))


def train_cached(config: TrainConfig, progress: bool) -> tuple[Any, dict[str, Any]]:
    """Train (or load the cached run of) ``config``; the training time is kept beside the run."""
    record = Path(config.out) / "reproduce_train.json"
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(config, resume=True, progress=progress)
    if result.stopped_by or result.step != config.optim.steps:
        raise SystemExit(f"training of {config.out} stopped by {result.stopped_by} at step {result.step}; "
                         "run again to resume it")
    spent = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    if record.is_file():
        info = json.loads(record.read_text())
        if info.get("step") == result.step:
            return result, {**info, "cached": True}
    info = {"step": result.step, **spent, "final_loss": result.metrics.get("loss")}
    record.write_text(json.dumps(info, indent=1) + "\n")
    return result, {**info, "cached": False}


def bound_bpd(process: GaussianDiffusion, model, x: torch.Tensor, levels: int, progress: bool) -> dict[str, Any]:
    """The full bound per example (vlb_bpd, noise from seed 0), about 500 images per network call."""
    model.eval()
    result = vlb_bpd(process, model, x, levels=levels, generator=torch.Generator().manual_seed(0),
                     t_batch=max(1, 500 // len(x)), progress=progress)
    total = result.total
    return {"mean": float(total.mean()), "sem": float(total.std() / math.sqrt(len(total))),
            "prior": float(result.prior.mean()), "decoder": float(result.decoder.mean()),
            "n": len(total), "per_example": [round(v, 6) for v in total.tolist()]}


def cached_rows(runner: QualityRunner, cache: RunCache, phase: str, process: GaussianDiffusion, model,
            names: dict[str, dict[str, Any]], steps: list[int], seed: int = 0) -> dict[str, Any]:
    """The runner's cached rows of ``names`` x ``steps`` on ``process`` (told apart by its variance)."""
    identity = {"variance": process.variance, "rows": names, "steps": steps, "seed": seed}
    return runner.cached(cache, phase, identity, process, model, names, steps, seed)


def sweep(runner: QualityRunner, cache: RunCache, model, process: GaussianDiffusion, args: argparse.Namespace
          ) -> list[dict[str, Any]]:
    """DDIM Table 1 rows and DPM-Solver++ 2M, on ``model``: seed 0 at every step count, the extra
    seeds at <= 20 steps, and all T steps for ``--full-rows``."""
    processes = {v: GaussianDiffusion(process.schedule, process.prediction, v) for v in ("fixed_small", "fixed_large")}
    plans = [(name, args.sweep_steps) for name in SWEEP_ROWS]
    plans += [(name, [process.T]) for name in args.full_rows]
    plans += [("dpmpp2m", [s for s in args.sweep_steps if s <= 20] or args.sweep_steps[:1])]
    rows: list[dict[str, Any]] = []
    for seed in [0, *args.extra_seeds]:
        for name, steps in plans:
            if seed:
                steps = [s for s in steps if s <= 20 and s < process.T]
            if not steps:
                continue
            if name == "dpmpp2m":
                params, variance = {"sampler": "dpmpp2m"}, "fixed_small"
            else:
                sampler, extra, variance = SWEEP_ROWS[name]
                params = {"sampler": sampler, "grid": SKIP, **extra}
            phase = "sweep full T" if steps == [process.T] else ("sweep" if seed == 0 else "sweep extra seeds")
            rows += cached_rows(runner, cache, phase, processes[variance], model, {name: params}, steps, seed)["rows"]
    return rows


OTHER_SECTIONS = "## Score-based processes on the digits"   # benchmarks/score_family.py's, kept on rewrite


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.render_only:
        report = json.loads(Path(args.json).read_text())
        report["claims"] = claims(report)
        write_outputs(report, Path(args.json), Path(args.doc), Path(args.plot))
        return report
    torch.set_num_threads(1)
    progress = not args.quiet
    started = datetime.now(timezone.utc)
    load_start, code = os.getloadavg(), code_info()
    t0 = time.perf_counter()
    specs = [m for m in MODELS if m.name in args.models]
    base = load_config("digits")
    preset = base.to_dict()
    data_config = base.data
    test, train_set = load_dataset(data_config, "test"), load_dataset(data_config, "train")
    runner = QualityRunner(test, train_set, args.num_samples, args.bootstrap)
    x_bpd = test.x[:args.bpd_examples]

    models: dict[str, dict[str, Any]] = {}
    diverged: dict[str, str] = {}
    sweep_rows: list[dict[str, Any]] = []
    phases: dict[str, dict[str, float]] = {}
    for spec in specs:
        config = model_config(spec, args, preset)
        print(f"== {spec.name}: {config.out} ({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
        try:
            result, train_info = train_cached(config, progress)
        except TrainingDiverged as err:
            if spec.name == SWEEP_MODEL:
                raise
            diverged[spec.name] = str(err)
            print(f"   diverged: {err}", flush=True)
            continue
        model, process = result.ema_model.eval(), result.process
        entry = {"label": spec.label, "overrides": spec.overrides(), "run": str(config.out), "train": train_info,
                 "T": process.T, "config": result.config.to_dict()}
        cache = RunCache(config.out)
        entry["bpd"] = cache.get(f"bpd n={len(x_bpd)} seed=0", "bits/dim", bound_bpd, process, model, x_bpd,
                                 test.levels, progress)
        print(f"   bits/dim {entry['bpd']['mean']:.3f} +- {entry['bpd']['sem']:.3f}", flush=True)
        steps = min(args.model_steps, process.T)
        if spec.name == SWEEP_MODEL:
            sweep_rows = sweep(runner, cache, model, process, args)
        reuse = [r for r in sweep_rows if (r["sampler"], r["steps"], r["seed"]) == ("ddim-eta1", steps, 0)]
        if spec.name == SWEEP_MODEL and reuse:
            # DDIM with eta = 1 is ancestral sampling with the posterior variance on the same
            # sub-sequence, draw for draw (tests/test_evaluate.py checks the equality)
            entry["fd"] = {**reuse[0], "sampler": "ddpm", "same_as": "ddim-eta1"}
        else:
            entry["fd"] = cached_rows(runner, cache, "model FD", process, model, {"ddpm": {"sampler": "ddpm", "grid": SKIP}},
                                  [steps])["rows"][0]
        models[spec.name] = entry
        for phase, cost in [("train", train_info), *cache.costs().items()]:
            total = phases.setdefault(phase, {"wall_s": 0.0, "cpu_s": 0.0})
            total["wall_s"] += cost["wall_s"]
            total["cpu_s"] += cost["cpu_s"]

    T = models[SWEEP_MODEL]["T"]
    report = {
        "command": "python benchmarks/reproduce.py" + (" " + " ".join(argv) if argv else
                                                        (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "code": code,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "total_wall_s": time.perf_counter() - t0,
        "phases": phases,
        "settings": {"train_steps": args.train_steps, "bpd_examples": len(x_bpd), "num_samples": args.num_samples,
                     "model_steps": args.model_steps, "sweep_steps": args.sweep_steps, "full_rows": args.full_rows,
                     "extra_seeds": args.extra_seeds, "bootstrap": args.bootstrap, "T": T, "grid": SKIP,
                     "train_seed": base.seed, "sample_seed": 0, "bound_noise_seed": 0, "quick": args.quick},
        "preset": preset,
        "floor": runner.floor,
        "models": models,
        "diverged": diverged,
        "sweep": sweep_rows,
    }
    sampled = [r for r in sweep_rows] + [m["fd"] for m in models.values() if "same_as" not in m["fd"]]
    report["work"] = {"train_images": sum(m["train"]["step"] for m in models.values()) * base.optim.batch_size,
                      "sample_forwards": int(sum(r["nfe"] * args.num_samples for r in sampled)),
                      "bound_forwards": sum(m["T"] * m["bpd"]["n"] for m in models.values())}
    report["claims"] = claims(report)
    write_outputs(report, Path(args.json), Path(args.doc), Path(args.plot))
    print(f"wrote {args.json}, {args.doc}, {args.plot} in {report['total_wall_s'] / 60:.1f} min", flush=True)
    return report


# ------------------------------------------------------------------------------ the papers' claims
def claims(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each paper ordering as ``lower - higher`` (expected negative), with its error and verdict."""
    m, out = report["models"], []

    def add(paper: str, claim: str, paper_numbers: str, value: tuple[float, float] | None, unit: str) -> None:
        if value is None:
            return
        diff, err = value
        verdict = ("holds" if diff < -2 * err else "reversed" if diff > 2 * err else "not resolved (within 2 SE)")
        out.append({"paper": paper, "claim": claim, "paper_numbers": paper_numbers, "difference": diff,
                    "error": err, "unit": unit, "verdict": verdict})

    def bpd(a: str, b: str):
        return paired_bpd(m[a]["bpd"], m[b]["bpd"]) if a in m and b in m else None

    def fd_model(a: str, b: str):
        return paired_fd(m[a]["fd"], m[b]["fd"]) if a in m and b in m else None

    rows = {(r["sampler"], r["steps"]): r for r in report["sweep"] if r["seed"] == 0}

    def fd_rows(a: tuple[str, int], b: tuple[str, int]):
        return paired_fd(rows[a], rows[b]) if a in rows and b in rows else None

    add("DDPM T2", "L_simple (eps) has better FD than the true bound (mean/x0 prediction)",
        "FID 3.17 vs 13.22", fd_model("linear-simple", "linear-x0-vlb"), "FD")
    add("DDPM T1", "the true bound gives better bits/dim than L_simple", "3.70 vs 3.75 (eps rows)",
        bpd("linear-x0-vlb", "linear-simple"), "bits/dim")
    add("iDDPM T1", "cosine beats linear in bits/dim (L_simple)", "3.68 vs 3.77 (ImageNet-64)",
        bpd("cosine-simple", "linear-simple"), "bits/dim")
    add("iDDPM T1", "cosine beats linear in bits/dim (L_hybrid)", "3.62 vs 3.66 (ImageNet-64)",
        bpd("cosine-hybrid", "linear-hybrid"), "bits/dim")
    add("iDDPM T1", "L_hybrid beats L_simple in bits/dim (linear)", "3.66 vs 3.77 (ImageNet-64)",
        bpd("linear-hybrid", "linear-simple"), "bits/dim")
    add("iDDPM T1", "L_hybrid beats L_simple in bits/dim (cosine)", "3.62 vs 3.68 (ImageNet-64)",
        bpd("cosine-hybrid", "cosine-simple"), "bits/dim")
    add("iDDPM T2", "L_vlb (importance-sampled t) beats L_hybrid in bits/dim", "3.57 vs 3.62 (ImageNet-64)",
        bpd("cosine-vlb", "cosine-hybrid"), "bits/dim")
    add("iDDPM T2", "L_hybrid has better FD than L_vlb", "FID 3.19 vs 11.47 (CIFAR-10)",
        fd_model("cosine-hybrid", "cosine-vlb"), "FD")
    add("iDDPM Fig. 8", "with 100 ancestral steps, learned variances (L_hybrid) beat fixed ones (L_simple)",
        "figure only", fd_model("cosine-hybrid", "cosine-simple"), "FD")
    T = report["settings"]["T"]
    paper_ddim = {10: ("13.36", "41.07", "367.43"), 20: ("6.84", "18.36", "133.37"), 50: ("4.67", "8.01", "32.72"),
                  100: ("4.16", "5.78", "9.99")}
    for s in report["settings"]["sweep_steps"]:
        p0, p1, ps = paper_ddim.get(s, ("-", "-", "-"))
        add("DDIM T1", f"S={s}: eta 0 beats eta 0.5", "eta 0.5 lies between 0 and 1",
            fd_rows(("ddim-eta0", s), ("ddim-eta0.5", s)), "FD")
        add("DDIM T1", f"S={s}: eta 0.5 beats eta 1", "eta 0.5 lies between 0 and 1",
            fd_rows(("ddim-eta0.5", s), ("ddim-eta1", s)), "FD")
        add("DDIM T1", f"S={s}: eta 1 beats ancestral with large variance", f"{p1} vs {ps}",
            fd_rows(("ddim-eta1", s), ("ddpm-large", s)), "FD")
        add("DDIM T1", f"S={s}: eta 0 beats eta 1", f"{p0} vs {p1}", fd_rows(("ddim-eta0", s), ("ddim-eta1", s)), "FD")
    add("DDIM T1", f"S={T}: ancestral with large variance beats eta 0", "3.17 vs 4.04",
        fd_rows(("ddpm-large", T), ("ddim-eta0", T)), "FD")
    add("DDIM T1", f"S={T}: ancestral with large variance beats eta 1", "3.17 vs 4.73",
        fd_rows(("ddpm-large", T), ("ddim-eta1", T)), "FD")
    add("DDIM T1", f"eta 0: {T} steps beat 10", "4.04 vs 13.36", fd_rows(("ddim-eta0", T), ("ddim-eta0", 10)), "FD")
    for s in (10, 20):
        add("DPM-Solver++", f"S={s}: DPM-Solver++ 2M beats DDIM (eta 0)",
            "4.01 vs 13.36 (3M, another model)" if s == 10 else "2.90 vs 6.84 (3M, another model)",
            fd_rows(("dpmpp2m", s), ("ddim-eta0", s)), "FD")
    return out

# ------------------------------------------------------------------------------ the report
PAPER_MODEL = {   # (NLL bits/dim, FID) as the papers report them; "-" where they give none
    "linear-simple": ("3.75 (DDPM T1); 3.77 (iDDPM, IN-64)", "3.17 (DDPM T2)"),
    "linear-x0-vlb": ("- (3.70 for the eps row, DDPM T1)", "13.22 (DDPM T2)"),
    "cosine-simple": ("3.68 (iDDPM, IN-64)", "-"),
    "cosine-hybrid": ("3.62 (iDDPM, IN-64)", "3.19 (iDDPM, CIFAR-10)"),
    "cosine-vlb": ("3.57 (iDDPM, IN-64)", "11.47 (iDDPM, CIFAR-10)"),
    "linear-hybrid": ("3.66 (iDDPM, IN-64)", "-"),
}
PAPER_SWEEP = {"ddim-eta0": "13.36 / 6.84 / 4.67 / 4.16 / 4.04", "ddim-eta0.5": "between eta 0 and eta 1",
               "ddim-eta1": "41.07 / 18.36 / 8.01 / 5.78 / 4.73", "ddpm-large": "367.43 / 133.37 / 32.72 / 9.99 / 3.17",
               "dpmpp2m": "4.01 / 2.90 at 10 / 20 NFE (3M, score-SDE model)"}


def _preset_summary(p: dict[str, Any]) -> str:
    n, o, d = p["network"], p["optim"], p["diffusion"]
    return (f"U-Net with {n.get('channels')} channels x {n.get('channel_mult')}, {n.get('num_res_blocks')} residual "
            f"blocks per level, attention at {n.get('attention_resolutions')}, dropout {n.get('dropout')}; AdamW lr "
            f"{o['lr']}, warm-up {o['warmup']}, batch {o['batch_size']}; EMA {p['ema_rates']}; T = {d['T']}")


def render_markdown(r: dict[str, Any]) -> str:
    """docs/REPRODUCTION.md from the report dict."""
    st, fl, T = r["settings"], r["floor"], r["settings"]["T"]
    mach, n = r["machine"], st["num_samples"]
    cpu_total = sum(v["cpu_s"] for v in r["phases"].values())
    wall_total = sum(v["wall_s"] for v in r["phases"].values())
    lines = [
        "# Reproducing the papers' orderings on the 8x8 digits", "",
        f"Generated by `{r['command']}` on {r['date']}: {mach['cpu']} ({mach['cores']} cores, "
        f"{mach['threads_used']} thread used), torch {mach['torch']}, Python {mach['python']}. All the work took "
        f"**{minutes(cpu_total)} of CPU time on one thread** (training {minutes(r['phases']['train']['cpu_s'])}), "
        f"{minutes(wall_total)} of wall time on a shared machine (load average {r['load_average']['start'][0]:.1f} "
        f"at the start of the last invocation, {r['load_average']['end'][0]:.1f} at its end), as recorded when each "
        f"piece was computed and cached under `runs/reproduce/` (the last invocation: {minutes(r['total_wall_s'])}). "
        "Code: commit "
        f"`{r['code']['commit']}`" + (f" with uncommitted changes in {', '.join(r['code']['modified'])}"
                                        if r['code']['modified'] else "") + ".", "",
        "## What was run", "",
        f"- Data: scikit-learn digits, 1347 train / 450 test, 17 levels. Every model is the `digits` preset "
        f"({_preset_summary(r['models'][SWEEP_MODEL]['config'])}) with only its paper row's diffusion fields changed, trained for "
        f"**{st['train_steps']} steps** (seed {st['train_seed']}; the preset has {r['preset']['optim']['steps']}): "
        "a compute budget.",
        f"- Bits/dim: the full variational bound (all {T} terms, discretized decoder with 17 bins) on the **first "
        f"{st['bpd_examples']} test examples**, mean ± standard error over examples; one noise draw per term "
        f"(seed {st['bound_noise_seed']}). Differences between models are paired (same examples, same noise).",
        f"- FD-proxy: Fréchet distance in the committed digit classifier's 64-d features between **{n} samples** "
        f"(sampling seed {st['sample_seed']}) and the train split; **floor {fl['fd']:.3f}** = the first {n} test "
        f"images against the train split. ± is the standard deviation over {st['bootstrap']} bootstrap resamples "
        "of the samples; differences use paired resamples (all rows start from the same noise).",
        f"- Per-model FD: ancestral sampling (`ddpm` sampler with the model's own variance) on "
        f"{st['model_steps']} respaced steps. Sampler sweep: the `{SWEEP_MODEL}` model (DDIM's setting); "
        f"DDIM-table rows use the DDIM sub-sequence (`grid={st['grid']}`), DPM-Solver++ its default (log-SNR). "
        f"`ddpm-large` is ancestral sampling on the same network with variance beta_t "
        "(`GaussianDiffusion(schedule, prediction, \"fixed_large\")`), DDIM's sigma-hat.",
        f"- Verdicts: a paper ordering **holds** when the difference has the paper's sign and exceeds 2 standard "
        "errors, is **reversed** when it has the other sign by more than 2, and is **not resolved** otherwise.", "",
        "## Main table: DDIM Table 1 and DPM-Solver++ (FD-proxy ± bootstrap sd, lower is better)", "",
    ]
    steps = sorted({row["steps"] for row in r["sweep"]})
    rows = {(row["sampler"], row["steps"]): row for row in r["sweep"] if row["seed"] == 0}
    lines += ["| sampler | " + " | ".join(f"S = {s}" for s in steps) + " | paper (CIFAR-10 FID, S = 10/20/50/100/1000) |",
              "|---|" + "---:|" * len(steps) + "---|"]
    for name in [*SWEEP_ROWS, "dpmpp2m"]:
        lines.append(f"| {name} | " + " | ".join(fd_cell(rows.get((name, s))) for s in steps) + f" | {PAPER_SWEEP[name]} |")
    lines += [f"| *floor (test split)* | {fl['fd']:.3f} |" + " |" * (len(steps) - 1) + " |", "",
              "Cells marked - were not run: all-T rows cost "
              f"{T} network calls per sample, so only `{', '.join(st['full_rows'])}` get them.", "",
              f"![FD-proxy against network evaluations](reproduction_samplers.png)", ""]

    lines += ["## DDPM Table 2 and improved-DDPM Tables 1-2 (per model)", "",
              f"| model | bits/dim (bound, n={st['bpd_examples']}) | of which L_0 (decoder) | FD-proxy (ancestral, "
              f"{st['model_steps']} steps) | precision / recall | paper NLL | paper FID | training (wall / CPU) |",
              "|---|---:|---:|---:|---:|---|---|---:|"]
    for name, m in r["models"].items():
        b, f, t = m["bpd"], m["fd"], m["train"]
        nll, fid = PAPER_MODEL[name]
        lines.append(f"| {name}: {m['label']} | {b['mean']:.3f} ± {b['sem']:.3f} | {b['decoder']:.3f} | {fd_cell(f)} | "
                     f"{f['precision']:.2f} / {f['recall']:.2f} | {nll} | {fid} | {t['step']} steps, "
                     f"{minutes(t['wall_s'])} / {minutes(t['cpu_s'])} |")
    lines += [f"| {name} | diverged: {why} | | | | | | |" for name, why in r.get("diverged", {}).items()]
    lines += ["", "Paper numbers are on CIFAR-10 / ImageNet-64 with Inception FID: compare orderings, not values. "
              f"The `{SWEEP_MODEL}` FD is the `ddim-eta1` cell of the main table at S = {st['model_steps']}: DDIM with "
              "eta = 1 is ancestral sampling with the fixed small variance, draw for draw.", ""]

    verdicts = ("holds", "reversed", "not resolved (within 2 SE)")
    lines += ["## Which orderings hold here", ""]
    for paper in dict.fromkeys(c["paper"].split()[0] for c in r["claims"]):
        group = [c for c in r["claims"] if c["paper"].split()[0] == paper]
        parts = [f"*{v}*: " + "; ".join(c["claim"] for c in group if c["verdict"] == v)
                 for v in verdicts if any(c["verdict"] == v for c in group)]
        lines.append(f"- **{paper}** ({sum(c['verdict'] == 'holds' for c in group)} of {len(group)} hold). "
                     + " — ".join(parts) + ".")
    lines += ["", "| paper | ordering | paper numbers | here: difference ± SE | verdict |", "|---|---|---|---:|---|"]
    lines += [f"| {c['paper']} | {c['claim']} | {c['paper_numbers']} | {c['difference']:+.3f} ± {c['error']:.3f} "
              f"{c['unit']} | {c['verdict']} |" for c in r["claims"]]
    lines += ["", f"Caveats. The models saw {st['train_steps']} steps of batch {r['preset']['optim']['batch_size']} "
              f"(the papers: 200k-800k), so orderings that the papers attribute to converged models "
              "(likelihood objectives, which optimise slowly) are tested early in training here. The data are 8x8 "
              "digits with 17 levels, not CIFAR-10; the FD-proxy uses a digit classifier's features, not Inception's. "
              f"With {len(r['claims'])} comparisons at a 2-SE threshold, one or two verdicts may flip by chance; the "
              "seed check below shows how far a second sampling seed moves the few-step cells.", ""]

    extra = [row for row in r["sweep"] if row["seed"] != 0]
    if extra:
        seeds = sorted({row["seed"] for row in r["sweep"]})
        lines += ["## Seed check (rows of <= 20 steps)", "",
                  "| sampler | S | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd over seeds | bootstrap sd (seed 0) |",
                  "|---|---:|" + "---:|" * len(seeds) + "---:|---:|"]
        for (name, s), row in rows.items():
            same = [x for x in r["sweep"] if x["sampler"] == name and x["steps"] == s]
            if len(same) < 2:
                continue
            fds = torch.tensor([x["fd"] for x in sorted(same, key=lambda x: x["seed"])], dtype=torch.float64)
            lines.append(f"| {name} | {s} | " + " | ".join(f"{v:.3f}" for v in fds.tolist()) +
                         f" | {float(fds.mean()):.3f} ± {float(fds.std()):.3f} | {row['fd_boot_std']:.3f} |")
        lines.append("")

    w = r["work"]
    lines += ["## Time", "", f"Work: {w['train_images']:,} training images (forward + backward), "
              f"{w['sample_forwards']:,} single-image network evaluations for samples and {w['bound_forwards']:,} "
              "for the bound.", "", "| phase | wall | CPU |", "|---|---:|---:|"]
    lines += [f"| {k} | {minutes(v['wall_s'])} | {minutes(v['cpu_s'])} |" for k, v in r["phases"].items()]
    lines += ["", "Each piece's cost is recorded when it is computed; a re-run loads the cached pieces. "
              "JSON with every number: `benchmarks/out/reproduce.json`.", ""]
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], json_path: Path, doc_path: Path, plot_path: Path) -> None:
    """The JSON (every number), the markdown report and the FD-vs-NFE plot."""
    for path in (json_path, doc_path, plot_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    old = doc_path.read_text() if doc_path.is_file() else ""   # keep the sections other scripts own
    kept = old[old.index(OTHER_SECTIONS):] if OTHER_SECTIONS in old else ""
    doc_path.write_text(render_markdown(report).rstrip("\n") + ("\n\n" + kept if kept else "\n"))
    plot_quality({"rows": [r for r in report["sweep"] if r["seed"] == 0], "floor": report["floor"]}, plot_path)


if __name__ == "__main__":
    main()
