"""VP, sub-VP, VE (NCSNv2) and EDM on the 8x8 digits: same U-Net, same training budget, each with
its own samplers at equal network calls; FD-proxy, ODE bits/dim, training speed (issue 12).

    python benchmarks/score_family.py            # the full run: two 1-thread workers, ~40 min on 2 cores
    python benchmarks/score_family.py --smoke    # every code path with a tiny network, seconds
    python benchmarks/score_family.py --render-only   # the tables from the cached pieces, no compute

Models (presets ``digits``, ``digits-subvp``, ``digits-ncsn``, ``digits-edm``, and for the
training-speed comparison the continuous VP with min-SNR weighting, ``digits-subvp`` with
``diffusion.process=vp diffusion.weighting=min_snr``) are trained by ``train(load_config(...))``
and cached under ``runs/score_family/<name>-<config hash>/``; every measurement is cached beside
its run (``common.RunCache``, through ``common.QualityRunner``), so a re-run only renders. Measured per model:

- FD-proxy of ``--num-samples`` samples in the committed digit classifier's features against the
  train split (the floor: the test split), +- the bootstrap sd (paired across rows: comparisons
  use paired bootstrap differences, as in reproduce.py); seeds ``--extra-seeds`` repeat the rows
  of <= 20 calls. Steps are chosen so that the network calls (counted by ``CountingModel``) fit
  each budget: Heun, PC (one corrector step) and ALD (2 steps per level, Song et al. 2021
  Table 1's C2000 rule) use 2 n - 1 or 2 n + 1 calls for n levels.
- ODE bits/dim (``ode_bpd``, 17 levels, Hutchinson trace) on the first ``--ode-examples`` test
  digits; one seeded draw of dequantisation noise and probes, the same for every model (paired).
- Training speed: the EMA network at ``--speed-steps`` checkpoints of the same runs, FD-proxy with
  DPM-Solver++ 2M at 20 calls, against the training seconds logged in ``metrics.jsonl``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import (QualityRunner, RunCache, code_info, fd_cell, machine_info, minutes, paired_bpd,  # noqa: E402
                    paired_fd)
from ddpmkit.data import load_dataset  # noqa: E402
from ddpmkit.io.checkpoint import list_checkpoints  # noqa: E402
from ddpmkit.runs import load_run  # noqa: E402
from ddpmkit.likelihood.ode import ode_bpd  # noqa: E402
from ddpmkit.training.config import TrainConfig, apply_overrides, load_config  # noqa: E402
from ddpmkit.training.train import train  # noqa: E402


@dataclass(frozen=True)
class Family:
    """One trained model: its preset, overrides, samplers (row name -> params) and 1000-call rows."""

    name: str
    label: str
    preset: str
    overrides: tuple[str, ...] = ()
    samplers: tuple[str, ...] = ()
    full_rows: tuple[str, ...] = ()   # rows that also get the largest budget (the costly ones)
    speed: bool = False              # evaluated at the --speed-steps checkpoints


CHURN = {"sampler": "heun_churn", "s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}  # EDM Table 5 (ImageNet)
ROWS: dict[str, dict[str, Any]] = {   # row name -> sample() params; "calls": network calls per level
    "dpmpp2m": {"sampler": "dpmpp2m"}, "ddim": {"sampler": "ddim"}, "ddpm": {"sampler": "ddpm"},
    "euler": {"sampler": "euler"}, "heun": {"sampler": "heun"},
    "euler-karras": {"sampler": "euler", "grid": "karras"}, "heun-karras": {"sampler": "heun", "grid": "karras"},
    "pc": {"sampler": "pc", "corrector_steps": 1}, "ald": {"sampler": "ald", "steps_per_level": 2},
    "heun_churn": CHURN,
}
TWO_CALLS = {"heun", "heun-karras", "pc", "heun_churn"}   # 2 n - 1 calls for n steps
FAMILIES = (
    Family("vp", "VP, discrete (`digits`: cosine, v-prediction, L_simple)", "digits", (),
           ("dpmpp2m", "ddim", "ddpm", "heun", "heun-karras", "euler", "euler-karras"), ("ddpm",), True),
    Family("subvp", "sub-VP (`digits-subvp`: eps, L_simple weighting)", "digits-subvp", (),
           ("heun", "dpmpp2m", "euler"), ("heun",)),
    Family("ve", "VE (`digits-ncsn`: NCSNv2 rules, score / sigma)", "digits-ncsn", (),
           ("pc", "ald", "heun"), ("pc", "ald")),
    Family("edm", "EDM (`digits-edm`: preconditioning, lognormal sigmas)", "digits-edm", (),
           ("heun", "dpmpp2m", "heun_churn"), ("heun",), True),
    Family("vp-minsnr", "VP, continuous, eps, min-SNR-5 weighting (training speed only)", "digits-subvp",
           ("diffusion.process=vp", "diffusion.weighting=min_snr"), (), (), True),
)
GROUPS = (("vp", "ve"), ("subvp", "edm", "vp-minsnr"))   # the two workers' shares, about equal work

FULL = {"train_steps": 1500, "budgets": "10,20,50,1000", "num_samples": 450, "bootstrap": 200, "ode_examples": 60,
        "speed_steps": "300,750,1500", "extra_seeds": "1,2", "runs": "runs/score_family",
        "json": "benchmarks/out/score_family.json", "md": "benchmarks/out/score_family.md",
        "doc": "docs/REPRODUCTION.md"}
SMOKE = {**FULL, "train_steps": 20, "budgets": "6,10,16", "num_samples": 40, "bootstrap": 10, "ode_examples": 3,
         "speed_steps": "10,20", "extra_seeds": "1", "runs": "runs/score_family-smoke",
         "json": "runs/score_family-smoke/score_family.json", "md": "runs/score_family-smoke/score_family.md",
         "doc": ""}
SMOKE_OVERRIDES = ["network.channels=8", "network.num_heads=2", "network.norm_groups=4", "optim.warmup=2",
                   "log_every=5", "optim.batch_size=32"]
SPEED_ROW, SPEED_CALLS = "dpmpp2m", 20
EDM_CALLS = 35   # EDM's Heun, 18 steps on the Karras grid
SECTION = "## Score-based processes on the digits: VP, sub-VP, VE, EDM (issue 12)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help=f"tiny network {SMOKE_OVERRIDES}, few steps and samples")
    p.add_argument("--families", default=",".join(f.name for f in FAMILIES), help="comma-separated")
    p.add_argument("--train-steps", type=int)
    p.add_argument("--budgets", help="network-call budgets, the last is the costly one (full: 10,20,50,1000)")
    p.add_argument("--num-samples", type=int)
    p.add_argument("--bootstrap", type=int)
    p.add_argument("--ode-examples", type=int)
    p.add_argument("--speed-steps", help="checkpoints evaluated for training speed")
    p.add_argument("--extra-seeds", help="sampling seeds repeated for the rows of <= 20 calls")
    for name in ("runs", "json", "md", "doc"):
        p.add_argument(f"--{name}", help=f"(full: {FULL[name] or 'none'}; smoke: {SMOKE[name] or 'none'})")
    p.add_argument("--workers", type=int, default=2, help="1-thread worker processes (1: all in this process)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--render-only", action="store_true", help="tables from the cached pieces only")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    for key, value in (SMOKE if a.smoke else FULL).items():
        if getattr(a, key) is None:
            setattr(a, key, str(ROOT / value) if key in ("runs", "json", "md", "doc") and value else value)
    a.families = [f for f in a.families.split(",") if f]
    if set(a.families) - {f.name for f in FAMILIES}:
        p.error(f"--families must name some of {[f.name for f in FAMILIES]}, got {a.families}")
    a.budgets = [int(s) for s in str(a.budgets).split(",") if s]
    a.speed_steps = [int(s) for s in str(a.speed_steps).split(",") if s]
    a.extra_seeds = [int(s) for s in str(a.extra_seeds).split(",") if s]
    return a


# ------------------------------------------------------------------------------ plans
def steps_for(row: str, budget: int) -> int:
    """The most steps whose network calls fit ``budget``: n (one call a step), 2 n - 1 (Heun, PC
    with one corrector step) or 2 n + 1 (ALD with 2 steps per level and the final denoising)."""
    if row == "ald":
        return max(1, (budget - 1) // ROWS["ald"]["steps_per_level"])
    return max(1, (budget + 1) // 2) if row in TWO_CALLS else budget


def plans(fam: Family, args: argparse.Namespace) -> list[tuple[str, str, int, int]]:
    """(phase, row, steps, seed) in priority order: few-step rows, extra seeds, then the costly ones."""
    cheap, costly = args.budgets[:-1], args.budgets[-1:]
    out = [("rows", r, steps_for(r, b), 0) for r in fam.samplers for b in cheap]
    if fam.name == "edm":
        out.append(("rows", "heun", (EDM_CALLS + 1) // 2, 0))
    out += [("extra seeds", r, steps_for(r, b), s) for s in args.extra_seeds for r in fam.samplers
            for b in cheap if b <= 20]
    out += [("costly rows", r, steps_for(r, b), 0) for r in fam.full_rows for b in costly]
    return out


def family_config(fam: Family, args: argparse.Namespace) -> TrainConfig:
    """The preset with the budget, one thread, no previews, and checkpoints at the speed steps."""
    every = math.gcd(*args.speed_steps) if fam.speed else args.train_steps
    overrides = [*fam.overrides, *(SMOKE_OVERRIDES if args.smoke else []), f"optim.steps={args.train_steps}",
                 "num_threads=1", "sample_every=0", "keep_last=0", f"checkpoint_every={every}",
                 f"name=score-{fam.name}"]
    config = TrainConfig.from_dict(apply_overrides(load_config(fam.preset).to_dict(), overrides))
    shaping = {k: v for k, v in config.to_dict().items() if k in ("data", "network", "diffusion", "optim",
                                                                 "ema_rates", "ema_warmup", "precision", "seed")}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:8]
    return config.replace(out=str(Path(args.runs) / f"{fam.name}-{digest}"))


# ------------------------------------------------------------------------------ measurements
class Evaluator:
    """The data, the cached quality runner (:class:`common.QualityRunner`) and the ODE bits/dim of one invocation."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        data = load_config("digits").data
        self.test, self.train = load_dataset(data, "test"), load_dataset(data, "train")
        self.runner = QualityRunner(self.test, self.train, args.num_samples, args.bootstrap)

    @property
    def floor(self) -> dict[str, Any] | None:
        return self.runner.floor

    def fd(self, cache: RunCache, process, model, row: str, steps: int, seed: int, phase: str,
           tag: str = "final") -> dict[str, Any] | None:
        identity = {"rows": {row: ROWS[row]}, "steps": [steps], "seed": seed, "model": tag}
        result = self.runner.cached(cache, phase, identity, process, model, {row: ROWS[row]}, [steps], seed, tag,
                                    only_cached=self.args.render_only)
        return None if result is None else result["rows"][0]

    def ode(self, cache: RunCache, process, model) -> dict[str, Any] | None:
        n = min(self.args.ode_examples, len(self.test))
        key = f"ode n={n} seed=0"
        if self.args.render_only and key not in cache.items:
            return None

        def run() -> dict[str, Any]:
            tol = {"rtol": 1e-3, "atol": 1e-3} if self.args.smoke else {}
            r = ode_bpd(process, model.eval(), self.test.x[:n], levels=self.test.levels,
                        generator=torch.Generator().manual_seed(0), progress=False, **tol)
            bpd = r.bpd.double()
            out = {"mean": float(bpd.mean()), "sem": float(bpd.std() / math.sqrt(n)), "n": n, "nfe": r.nfe,
                   "per_example": [round(v, 6) for v in bpd.tolist()]}
            print(f"   ODE bits/dim {out['mean']:.3f} +- {out['sem']:.3f} ({r.nfe} calls)", flush=True)
            return out
        return cache.get(key, "ode bits/dim", run)


