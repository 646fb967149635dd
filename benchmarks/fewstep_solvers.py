"""Few-call sampling on a trained run: every training-free solver at 1-8 network calls.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fewstep_solvers.py runs/digits            # the table
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fewstep_solvers.py runs/digits --sweep    # grids x solvers

FD-proxy (``common.QualityRunner``, i.e. ``sample_quality``: the digit classifier's features, reference the training split,
floor the held-out test split at the same sample count (450 on the digits, so every cell has 450
samples: FD is biased upwards at small counts, and only equal counts compare), x_0 clipped as
``ddpmkit sample`` does), seed 0: every row starts from the same noise. The table runs each solver on its default grid
(``SAMPLERS[name].grid_for(steps)``) and the old defaults of DPM-Solver++ for comparison; the
sweep runs each solver on every grid (the measurements behind the defaults, docs/SOLVERS.md).
Prints a markdown table and writes benchmarks/out/fewstep_solvers.json (or fewstep_grids.json).
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from common import QualityRunner
from ddpmkit.data import load_dataset
from ddpmkit.runs import load_checkpoint
from ddpmkit.sampling import SAMPLERS

TABLE = {   # row -> (sampler, params, step counts)
    "ddim": ("ddim", {}, (1, 2, 4, 5, 8)),
    "dpmpp2m": ("dpmpp2m", {}, (1, 2, 4, 5, 8)),
    "dpmpp2m (old default: logsnr)": ("dpmpp2m", {"grid": "logsnr"}, (4, 5)),
    "dpmpp2m no lower-order final": ("dpmpp2m", {"lower_order_final": False}, (4, 5)),
    "dpmpp3m": ("dpmpp3m", {}, (4, 5, 8)),
    "unipc": ("unipc", {}, (1, 2, 4, 5, 8)),
    "unipc bh1": ("unipc", {"variant": "bh1"}, (4, 5)),
    "unipc order 2": ("unipc", {"order": 2}, (4, 5)),
    "ipndm": ("ipndm", {}, (1, 2, 4, 5, 8)),
    "ipndm_v": ("ipndm_v", {}, (4, 5, 8)),
    "deis": ("deis", {}, (4, 5, 8)),
    "heun (3 steps = 5 calls)": ("heun", {}, (3,)),
}
SWEEP_SAMPLERS = ("ddim", "dpmpp2m", "unipc", "ipndm", "deis")
SWEEP_GRIDS = ("uniform", "trailing", "logsnr", "karras", "logsnr_open", "karras_open")
SWEEP_STEPS = (2, 4, 5, 8)


def run(run_dir: str, rows: dict[str, tuple[str, dict, tuple[int, ...]]], n: int | None) -> dict:
    ck = load_checkpoint(run_dir)
    test, train = load_dataset(ck.config.data, "test"), load_dataset(ck.config.data, "train")
    runner = QualityRunner(test, train, n, verbose=False)
    model, process = ck.ema_model.eval(), ck.process
    results: dict = {"run": run_dir, "num_samples": n, "rows": []}
    for steps in sorted({s for _, _, ss in rows.values() for s in ss}):
        names = [name for name, (_, _, ss) in rows.items() if steps in ss]
        params = {name: {"sampler": rows[name][0], **rows[name][1]} for name in names}
        start = time.perf_counter()
        q = runner.rows(process, model, params, [steps], seed=0)
        results["floor"], results["num_samples"] = q["floor"]["fd"], q["num_samples"]
        for r in q["rows"]:
            sampler, extra, _ = rows[r["sampler"]]
            grid = extra.get("grid", SAMPLERS[sampler].grid_for(steps))
            results["rows"].append({"row": r["sampler"], "sampler": sampler, "grid": grid, "steps": steps,
                                    "nfe": r["nfe"], "fd": r["fd"], **{k: v for k, v in extra.items() if k != "grid"}})
            print(f"  {r['sampler']:28s} grid={grid:12s} steps={steps} nfe={r['nfe']:.0f} fd={r['fd']:.4f}", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s for {len(names)} rows at {steps} steps)", flush=True)
    return results


def table(results: dict) -> str:
    floor = results["floor"]
    steps = sorted({r["steps"] for r in results["rows"]})
    lines = [f"FD-proxy, {results['num_samples']} samples; floor (test split) {floor:.4f}; cell: FD (x floor)",
             "| row | " + " | ".join(f"{s} steps" for s in steps) + " |", "|---|" + "---:|" * len(steps)]
    for name in dict.fromkeys(r["row"] for r in results["rows"]):
        cells = {r["steps"]: r for r in results["rows"] if r["row"] == name}
        lines.append(f"| {name} | " + " | ".join(
            f"{cells[s]['fd']:.3f} ({cells[s]['fd'] / floor:.2f}x, {cells[s]['grid']})" if s in cells else ""
            for s in steps) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/digits")
    parser.add_argument("--n", type=int, default=None,
                        help="samples per cell (default: the test split's size, as the floor; 450 for the digits)")
    parser.add_argument("--steps", default=None, help="the sweep's step counts, e.g. 4,5 (default 2,4,5,8)")
    parser.add_argument("--sweep", action="store_true", help="every solver on every grid (about 10 min)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")   # grids that start below the top warn; the table shows their cost
    if args.sweep:
        steps = tuple(int(s) for s in args.steps.split(",")) if args.steps else SWEEP_STEPS
        rows = {f"{s} {g}": (s, {"grid": g}, steps) for s in SWEEP_SAMPLERS for g in SWEEP_GRIDS}
    else:
        rows = TABLE
    results = run(args.run, rows, args.n)
    print(table(results))
    out = Path("benchmarks/out") / ("fewstep_grids.json" if args.sweep else "fewstep_solvers.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
