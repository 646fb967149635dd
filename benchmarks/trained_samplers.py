"""FD-proxy of every sampler at few steps on a trained run (e.g. the demo's: cosine, v-prediction).

    .venv/bin/python benchmarks/trained_samplers.py runs/digits
    .venv/bin/python benchmarks/trained_samplers.py runs/digits --rows ddim@10,heun@10 --num-samples 100

Each (sampler, steps) row is what ``ddpmkit eval RUN --samplers NAME --steps S --no-bound --no-ode``
measures: :func:`ddpmkit.evaluation.evaluate.evaluate_model` on the run's EMA network
(:func:`ddpmkit.load_run`), the test split's size in samples (450 on the digits), seed 0, in the
features ``pick_extractor`` chooses. Prints one line per row (network calls and FD-proxy), then the
table of :func:`~ddpmkit.evaluation.evaluate.quality_table`, and writes the rows as JSON
(``--json``, default benchmarks/out/trained_samplers.json). Compare with the floor the demo
reports (0.248 on the digits).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, machine_info  # noqa: E402
from ddpmkit.evaluation.evaluate import evaluate_model, quality_table  # noqa: E402
from ddpmkit.runs import load_run  # noqa: E402

ROWS = "ddim@10,euler@10,heun@10,heun@20,dpmpp2m@10,dpmpp3m@10,sde@100,pc@50,ddpm@50,dpmpp2m_sde@20,heun_churn@10,rk45@1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory or checkpoint")
    p.add_argument("--rows", default=ROWS, help="comma-separated sampler@steps")
    p.add_argument("--num-samples", type=int, default=None, help="samples per row (default: the test split's size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "trained_samplers.json"))
    args = p.parse_args(argv)
    try:
        args.rows = [(name, int(steps)) for name, steps in (item.split("@") for item in args.rows.split(",") if item)]
    except ValueError:
        p.error(f"--rows must be sampler@steps items, got {args.rows!r}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    rows, floor = [], None
    for name, steps in args.rows:
        start = time.perf_counter()
        report = evaluate_model(run.config, run.process, run.model, samplers=[name], steps=[steps],
                                num_samples=args.num_samples, seed=args.seed, ode=False, bound=False, progress=False)
        quality = report["quality"]
        floor = quality["floor"]
        for r in quality["rows"]:
            rows.append(r)
            print(f"{name:12s} steps {steps:4d} nfe {r.get('nfe', '?')!s:>5}  FD {r['fd']:.3f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    quality = {"rows": rows, "floor": floor}
    print(quality_table(quality))
    out = {"run": str(run.path), "step": run.step, "seed": args.seed, "machine": machine_info(), **quality}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