def train_seconds(run_dir: Path) -> dict[int, float]:
    """Training seconds at each logged step (``metrics.jsonl``'s ``time``)."""
    path = run_dir / "metrics.jsonl"
    lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip()] if path.is_file() else []
    return {int(r["step"]): float(r["time"]) for r in lines if "time" in r and "step" in r}


def ema_at(config: TrainConfig, step: int) -> torch.nn.Module:
    """The EMA network of the run's checkpoint at ``step`` (:func:`ddpmkit.load_run`)."""
    path = dict(list_checkpoints(Path(config.out) / "checkpoints")).get(step)
    if path is None:
        raise SystemExit(f"no checkpoint at step {step} in {config.out}")
    return load_run(path).model


def run_family(fam: Family, ev: Evaluator, args: argparse.Namespace, phases: list[str]) -> dict[str, Any] | None:
    """Train (or load) one family and run the measurements of ``phases`` (all cached)."""
    config = family_config(fam, args)
    run_dir = Path(config.out)
    if args.render_only and not (run_dir / "score_family_eval.json").is_file():
        return None
    print(f"== {fam.name} ({', '.join(phases)}): {run_dir}", flush=True)
    if args.render_only:
        config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        net = ema_at(config, args.train_steps)
        model, process = net, config.diffusion.build()
        info = json.loads((run_dir / "score_family_train.json").read_text())
    else:
        result = train(config, resume=True, progress=not args.quiet)
        if result.stopped_by or result.step != config.optim.steps:
            raise SystemExit(f"training of {run_dir} stopped by {result.stopped_by} at step {result.step}")
        config, model, process = result.config, result.ema_model.eval(), result.process
        info = {"step": result.step, "seconds": train_seconds(run_dir).get(result.step, result.seconds),
                "final_loss": result.metrics.get("loss")}
        (run_dir / "score_family_train.json").write_text(json.dumps(info, indent=1) + "\n")
    cache = RunCache(run_dir, "score_family_eval.json")
    entry: dict[str, Any] = {"label": fam.label, "preset": fam.preset, "overrides": list(fam.overrides),
                             "run": str(run_dir), "train": info, "rows": [], "speed": []}
    if "ode" in phases and fam.samplers:
        entry["ode"] = ev.ode(cache, process, model)
    for phase, row, steps, seed in plans(fam, args):
        if phase in phases:
            r = ev.fd(cache, process, model, row, steps, seed, phase)
            entry["rows"] += [r] if r else []
    if "speed" in phases and fam.speed:
        seconds = train_seconds(run_dir)
        for step in args.speed_steps:
            net = model if step == args.train_steps else ema_at(config, step)
            r = ev.fd(cache, process, net, SPEED_ROW, SPEED_CALLS, 0, "speed", tag=f"step {step}")
            if r:
                entry["speed"].append({**r, "step": step, "train_seconds": seconds.get(step)})
    entry["costs"] = cache.costs()
    return entry


