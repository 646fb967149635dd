"""Few-step students of the digits teacher: consistency (CD, ECT, iCT from scratch) and progressive
distillation, FD-proxy at 1, 2, 4 and 8 network calls, and the wall time each took.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fewstep_distill.py runs/digits
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fewstep_distill.py runs/digits --methods cd,ect --cd-steps 600

Every student is an ordinary run under ``--work`` (default benchmarks/out/distill/), trained with
``num_threads=1`` through ``dk.distill`` (CD, ECT, PD) or ``train(load_config("digits-ct"))``;
a run whose last checkpoint exists is reused (its recorded wall time too). FD-proxy is
``common.QualityRunner``'s (``sample_quality``: the bundled digit classifier's features, reference the training split, floor
the held-out test split at the same count, x_0 clipped as ``ddpmkit sample`` does), seed 0. The
teacher rows: DDIM and the best training-free few-step solvers on the teacher itself. The
progressive student at 8 / 4 / 2 / 1 steps is the checkpoint at the end of each round.
Prints a markdown table, writes benchmarks/out/fewstep_distill.json and one- and two-call sample
grids (benchmarks/out/distill/<method>_<calls>.png).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import ddpmkit as dk
from common import QualityRunner
from ddpmkit.data import load_dataset
from ddpmkit.evaluation.evaluate import pick_extractor
from ddpmkit.io.checkpoint import list_checkpoints
from ddpmkit.runs import load_checkpoint
from ddpmkit.sampling import SAMPLERS
from ddpmkit.training.config import load_config
from ddpmkit.viz import save_sample_grid
from ddpmkit.training.progressive import PD_GRID, progressive_rounds
from ddpmkit.training.train import train

CALLS = (1, 2, 4, 8)
COMMON = ["num_threads=1", "log_every=50", "sample_every=0", "keep_last=0"]


def teacher_seconds(run: Path) -> float:
    """The teacher's own training wall time from its metrics.jsonl: ``time`` restarts at each
    resume, so the sum of each segment's last value."""
    total, last = 0.0, 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        now = float(json.loads(line)["time"])
        total, last = (total + last, now) if now < last else (total, now)
    return total + last


def _timed(run: Path, fit: Any) -> float:
    """Train ``run`` with ``fit()`` unless it is done; the wall time (recorded in run/wall.json)."""
    record = run / "wall.json"
    if record.is_file():
        return float(json.loads(record.read_text())["seconds"])
    start = time.perf_counter()
    fit()
    seconds = time.perf_counter() - start
    record.write_text(json.dumps({"seconds": seconds}))
    return seconds


