"""Every registered sampler against the exact distribution, at equal network-call budgets.

The "network" is the exact noise predictor of a 2-D Gaussian mixture (8 modes on a circle,
tests/oracles.py), so the only error left is the sampler's. For each sampler and each budget of
function evaluations (NFE) the step count is the largest whose NFE fits the budget (NFE is
counted, not assumed: e.g. Heun makes 2 steps - 1 calls). Distances to the true distribution:
sliced Wasserstein-2 and RBF MMD^2 against fresh true samples, and the mean true log-density of
the samples (the true samples' own value is the reference). rk45 chooses its own steps: it is
run at several tolerances and reported with the NFE it took.

    .venv/bin/python benchmarks/samplers.py [--quick] [--samples N] [--seed S]

Writes benchmarks/out/samplers.{json,md,png} and prints the markdown tables.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import ddpmkit as dk  # noqa: E402
from ddpmkit.evaluation.evaluate import CountingModel  # noqa: E402
from ddpmkit.evaluation.metrics import mean_log_density, rbf_mmd2, sliced_wasserstein  # noqa: E402
from ddpmkit.sampling import SAMPLERS, sample  # noqa: E402
from oracles import MixtureOracle, mixture_oracle  # noqa: E402

EXPECTED = ("ddpm", "ddim", "dpmpp2m", "euler", "heun", "rk45", "sde", "pc")
BUDGETS = (5, 10, 20, 50, 100, 1000)
QUICK_BUDGETS = (5, 10, 20, 50)
RK45_TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
BANDWIDTHS = (0.05, 0.1, 0.2, 0.5)
OUT = os.path.join(ROOT, "benchmarks", "out")
# Extra rows beside each sampler's defaults: the time grid matters as much as the solver, so the
# score-SDE samplers are also run on DPM-Solver's log-SNR grid (and Heun on EDM's).
VARIANTS = (("euler", {"grid": "logsnr"}), ("heun", {"grid": "logsnr"}), ("heun", {"grid": "karras"}),
            ("sde", {"grid": "logsnr"}), ("pc", {"grid": "logsnr"}), ("pc", {"grid": "logsnr", "snr": 0.05}))


def ring_mixture(schedule: dk.Schedule, modes: int = 8, radius: float = 0.7, std: float = 0.07) -> MixtureOracle:
    angles = 2 * math.pi * np.arange(modes) / modes
    means = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    return mixture_oracle(schedule, means=means, stds=std)


def label(name: str, params: dict[str, Any]) -> str:
    return name + (" [" + ", ".join(f"{k}={v}" for k, v in params.items()) + "]" if params else "")


def nfe_of(process: dk.GaussianDiffusion, oracle: MixtureOracle, name: str, steps: int, params: dict[str, Any]) -> int:
    counter = CountingModel(oracle)
    sample(process, counter, (4, 2), name, steps, seed=0, progress=False, **params)
    return counter.calls


def steps_for_budget(process: dk.GaussianDiffusion, oracle: MixtureOracle, name: str, params: dict[str, Any],
                     budgets: list[int]) -> dict[int, int | None]:
    """The largest step count whose measured NFE fits each budget (NFE = a steps + b, measured)."""
    n2, n3 = nfe_of(process, oracle, name, 2, params), nfe_of(process, oracle, name, 3, params)
    per_step, offset = n3 - n2, n2 - 2 * (n3 - n2)
    chosen: dict[int, int | None] = {}
    for budget in budgets:
        steps = min((budget - offset) // per_step, process.T) if per_step > 0 else None
        chosen[budget] = steps if steps is not None and steps >= 1 else None
    return chosen


def scores(x: torch.Tensor, reference: torch.Tensor, oracle: MixtureOracle, seed: int) -> dict[str, float]:
    density = mean_log_density(x, oracle.log_prob)
    return {
        "swd": sliced_wasserstein(x, reference, num_projections=256, generator=torch.Generator().manual_seed(seed)),
        "mmd2": rbf_mmd2(x, reference, bandwidths=list(BANDWIDTHS)),
        "mean_logp": density.mean,
        "logp_stderr": density.stderr,
    }


def run_cell(process, oracle, name, steps, x_T, reference, seed, **params) -> dict[str, Any]:
    counter = CountingModel(oracle)
    start = time.perf_counter()
    x = sample(process, counter, tuple(x_T.shape), name, steps, x_T=x_T, seed=seed + 1, progress=False, **params)
    seconds = time.perf_counter() - start
    return {"sampler": label(name, params), "params": params, "steps": steps, "nfe": counter.calls, "seconds": seconds,
            **scores(x, reference, oracle, seed)}


def fmt_cell(cell: dict[str, Any] | None, key: str, budget: int, scale: float = 1.0) -> str:
    if cell is None:
        return "—"
    value = f"{cell[key] * scale:.3f}" if key != "mean_logp" else f"{cell[key]:+.2f}"
    return value if cell["nfe"] == budget else f"{value} ({cell['nfe']})"


def markdown(report: dict[str, Any]) -> str:
    budgets = report["config"]["budgets"]
    ref = report["reference"]
    cells = {(r["sampler"], r["budget"]): r for r in report["results"] if "budget" in r}
    names = [n for n in report["samplers"] if n != "rk45"]
    lines = [f"Oracle: {report['config']['data']}; {report['config']['samples']} samples per cell, "
             f"linear schedule T={report['config']['T']}, float64, seed {report['config']['seed']}. "
             "In parentheses: the NFE actually used where it is below the budget.", ""]
    for title, key, scale, floor in (
        ("Sliced Wasserstein-2 to fresh true samples (x100; lower is better)", "swd", 100.0, ref["swd"] * 100),
        ("RBF MMD^2 to fresh true samples (x1000; lower is better)", "mmd2", 1000.0, ref["mmd2"] * 1000),
        ("Mean true log-density of the samples (nats; true samples: "
         f"{ref['mean_logp']:+.2f} +- {ref['logp_stderr']:.2f})", "mean_logp", 1.0, None),
    ):
        lines += [f"**{title}**", "", "| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |",
                  "|---|" + "---:|" * len(budgets)]
        for name in names:
            lines.append(f"| {name} | " + " | ".join(fmt_cell(cells.get((name, b)), key, b, scale) for b in budgets) + " |")
        if floor is not None:
            lines.append("| *true samples (floor)* | " + " | ".join(f"*{floor:.3f}*" for _ in budgets) + " |")
        lines.append("")
    rk = [r for r in report["results"] if r["sampler"].startswith("rk45")]
    if rk:
        lines += ["**rk45 (adaptive; NFE chosen by the solver)**", "",
                  "| rtol = atol | NFE | SWD x100 | MMD^2 x1000 | mean log p |", "|---:|---:|---:|---:|---:|"]
        for r in rk:
            lines.append(f"| {r['params']['rtol']:g} | {r['nfe']} | {r['swd'] * 100:.3f} | {r['mmd2'] * 1000:.3f} | "
                         f"{r['mean_logp']:+.2f} |")
        lines.append("")
    for note in report["notes"]:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    groups = [(name, [r for r in report["results"] if r["sampler"] == name]) for name in report["samplers"]]
    groups.append(("rk45", [r for r in report["results"] if r["sampler"].startswith("rk45")]))
    colors = plt.cm.tab20(np.linspace(0, 1, 20))
    for k, (name, rows) in enumerate(groups):
        if not rows:
            continue
        rows = sorted(rows, key=lambda r: r["nfe"])
        nfe = [r["nfe"] for r in rows]
        style = "s:" if name == "rk45" else ("o--" if "[" in name else "o-")
        color = colors[k % len(colors)]
        axes[0].plot(nfe, [r["swd"] for r in rows], style, label=name, ms=3, color=color)
        axes[1].plot(nfe, [max(r["mean_logp"], -20.0) for r in rows], style, label=name, ms=3, color=color)
    ref = report["reference"]
    axes[0].axhline(ref["swd"], color="k", lw=0.8, ls=":", label="true samples")
    axes[1].axhline(ref["mean_logp"], color="k", lw=0.8, ls=":", label="true samples")
    axes[0].set(xscale="log", yscale="log", xlabel="network calls (NFE)", ylabel="sliced W2 to true samples")
    axes[1].set(xscale="log", xlabel="network calls (NFE)", ylabel="mean true log-density (nats, floored at -20)")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"Samplers on an exact oracle: {report['config']['data']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and budgets (about a minute)")
    parser.add_argument("--samples", type=int, default=None, help="samples per cell (default 2000, quick 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)

    n = args.samples or (500 if args.quick else 2000)
    budgets = QUICK_BUDGETS if args.quick else BUDGETS
    schedule = dk.Schedule.linear(1000)
    process = dk.GaussianDiffusion(schedule)
    oracle = ring_mixture(schedule)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    reference = oracle.sample(n, torch.Generator().manual_seed(args.seed + 100))
    fresh = oracle.sample(n, torch.Generator().manual_seed(args.seed + 200))

    notes: list[str] = []
    missing = [name for name in EXPECTED if name not in SAMPLERS]
    if missing:
        notes.append(f"skipped (not registered): {', '.join(missing)}")
    runs = [(name, {}) for name in sorted(SAMPLERS) if name != "rk45"]
    runs += [(name, params) for name, params in VARIANTS if name in SAMPLERS]
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    for name, params in runs:
        try:   # the variants are about few steps: they skip the 1000-call budget
            plan = steps_for_budget(process, oracle, name, params, [b for b in budgets if not params or b <= 100])
        except Exception as error:   # a sampler that cannot run at all: note it, go on
            notes.append(f"{label(name, params)}: skipped ({type(error).__name__}: {error})")
            continue
        for budget, steps in plan.items():
            if steps is None:
                continue
            try:
                cell = run_cell(process, oracle, name, steps, x_T, reference, args.seed, **params)
            except Exception as error:
                notes.append(f"{label(name, params)} at {steps} steps failed: {type(error).__name__}: {error}")
                continue
            results.append({**cell, "budget": budget})
        print(f"  {label(name, params)}: done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if "rk45" in SAMPLERS:
        for tol in (RK45_TOLERANCES[:3] if args.quick else RK45_TOLERANCES):
            results.append(run_cell(process, oracle, "rk45", 1, x_T, reference, args.seed, rtol=tol, atol=tol))
    floors = [scores(oracle.sample(n, torch.Generator().manual_seed(args.seed + 300 + k)), reference, oracle, args.seed)
              for k in range(5)]
    notes.append("sampling noise: between independent true sample sets of this size, SWD x100 ranges "
                 f"{min(f['swd'] for f in floors) * 100:.2f}..{max(f['swd'] for f in floors) * 100:.2f} and MMD^2 x1000 "
                 f"{min(f['mmd2'] for f in floors) * 1000:.2f}..{max(f['mmd2'] for f in floors) * 1000:.2f} (5 draws); "
                 "the deterministic samplers share one x_T draw, so they converge to the same value")
    notes.append("samplers run with their default parameters (skip grids: ddim 'uniform', ddpm/euler/heun/sde/pc "
                 "'linspace', dpmpp 'logsnr'); pc uses snr=0.16, one corrector step per level")

    report = {
        "config": {"data": "2-D mixture of 8 Gaussians (radius 0.7, std 0.07)", "samples": n, "T": schedule.T,
                   "budgets": list(budgets), "seed": args.seed, "quick": args.quick,
                   "mmd_bandwidths": list(BANDWIDTHS), "swd_projections": 256},
        "reference": scores(fresh, reference, oracle, args.seed),
        "samplers": [label(name, params) for name, params in runs],
        "results": results,
        "notes": notes,
        "seconds": time.perf_counter() - start,
    }
    os.makedirs(args.out, exist_ok=True)
    table = markdown(report)
    with open(os.path.join(args.out, "samplers.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "samplers.md"), "w") as f:
        f.write(table)
    plot(report, os.path.join(args.out, "samplers.png"))
    print(table)
    print(f"wrote {args.out}/samplers.{{json,md,png}} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