ALL_PHASES = ["ode", "rows", "speed", "extra seeds", "costly rows"]


def worker(args: argparse.Namespace) -> None:
    """Run every phase over this worker's families, phase by phase (the costly rows last)."""
    torch.set_num_threads(1)
    ev = Evaluator(args)
    fams = [f for f in FAMILIES if f.name in args.families]
    for f in fams:   # training first, for all of them
        run_family(f, ev, args, [])
    for phase in ALL_PHASES:
        for f in fams:
            run_family(f, ev, args, [phase])


def spawn_workers(args: argparse.Namespace, argv: list[str]) -> None:
    """Start one 1-thread worker per group of families and wait for all of them."""
    groups = [[f for f in g if f in args.families] for g in GROUPS] if args.workers > 1 else [args.families]
    procs = []
    for g in [g for g in groups if g]:
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", "--families", ",".join(g)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        print(f"worker exit codes {codes}; rendering what is cached", flush=True)


# ------------------------------------------------------------------------------ claims and report
def verdict(diff: float, err: float, kind: str = "beats") -> str:
    """``beats``: the first is better (negative) by > 2 SE; ``reaches``: not worse by > 2 SE."""
    if kind == "reaches":
        return "holds" if diff < 2 * err else "does not hold (worse by > 2 SE)"
    return "holds" if diff < -2 * err else "reversed" if diff > 2 * err else "not resolved (within 2 SE)"