def distil_all(teacher: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """Train every requested student; their wall times in seconds."""
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    lr = [f"optim.lr={args.lr}", "optim.warmup=50"]
    plans = {
        "cd": lambda: dk.distill(teacher, "consistency", work / "cd", 1, mode="cd", solver="heun",
                                 train_steps=args.cd_steps, overrides=[*COMMON, *lr, f"checkpoint_every={args.cd_steps}"]),
        "ect": lambda: dk.distill(teacher, "consistency", work / "ect", 1, mode="ect", train_steps=args.ect_steps,
                                  overrides=[*COMMON, *lr, f"checkpoint_every={args.ect_steps}"]),
        "pd": lambda: dk.distill(teacher, "progressive", work / "pd", 1, teacher_steps=args.pd_teacher_steps,
                                 train_steps=args.pd_steps,
                                 overrides=[*COMMON, *lr, "optim.decay=constant",
                                            f"checkpoint_every={args.pd_steps // _rounds(args)}"]),
        "ct": lambda: train(load_config("digits-ct", [*COMMON, f"out={work / 'ct'}", f"optim.steps={args.ct_steps}",
                                                      f"checkpoint_every={args.ct_steps}"])),
    }
    for name in args.methods:
        print(f"== {name}", flush=True)
        seconds[name] = _timed(work / name, plans[name])
        print(f"   {seconds[name]:.0f} s", flush=True)
    return seconds


def _rounds(args: argparse.Namespace) -> int:
    return len(progressive_rounds(args.pd_teacher_steps, 1))


def rows_for(name: str, run: Path, args: argparse.Namespace) -> list[tuple[str, Any, Any, str, dict, int]]:
    """(row, process, model, sampler, params, calls) for each call count of a student or the teacher."""
    if name == "pd":   # the checkpoint at the end of each round: 8, 4, 2, 1 steps
        rounds = progressive_rounds(args.pd_teacher_steps, 1)
        out = []
        for (step, path), steps in zip(list_checkpoints(run / "checkpoints"), rounds):
            if steps in CALLS:
                ck = load_checkpoint(path)
                out.append(("pd", ck.process, ck.ema_model, "ddim", {"grid": PD_GRID}, steps))
        return out
    ck = load_checkpoint(run)
    if name == "teacher":
        solvers = ["ddim"] + [s for s in ("ipndm", "unipc", "dpmpp2m") if s in SAMPLERS]
        return [(f"teacher {s}", ck.process, ck.ema_model, s, {}, c) for s in solvers for c in CALLS]
    return [(name, ck.process, ck.ema_model, "consistency", {}, c) for c in CALLS]


def evaluate(teacher: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    ck = load_checkpoint(teacher)
    test, train_split = load_dataset(ck.config.data, "test"), load_dataset(ck.config.data, "train")
    runner = QualityRunner(test, train_split, args.n, verbose=False)
    results: dict[str, Any] = {"rows": []}
    for name in ["teacher", *args.methods]:
        for row, process, model, sampler, params, calls in rows_for(name, teacher if name == "teacher" else work / name, args):
            q = runner.rows(process, model, {row: {"sampler": sampler, **params}}, [calls], seed=0)
            results["floor"] = q["floor"]["fd"]
            r = q["rows"][0]
            results["rows"].append({"row": row, "sampler": sampler, "calls": calls, "nfe": r["nfe"], "fd": r["fd"]})
            print(f"  {row:18s} calls={calls} nfe={r['nfe']:.0f} fd={r['fd']:.4f}", flush=True)
            if name != "teacher" or sampler == "ddim":
                if calls in (1, 2):
                    x = dk.sample(process, model, (64, *test.shape), sampler, steps=calls, seed=0, clip_x0=True,
                                  progress=False, **params)
                    save_sample_grid(x, work / f"{row.replace(' ', '_')}_{calls}.png", test.levels)
    return results


def table(results: dict[str, Any]) -> str:
    floor = results["floor"]
    best: dict[str, dict[int, float]] = {}
    for r in results["rows"]:
        best.setdefault(r["row"], {})[r["calls"]] = r["fd"]
    lines = [f"FD-proxy, {results['num_samples']} samples, seed 0; floor (held-out test split) {floor:.4f}; "
             "cell: FD (x floor)", "",
             "| method | train / distil wall time | " + " | ".join(f"{c} call{'s' * (c > 1)}" for c in CALLS) + " |",
             "|---|---|" + "---|" * len(CALLS)]
    for row, cells in best.items():
        key = "teacher" if row.startswith("teacher") else row
        wall = results["seconds"].get(key)
        wall_text = "" if wall is None else f"{wall:.0f} s"
        lines.append(f"| {row} | {wall_text} | " + " | ".join(
            f"{cells[c]:.3f} ({cells[c] / floor:.2f}x)" if c in cells else "" for c in CALLS) + " |")
    return "\n".join(lines)


def mid_sweep(teacher: Path, work: Path, methods: list[str], mids: list[float], n: int) -> list[dict[str, Any]]:
    """FD-proxy of the two-call consistency sampler on the grid [sigma_max, sigma_mid, 0] for each
    sigma_mid (Song et al. 2023 choose it by such a search: 0.821 on CIFAR-10), same noise (seed 0)."""
    from ddpmkit.evaluation.features import extract_features
    from ddpmkit.evaluation.metrics import frechet_distance_from_features
    from ddpmkit.sampling import SampleOptions
    from ddpmkit.sampling.consistency import consistency

    ck = load_checkpoint(teacher)
    test, train_split = load_dataset(ck.config.data, "test"), load_dataset(ck.config.data, "train")
    extractor = pick_extractor(test)
    reference = extract_features(extractor, train_split.x).features
    rows = []
    for name in methods:
        run = load_checkpoint(work / name)
        D = run.process.denoiser(run.ema_model, clip_x0=True)
        for mid in mids:
            g = torch.Generator().manual_seed(0)
            x_T = run.process.sigma_max * torch.randn((n, *test.shape), generator=g)
            with torch.no_grad():
                x = consistency(D, x_T, [run.process.sigma_max, mid, 0.0], SampleOptions(generator=g, progress=False))
            fd = float(frechet_distance_from_features(reference, extract_features(extractor, x).features))
            rows.append({"row": name, "sigma_mid": mid, "fd": fd})
            print(f"  {name:6s} sigma_mid={mid:<6g} fd={fd:.4f}", flush=True)
    return rows


def figure(work: Path, rows: list[str], out: Path, zoom: int = 1) -> Path:
    """The one- and two-call grids of ``rows`` side by side, one labelled row each (PIL, nearest zoom)."""
    from PIL import Image, ImageDraw

    present = [r for r in rows if (work / f"{r}_1.png").is_file()]
    tiles = [[Image.open(work / f"{r}_{c}.png").convert("L") for c in (1, 2)] for r in present]
    w, h = (zoom * v for v in tiles[0][0].size)
    label, gap = 14, 6
    sheet = Image.new("L", (2 * w + 3 * gap, len(present) * (h + label + gap) + gap), 255)
    draw = ImageDraw.Draw(sheet)
    for i, (row, pair) in enumerate(zip(present, tiles)):
        top = gap + i * (h + label + gap)
        for j, tile in enumerate(pair):
            left = gap + j * (w + gap)
            draw.text((left, top), f"{row.replace('_', ' ')}: {j + 1} call{'s' * j}", fill=0)
            sheet.paste(tile.resize((w, h), Image.NEAREST), (left, top + label))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("teacher", help="the teacher run (the digits preset's)")
    p.add_argument("--work", default="benchmarks/out/distill", help="where the student runs go")
    p.add_argument("--methods", default="cd,ect,pd,ct", help="comma-separated: cd, ect, pd, ct")
    p.add_argument("--cd-steps", type=int, default=600)
    p.add_argument("--ect-steps", type=int, default=600)
    p.add_argument("--pd-steps", type=int, default=800, help="all rounds together")
    p.add_argument("--pd-teacher-steps", type=int, default=16)
    p.add_argument("--ct-steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=5e-4, help="the distillations' learning rate (CD, ECT, PD)")
    p.add_argument("--n", type=int, default=450, help="samples per cell (450 = the test split)")
    p.add_argument("--skip-eval", action="store_true")
    args = p.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    torch.set_num_threads(1)
    teacher, work = Path(args.teacher), Path(args.work)
    seconds = {"teacher": teacher_seconds(teacher), **distil_all(teacher, work, args)}
    if args.skip_eval:
        print(json.dumps(seconds, indent=1))
        return
    results = {**evaluate(teacher, work, args), "seconds": seconds, "num_samples": args.n, "settings": vars(args)}
    print(table(results))
    out = Path("benchmarks/out/fewstep_distill.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out} and {figure(work, ['teacher_ddim', *args.methods], work / 'samples.png')}")


if __name__ == "__main__":
    main()
