"""How closely a few-step flow student copies its teacher's map z -> x, on its own training pairs and
on fresh pairs of the same teacher and solver: the generalisation gap of reflow distillation.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reflow_gap.py runs/digits-flow-2step runs/digits-flow-1step \
        --pairs-from runs/digits-flow-pairs-80k --teacher runs/digits-flow --calls 1,2

For each student run and call count: the mean squared error (per pixel, data scale) between its
k-call Euler sample from z and the teacher's x, over the first ``--n`` stored training pairs and over
``--n`` fresh pairs (z from ``--seed``, none of the stored pairs' seeds; x by the teacher's
``--sampler`` in ``--sampler-steps`` calls, as the stored pairs were made). A student that fits its
pairs far closer than fresh ones misses the map between them, which more pairs (not more steps)
address. Writes a table and benchmarks/out/reflow_gap.json.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ddpmkit.io.files import write_json
from ddpmkit.runs import load_checkpoint
from ddpmkit.training.reflow import flow_sample, stored_pairs, teacher_pairs


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="student run directories (rectified flows)")
    p.add_argument("--pairs-from", required=True, help="the stored pairs the students trained on (a run or file)")
    p.add_argument("--teacher", required=True, help="the run whose ODE made the pairs")
    p.add_argument("--sampler", default="dpmpp3m", help="the teacher's solver for the fresh pairs (default dpmpp3m)")
    p.add_argument("--sampler-steps", type=int, default=8, help="its calls (default 8)")
    p.add_argument("--calls", default="1,2", help="the students' Euler calls, comma-separated (default 1,2)")
    p.add_argument("--n", type=int, default=2000, help="pairs of each kind (default 2000)")
    p.add_argument("--seed", type=int, default=99, help="the fresh pairs' noise seed (default 99)")
    p.add_argument("--out", default="benchmarks/out/reflow_gap.json")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    calls = [int(c) for c in args.calls.split(",")]
    z_train, x_train, source = stored_pairs(args.pairs_from)
    z_train, x_train = z_train[:args.n], x_train[:args.n]
    teacher = load_checkpoint(args.teacher)
    started = time.perf_counter()
    z_fresh, x_fresh = teacher_pairs(teacher.process, teacher.ema_model, args.n, tuple(x_train.shape[1:]),
                                     sampler=args.sampler, sampler_steps=args.sampler_steps, seed=args.seed,
                                     clip_x0=teacher.config.data_levels is not None, progress=False)
    print(f"{args.n} fresh pairs of {args.teacher} ({args.sampler} {args.sampler_steps}) in "
          f"{time.perf_counter() - started:.0f} s; training pairs: the first {args.n} of {source}")
    rows = {}
    for run in args.runs:
        student = load_checkpoint(run)
        clip = student.config.data_levels is not None
        for k in calls:
            errors = {}
            for name, z, x in (("train", z_train, x_train), ("fresh", z_fresh, x_fresh)):
                with torch.no_grad():
                    y = flow_sample(student.process, student.ema_model, student.process.prior_std * z, "euler", k,
                                    clip_x0=clip)
                errors[name] = float(((y - x) ** 2).mean())
            rows[f"{run}:{k}"] = {**errors, "ratio": errors["fresh"] / errors["train"]}
    print("\n| student | calls | training pairs | fresh pairs | fresh / training |\n|---|---:|---:|---:|---:|")
    for key, row in rows.items():
        run, k = key.rsplit(":", 1)
        print(f"| {run} | {k} | {row['train']:.4f} | {row['fresh']:.4f} | {row['ratio']:.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"n": args.n, "seed": args.seed, "pairs": str(source), "teacher": args.teacher, "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
