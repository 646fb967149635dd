"""The few-step FD-proxy over many noise draws: mean and standard error of the 450-sample FD, and the
FD of all draws pooled, for teachers and students side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fewstep_draws.py \
        runs/digits-flow:dpmpp3m:8 runs/digits:dpmpp2m:8 runs/digits-flow-2step:euler:2 \
        runs/digits-flow-1step:euler:1 benchmarks/out/distill_pd1000/pd@2:ddim:2:trailing \
        benchmarks/out/distill/cd:consistency:2:80,0.821,0 --draws 20

Why: one draw of 450 samples is too noisy to rank few-step methods. On the digits teacher
(dpmpp3m, 8 calls) the 450-sample FD of 20 fresh noise draws spreads over 0.12-0.47 (sd 0.09)
around a floor of 0.248 (the held-out test split), so a single seed can put a method on either
side of a goal. The mean over K draws has a standard error of sd / sqrt(K) and keeps the floor's
sample size (450, so the small-sample bias of FD is the same on both sides). Every row starts
from the same noise, so the difference to the first row, draw by draw, is far less noisy than
either mean (its standard error is printed beside it). The pooled FD (all K x 450 samples against
the training split) has far less bias and noise and ranks methods by their distance to the data,
but has no real-data floor at that size (the test split holds 450).

A row is ``RUN[@ROUND]:SAMPLER:CALLS[:GRID]``: RUN a run directory; ``@ROUND`` picks the ROUND-th
checkpoint (0-based; a progressive run keeps one per halving); ``+TEACHER@SIGMA`` adds one call by
TEACHER's model, from level SIGMA to 0 (``dk.sampling.Handoff``: CALLS counts the student's calls only,
so ``STUDENT:euler:1+TEACHER@0.25`` takes two); GRID a grid name, a
`ddpmkit tune-grid` .json file, or the levels, comma-separated (e.g. ``80,0.821,0``: the two-call
consistency grid with Song et al. 2023's sigma_mid). Every row starts from the same noise: draw i
is seed ``--seed + i`` (none of the reflow pairs' seeds 0-3), scaled by the process's prior_std. Writes a table and
benchmarks/out/fewstep_draws.json.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import ddpmkit as dk
from ddpmkit.data import load_dataset
from ddpmkit.evaluation.evaluate import pick_extractor
from ddpmkit.evaluation.features import extract_features
from ddpmkit.evaluation.metrics import feature_metrics
from ddpmkit.io.checkpoint import list_checkpoints
from ddpmkit.cli.tune import read_grid
from ddpmkit.runs import load_checkpoint


def parse_row(spec: str) -> tuple[Path, int | None, str, int, str | None]:
    """``RUN[@ROUND]:SAMPLER:CALLS[:GRID][+TEACHER@SIGMA]`` -> (run, round, sampler, calls, grid)."""
    parts = spec.partition("+")[0].split(":")
    if len(parts) not in (3, 4) or not parts[2].isdigit():
        raise SystemExit(f"row {spec!r}: expected RUN[@ROUND]:SAMPLER:CALLS[:GRID][+TEACHER@SIGMA]")
    run, _, round_ = parts[0].partition("@")
    return Path(run), int(round_) if round_ else None, parts[1], int(parts[2]), parts[3] if len(parts) == 4 else None


def sampler_for(spec: str) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """A function (z ~ N(0, I), generator) -> samples for one row."""
    run, round_, sampler, calls, grid = parse_row(spec)
    path = run if round_ is None else list_checkpoints(run / "checkpoints")[round_][1]
    ck = load_checkpoint(path)
    prior = float(getattr(ck.process, "prior_std", 1.0))
    params: dict[str, Any] = {} if grid is None else {"grid": read_grid(grid)[0]}   # a name, a tune-grid file or the levels
    _, plus, handoff = spec.partition("+")
    if plus:   # one more call, by TEACHER from level SIGMA (dk.sampling.Handoff)
        teacher, _, level = handoff.rpartition("@")
        tk = load_checkpoint(Path(teacher))
        params["handoff"] = dk.sampling.Handoff(tk.process, tk.ema_model, float(level))
    return lambda z, g: dk.sample(ck.process, ck.ema_model, None, sampler, calls, x_T=prior * z, generator=g,
                                  clip_x0=True, progress=False, **params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="RUN[@ROUND]:SAMPLER:CALLS[:GRID]")
    parser.add_argument("--draws", type=int, default=20, help="noise draws of as many samples as the test split")
    parser.add_argument("--seed", type=int, default=3000, help="draw i uses seed SEED + i")
    parser.add_argument("--out", default="benchmarks/out/fewstep_draws.json")
    args = parser.parse_args()
    if args.draws < 2:
        raise SystemExit(f"--draws must be >= 2 for a standard error, got {args.draws}")
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    samplers = {spec: sampler_for(spec) for spec in args.rows}   # every row checked before any sampling

    first = load_checkpoint(parse_row(args.rows[0])[0])
    train, test = load_dataset(first.config.data, "train"), load_dataset(first.config.data, "test")
    extractor = pick_extractor(test)
    reference = extract_features(extractor, train.x).features
    n = len(test)

    def fd(x: torch.Tensor) -> float:
        feats = extract_features(extractor, x.clamp(-1, 1)).features
        return feature_metrics(reference, feats, kid_subset_size=min(1000, len(x)),
                               generator=torch.Generator().manual_seed(0))["fd"]

    floor = fd(test.x)
    noises = [torch.randn((n, *test.shape), generator=torch.Generator().manual_seed(args.seed + i))
              for i in range(args.draws)]
    out: dict[str, Any] = {"floor_fd": floor, "num_samples": n, "draws": args.draws, "seed": args.seed, "rows": []}
    for spec, draw in samplers.items():
        start = time.perf_counter()
        with torch.no_grad():
            xs = [draw(z, torch.Generator().manual_seed(args.seed + 10_000 + i)) for i, z in enumerate(noises)]
        fds = np.array([fd(x) for x in xs])
        sd = float(fds.std(ddof=1))
        row = {"row": spec, "fd": fds.tolist(), "mean": float(fds.mean()), "sd": sd, "se": sd / args.draws ** 0.5,
               "pooled_fd": fd(torch.cat(xs)), "seconds": time.perf_counter() - start}
        out["rows"].append(row)
        print(f"{spec:60s} mean {row['mean']:.3f} +- {row['se']:.3f} (sd {sd:.3f})  pooled {row['pooled_fd']:.4f}",
              flush=True)
    print(f"\nFD-proxy: {args.draws} noise draws of {n} samples (seeds {args.seed}-{args.seed + args.draws - 1}) "
          f"against the training split; floor (held-out test split, {n}) = {floor:.3f}\n")
    first = np.array(out["rows"][0]["fd"])
    print(f"| row | 450-sample FD, mean +- s.e. (x floor) | sd | minus the first row's, paired | pooled FD ({args.draws * n}) |")
    print("|---|---|---|---|---|")
    for r in out["rows"]:
        diff = np.array(r["fd"]) - first   # the same noise in every row: the difference is far less noisy
        r["vs_first"], r["vs_first_se"] = float(diff.mean()), float(diff.std(ddof=1) / args.draws ** 0.5)
        print(f"| {r['row']} | {r['mean']:.3f} +- {r['se']:.3f} ({r['mean'] / floor:.2f}x) | {r['sd']:.3f} | "
              f"{r['vs_first']:+.3f} +- {r['vs_first_se']:.3f} | {r['pooled_fd']:.4f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