def row_of(report: dict[str, Any], fam: str, row: str, steps: int, seed: int = 0) -> dict[str, Any] | None:
    for r in report["families"].get(fam, {}).get("rows", []):
        if (r["sampler"], r["steps"], r["seed"]) == (row, steps, seed):
            return r
    return None


def claims(report: dict[str, Any]) -> list[dict[str, Any]]:
    out, budgets = [], report["settings"]["budgets"]

    def add(paper: str, claim: str, a, b, unit: str = "FD", kind: str = "beats", paired=paired_fd) -> None:
        if a and b:
            diff, err = paired(a, b)
            out.append({"paper": paper, "claim": claim, "a": a.get("fd", a.get("mean")), "b": b.get("fd", b.get("mean")),
                        "difference": diff, "error": err, "unit": unit, "verdict": verdict(diff, err, kind)})
    for b in budgets:
        add("Song et al. 2021 T1", f"VE: PC beats ALD at {b} calls", row_of(report, "ve", "pc", steps_for("pc", b)),
            row_of(report, "ve", "ald", steps_for("ald", b)))
    fams = report["families"]
    if fams.get("subvp", {}).get("ode") and fams.get("vp", {}).get("ode"):
        add("Song et al. 2021 T2", "sub-VP has better ODE bits/dim than VP", fams["subvp"]["ode"], fams["vp"]["ode"],
            "bits/dim", paired=paired_bpd)
    top = budgets[-1]
    edm35 = row_of(report, "edm", "heun", (EDM_CALLS + 1) // 2)
    add("Karras et al. 2022", f"EDM Heun at {EDM_CALLS} calls reaches VP ancestral (ddpm) at {top}", edm35,
        row_of(report, "vp", "ddpm", top), kind="reaches")
    add("Karras et al. 2022", f"EDM Heun at {EDM_CALLS} calls reaches EDM Heun at {2 * steps_for('heun', top) - 1}",
        edm35, row_of(report, "edm", "heun", steps_for("heun", top)), kind="reaches")
    for b in budgets[:-1]:
        for s in ("heun", "euler"):
            add("Karras et al. 2022 Fig. 2", f"VP model, {s} at {b} calls: Karras grid beats the default grid",
                row_of(report, "vp", f"{s}-karras", steps_for(s, b)), row_of(report, "vp", s, steps_for(s, b)))
    return out


def _calls(r: dict[str, Any]) -> str:
    return f"{r['nfe']:.0f}"


def render(report: dict[str, Any]) -> str:
    st, fl, fams = report["settings"], report["floor"], report["families"]
    n, budgets = st["num_samples"], st["budgets"]
    lines = [SECTION, "",
             f"Generated by `{report['command']}` on {report['date']} ({report['machine']['cpu']}, "
             f"{report['machine']['cores']} cores; {st['workers']} one-thread worker processes; torch "
             f"{report['machine']['torch']}); wall time of the last invocation {minutes(report['total_wall_s'])}. "
             f"Code: commit `{report['code']['commit']}`.", "",
             f"Every model is the same U-Net (the `digits` preset's), trained **{st['train_steps']} steps** "
             "(batch 128, AdamW 2e-3, cosine decay, EMA 0.999) from its preset by "
             "`train(load_config(preset, overrides))`. FD-proxy: "
             f"{n} samples against the train split in the digit classifier's features, ± the sd of "
             f"{st['bootstrap']} bootstrap resamples; **floor {fl['fd']:.3f}** (the test split). Each cell gives "
             "the FD and, in brackets, the network calls counted by `CountingModel`. ODE bits/dim: probability-flow "
             f"ODE, 17 levels, first {st['ode_examples']} test digits, ± standard error over digits. Rows: PC with "
             "one corrector step (snr 0.16), ALD with 2 Langevin steps per level (eps 2e-5) and the final "
             "denoising step, `heun_churn` with EDM's ImageNet settings (S_churn 40, S_tmin 0.05, S_tmax 50, "
             "S_noise 1.003); `-karras` rows are the discrete VP model sampled on the Karras grid instead of "
             "the sampler's default (linspace).", "",
             "| model | sampler | " + " | ".join(f"~{b} calls" for b in budgets) + " | ODE bits/dim | training |",
             "|---|---|" + "---:|" * len(budgets) + "---:|---:|"]
    for name, fam in fams.items():
        spec = {f.name: f for f in FAMILIES}[name]
        for i, row in enumerate(spec.samplers):
            cells = []
            for b in budgets:
                r = row_of(report, name, row, steps_for(row, b))
                cells.append("-" if r is None else f"{fd_cell(r)} ({_calls(r)})")
            ode = fam.get("ode")
            extra = (f"{ode['mean']:.3f} ± {ode['sem']:.3f} | {minutes(fam['train']['seconds'])}" if i == 0 and ode
                     else " | ")
            lines.append(f"| {name if i == 0 else ''} | {row} | " + " | ".join(cells) + f" | {extra} |")
    edm35 = row_of(report, "edm", "heun", (EDM_CALLS + 1) // 2)
    if edm35:
        lines.append(f"| edm | heun (18 steps, EDM's default) | {fd_cell(edm35)} ({_calls(edm35)}) |" + " |" * (len(budgets) + 1))
    lines += [f"| *floor (test split)* | | {fl['fd']:.3f} |" + " |" * (len(budgets) + 1), "",
              "A - marks a cell not run: the costly budget runs only each model's main sampler (and ALD).", ""]

    seeds = sorted({r["seed"] for f in fams.values() for r in f["rows"]})
    if len(seeds) > 1:
        lines += ["Seed check (rows of <= 20 calls; FD per sampling seed, then mean ± sd over seeds):", "",
                  "| model | sampler | calls | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd |",
                  "|---|---|---:|" + "---:|" * len(seeds) + "---:|"]
        for name, fam in fams.items():
            for r0 in [r for r in fam["rows"] if r["seed"] == 0]:
                same = sorted([r for r in fam["rows"] if (r["sampler"], r["steps"]) == (r0["sampler"], r0["steps"])],
                              key=lambda r: r["seed"])
                if len(same) < 2:
                    continue
                fds = torch.tensor([r["fd"] for r in same], dtype=torch.float64)
                lines.append(f"| {name} | {r0['sampler']} | {_calls(r0)} | " + " | ".join(f"{v:.3f}" for v in fds.tolist())
                             + f" | {float(fds.mean()):.3f} ± {float(fds.std()):.3f} |")
        lines.append("")

    lines += ["Claims (a difference is first minus second, paired; *holds* when it has the claimed sign "
              "beyond 2 SE; for *reaches*, when the first is not worse by more than 2 SE):", "",
              "| paper | claim | first | second | difference ± SE | verdict |", "|---|---|---:|---:|---:|---|"]
    lines += [f"| {c['paper']} | {c['claim']} | {c['a']:.3f} | {c['b']:.3f} | {c['difference']:+.3f} ± {c['error']:.3f} "
              f"{c['unit']} | {c['verdict']} |" for c in report["claims"]]
    speed = {k: f["speed"] for k, f in fams.items() if f.get("speed")}
    if speed:
        lines += ["", f"Training speed: FD-proxy ({SPEED_ROW}, {SPEED_CALLS} calls, seed 0) of the EMA network at "
                  "checkpoints of the same runs, against the training seconds logged at that step (one thread, "
                  "two runs at a time on the 2 cores):", "",
                  "| model | " + " | ".join(f"step {s}" for s in st["speed_steps"]) + " | first at the floor |",
                  "|---|" + "---:|" * len(st["speed_steps"]) + "---|"]
        for name, pts in speed.items():
            by = {p["step"]: p for p in pts}
            cells = [f"{fd_cell(by[s])} ({by[s]['train_seconds']:.0f} s)" if s in by and by[s]["train_seconds"] is not None
                     else "-" for s in st["speed_steps"]]
            hit = [p for p in pts if p["fd"] <= fl["fd"]]
            first = f"step {hit[0]['step']} ({hit[0]['train_seconds']:.0f} s)" if hit else "not reached"
            lines.append(f"| {fams[name]['label']} | " + " | ".join(cells) + f" | {first} |")
    lines += ["", f"JSON with every number: `benchmarks/out/score_family.json`.", ""]
    return "\n".join(lines)


def collect(args: argparse.Namespace, argv: list[str], t0: float, started: datetime) -> dict[str, Any]:
    ev = Evaluator(args)
    fams = {}
    for f in FAMILIES:
        if f.name in args.families:
            entry = run_family(f, ev, args, ALL_PHASES)
            if entry is not None:
                fams[f.name] = entry
    report = {"command": "python benchmarks/score_family.py" + "".join(f" {a}" for a in argv),
              "date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info(), "code": code_info(),
              "total_wall_s": time.perf_counter() - t0, "floor": ev.floor,
              "settings": {k: getattr(args, k) for k in ("train_steps", "budgets", "num_samples", "bootstrap",
                                                          "ode_examples", "speed_steps", "extra_seeds", "smoke",
                                                          "workers")},
              "families": fams}
    report["claims"] = claims(report)
    return report


def write_doc(path: Path, section: str) -> None:
    """Replace this script's section of ``path`` (from its heading to the end), or append it."""
    text = path.read_text() if path.is_file() else ""
    head = text.split(SECTION)[0].rstrip("\n")
    path.write_text((head + "\n\n" if head else "") + section)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    t0, started = time.perf_counter(), datetime.now(timezone.utc)
    if args.worker:
        worker(args)
        return None
    if not args.render_only:
        if args.workers > 1:
            spawn_workers(args, [a for a in argv if a not in ("--render-only",)])
        else:
            worker(args)
    args.render_only = True
    report = collect(args, [a for a in argv if a != "--render-only"], t0, started)
    if report["floor"] is None:
        raise SystemExit("nothing measured yet")
    md = render(report)
    for path, text in ((Path(args.json), json.dumps(report, indent=1) + "\n"), (Path(args.md), md)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if args.doc:
        write_doc(Path(args.doc), md)
    print(md)
    print(f"wrote {args.json}, {args.md}" + (f", {args.doc}" if args.doc else "") +
          f" in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return report


if __name__ == "__main__":
    main()
