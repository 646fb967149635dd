"""FD-proxy at 1, 2, 4 and 8 network calls for rectified-flow runs (and a diffusion run for reference).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fewstep_flow.py runs/digits-flow runs/digits-flow-reflow \
        --baseline runs/digits
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fewstep_flow.py runs/digits-flow-1step --samplers euler \
        --calls 1,2 --out benchmarks/out/fewstep_flow_1step.json      # a one-step student (--one-step)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fewstep_flow.py runs/digits-flow-2step --samplers euler \
        --calls 1,2 --noise-seeds 2026,2027,2028,2029,2030            # a k-step student, 5 noise draws

For a flow run every sampler runs on the flow's own grid, uniform in t from t_max to 0
(:func:`ddpmkit.training.reflow.flow_sample` on :func:`ddpmkit.core.flow.flow_sigmas`: N calls for N steps of a one-call-per-step sampler);
a non-flow run (``--baseline``) runs through ``dk.sample`` with each sampler's default grid.
FD-proxy: 450 samples (noise seed 2026, apart from the reflow pairs' seed 0) in the features ``pick_extractor`` chooses for the data (the
bundled digit classifier's), against the training split, beside the floor (the held-out test
split's FD); ``--noise-seeds`` scores each sampler on several noise draws and adds their FDs and
mean (the table's FD is the first seed's). Training wall time: the run's last logged ``time`` (plus, for a reflow run, the
seconds its pairs took, from pairs.safetensors). Prints a table and writes
benchmarks/out/fewstep_flow.json.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from safetensors import safe_open

import ddpmkit as dk
from ddpmkit.data import load_dataset
from ddpmkit.evaluation.evaluate import pick_extractor
from ddpmkit.evaluation.features import extract_features
from ddpmkit.evaluation.metrics import feature_metrics
from ddpmkit.runs import load_checkpoint
from ddpmkit.training.reflow import flow_sample

CALLS = (1, 2, 4, 8)
FLOW_SAMPLERS = ("euler", "dpmpp2m", "dpmpp3m", "ipndm", "deis", "unipc")   # one call per step
BASELINE_SAMPLERS = ("ddim", "dpmpp2m")
NOISE_SEED = 2026


def train_seconds(run: Path) -> tuple[float, int, float]:
    """(training seconds, steps, pair seconds) of a run, from metrics.jsonl and pairs.safetensors."""
    last = json.loads((run / "metrics.jsonl").read_text().strip().splitlines()[-1])
    pairs = 0.0
    if (run / "pairs.safetensors").exists():
        with safe_open(str(run / "pairs.safetensors"), "pt") as f:
            pairs = float((f.metadata() or {}).get("seconds", "nan"))
    return float(last["time"]), int(last["step"]), pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="flow run directories")
    parser.add_argument("--baseline", action="append", default=[], help="a non-flow run for reference")
    parser.add_argument("--out", default="benchmarks/out/fewstep_flow.json")
    parser.add_argument("--samplers", default=",".join(FLOW_SAMPLERS),
                        help="the flow runs' samplers, comma-separated (e.g. euler for a one-step student)")
    parser.add_argument("--noise-seed", type=int, default=NOISE_SEED, help="the sampling noise's seed")
    parser.add_argument("--noise-seeds", default=None,
                        help="several noise seeds, comma-separated (the first replaces --noise-seed): FD per seed and mean")
    parser.add_argument("--calls", default=",".join(map(str, CALLS)), help="network calls, comma-separated")
    args = parser.parse_args()
    flow_samplers = tuple(args.samplers.split(","))
    calls_list = tuple(int(c) for c in args.calls.split(","))
    seeds = tuple(int(s) for s in args.noise_seeds.split(",")) if args.noise_seeds else (args.noise_seed,)
    args.noise_seed = seeds[0]
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")

    first = load_checkpoint(args.runs[0] if args.runs else args.baseline[0])
    train, test = load_dataset(first.config.data, "train"), load_dataset(first.config.data, "test")
    extractor = pick_extractor(test)
    ref = extract_features(extractor, train.x).features
    n = len(test)
    floor = feature_metrics(ref, extract_features(extractor, test.x).features,
                            kid_subset_size=min(1000, n), generator=torch.Generator().manual_seed(0))["fd"]
    # the sampling noise: not seed 0, which drew the reflow pairs' z (a student would be scored on its training noise)
    noises = [torch.randn((n, *test.shape), generator=torch.Generator().manual_seed(seed)) for seed in seeds]
    results = {"floor_fd": floor, "num_samples": n, "noise_seed": args.noise_seed, "noise_seeds": list(seeds),
               "calls": list(calls_list), "runs": []}

    def score(x: torch.Tensor) -> float:
        feats = extract_features(extractor, x.clamp(-1, 1)).features
        return feature_metrics(ref, feats, kid_subset_size=min(1000, n), generator=torch.Generator().manual_seed(0))["fd"]

    for run_text, flow in [(r, True) for r in args.runs] + [(r, False) for r in args.baseline]:
        run = Path(run_text)
        ck = load_checkpoint(run)
        seconds, steps, pair_seconds = train_seconds(run)
        row = {"run": str(run), "process": repr(ck.process), "train_seconds": seconds, "train_steps": steps,
               "pair_seconds": pair_seconds, "fd": {}, "fd_seeds": {}}
        for sampler in flow_samplers if flow else BASELINE_SAMPLERS:
            per_seed: dict[int, list[float]] = {}
            for calls in calls_list:
                for seed, z in zip(seeds, noises):
                    start = time.perf_counter()
                    with torch.no_grad():
                        if flow and sampler not in dk.SAMPLERS:   # a solver not registered in this tree
                            x = None
                        elif flow:
                            x = flow_sample(ck.process, ck.ema_model, ck.process.prior_std * z, sampler, calls,
                                            clip_x0=True)
                        else:
                            x = dk.sample(ck.process, ck.ema_model, None, sampler, calls, x_T=z, clip_x0=True,
                                          progress=False)
                    if x is None:
                        break
                    per_seed.setdefault(calls, []).append(score(x))
                    print(f"{run.name:24s} {sampler:8s} calls {calls} seed {seed}  FD {per_seed[calls][-1]:.3f}  "
                          f"({time.perf_counter() - start:.1f} s)", flush=True)
            if per_seed:
                row["fd"][sampler] = {c: v[0] for c, v in per_seed.items()}
                row["fd_seeds"][sampler] = {c: {"fd": v, "mean": sum(v) / len(v)} for c, v in per_seed.items()}
        results["runs"].append(row)

    print(f"\nFD-proxy ({n} samples, noise seed {args.noise_seed}) against the training split; floor (held-out test split) = {floor:.3f}")
    print(f"goals: 2 calls <= {1.2 * floor:.3f} (1.2x floor), 1 call <= {2 * floor:.3f} (2x floor)\n")
    print("| run | sampler | " + " | ".join(f"{c} call{'s' if c > 1 else ''}" for c in calls_list) + " | train time |")
    print("|---|---|" + "---|" * len(calls_list) + "---|")
    for row in results["runs"]:
        wall = f"{row['train_seconds']:.0f} s / {row['train_steps']} steps"
        if row["pair_seconds"]:
            wall += f" + {row['pair_seconds']:.0f} s pairs"
        for sampler, fds in row["fd"].items():
            cells = " | ".join(f"{fds[c]:.3f}" if c in fds else "-" for c in calls_list)
            print(f"| {Path(row['run']).name} | {sampler} | {cells} | {wall} |")
    best = {c: min((fds[c], Path(r["run"]).name, s) for r in results["runs"] for s, fds in r["fd"].items() if c in fds)
            for c in calls_list}
    results["best"] = {c: {"fd": v[0], "run": v[1], "sampler": v[2], "ratio_to_floor": v[0] / floor}
                       for c, v in best.items()}
    for c in calls_list:
        v = best[c]
        print(f"best at {c} call(s): {v[0]:.3f} = {v[0] / floor:.2f}x floor ({v[1]}, {v[2]})")
    if len(seeds) > 1:
        print(f"\nper noise seed ({', '.join(map(str, seeds))}) and mean:")
        for row in results["runs"]:
            for sampler, by_calls in row["fd_seeds"].items():
                cells = "; ".join(f"{c} call{'s' if c > 1 else ''}: " + " / ".join(f"{f:.3f}" for f in v["fd"])
                                  + f" (mean {v['mean']:.3f})" for c, v in by_calls.items())
                print(f"| {Path(row['run']).name} | {sampler} | {cells} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
