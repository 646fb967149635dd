"""Point clouds on the generated shapes: generation, completion and denoising, beside baselines.

    .venv/bin/python benchmarks/pointclouds.py                 # uses runs/shapes, runs/shapes-completion, runs/shapes-denoise
    .venv/bin/python benchmarks/pointclouds.py --n 100 --denoise-n 50 --runs runs
    .venv/bin/python benchmarks/pointclouds.py --parts generation,completion   # the other parts' results in the JSON stay

Train the three presets first (``ddpmkit train shapes`` etc.). Everything is measured on the
held-out (test) split of the presets' data (the same shapes in all three: ``data.n`` 1200, seed 0,
each normalised to zero mean and coordinate std 1; 256 points per shape for generation and
completion, 512 for denoising: each part uses its run's ``data.points``).

* Generation (PointFlow's protocol, Chamfer only: exact EMD costs O(N^3) per pair): 1-NNA-CD,
  COV-CD and MMD-CD of ``--n`` samples against ``--n`` test clouds; beside them the floor
  (``--n`` training clouds against the same test clouds) and the copying baseline (``--n`` random
  training shapes with a fresh draw of their surface points: N of 2N new area-uniform points).
* Completion: the mean squared Chamfer distance of each completion (the model conditioned on the
  ``data.partial_points`` points on one side of a random plane) to the true complete cloud, beside
  the partial itself and the partial with its point reflection through the centroid added (exact for centrally
  symmetric shapes; the centroid of the complete shape is the origin of the normalised frame,
  which the model is given too).
* Denoising (Luo & Hu 2021): Gaussian noise of std 1%, 2%, 3% of each shape's bounding-sphere
  radius (about 2 in these units); Chamfer to the clean cloud and the mean point-to-surface
  distance (exact, :func:`ddpmkit.data.shapes.point_to_surface`) before and after: gradient ascent
  on the score (30 steps, step 0.2, decay 0.95; at Luo & Hu's fixed sigma, and with sigma annealed
  to sigma/4, the default), one Tweedie step D(x, sigma), annealed Langevin (30 levels, sigma/4),
  and a classical baseline, the mean of each point's 8 nearest neighbours (Laplacian smoothing).
  The noise level is given to the denoisers (no estimation).

Writes benchmarks/out/pointclouds.json and the pictures docs/pointclouds_{generation,completion,denoise}.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpmkit.data import load_dataset
from ddpmkit.data.dataset import split_indices
from ddpmkit.data.shapes import make_shapes, point_to_surface
from ddpmkit.evaluation.metrics.pointcloud import chamfer, generation_metrics
from ddpmkit.io.checkpoint import load_checkpoint
from ddpmkit.io.files import write_json
from ddpmkit.sampling import sample
from ddpmkit.sampling.point_denoise import denoise_points
from ddpmkit.training.monitor import clouds_image

NOISE_LEVELS = (0.01, 0.02, 0.03)
GEN_KEYS = ("1-nna-cd", "cov-cd", "mmd-cd")
PARTS = ("generation", "completion", "denoising")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs", help="the folder holding shapes, shapes-completion, shapes-denoise")
    p.add_argument("--n", type=int, default=100, help="clouds per set for generation and completion (default 100)")
    p.add_argument("--denoise-n", type=int, default=16, help="test clouds per noise level (default 16)")
    p.add_argument("--sampler", default="ddim", help="the sampler of generation and completion (default ddim)")
    p.add_argument("--steps", type=int, default=50, help="its steps (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/pointclouds.json")
    p.add_argument("--pictures", default="docs", help="folder for the picture grids (default docs)")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated parts to run, of {','.join(PARTS)} (default all); the JSON keeps the others")
    args = p.parse_args()
    parts = [part for part in args.parts.split(",") if part]
    if not parts or set(parts) - set(PARTS):
        p.error(f"--parts must name some of {','.join(PARTS)}, got --parts={args.parts!r}")
    args.parts = parts
    return args


def _sample(ckpt: Any, n: int, shape: tuple[int, ...], args: argparse.Namespace, cond: dict | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(args.seed)
    return sample(ckpt.process, ckpt.ema_model, (n, *shape), sampler=args.sampler, steps=args.steps, generator=gen,
                  progress=False, cond=cond or {})


def _resampled_train(config: Any, n: int, seed: int) -> torch.Tensor:
    """``n`` random training shapes with new surface points: shape i of make_shapes draws its size,
    proportions and rotation before its points, so 2N points instead of N give the same shape;
    a random N of them, renormalised, is a fresh area-uniform draw."""
    data = config.data
    train_index = split_indices(data.n, data.test_fraction, data.seed, "train")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(train_index, n, replace=False)
    dense = make_shapes(data.n, 2 * data.points, seed=data.seed).points[chosen].astype(np.float64)
    keep = np.stack([np.sort(rng.choice(dense.shape[1], data.points, replace=False)) for _ in range(n)])
    clouds = np.take_along_axis(dense, keep[..., None], axis=1)
    clouds -= clouds.mean(axis=1, keepdims=True)
    clouds /= clouds.reshape(n, -1).std(axis=1)[:, None, None]
    return torch.from_numpy(clouds.astype(np.float32))


def generation(args: argparse.Namespace, out: dict) -> torch.Tensor:
    ckpt = load_checkpoint(Path(args.runs) / "shapes")
    train, test = load_dataset(ckpt.config.data, "train"), load_dataset(ckpt.config.data, "test")
    n = min(args.n, len(test))
    refs = test.x[:n]
    start = time.perf_counter()
    samples = _sample(ckpt, n, test.shape, args)
    seconds = time.perf_counter() - start
    rows = {f"model ({args.sampler}, {args.steps} steps)": {**generation_metrics(samples, refs, ("cd",)),
                                                             "seconds": seconds},
            "floor: training clouds": generation_metrics(train.x[:n], refs, ("cd",)),
            "copying: training shapes re-sampled": generation_metrics(_resampled_train(ckpt.config, n, args.seed),
                                                                      refs, ("cd",))}
    out["generation"] = {"n": n, "points": test.shape[0], "step": ckpt.state["step"], "rows": rows}
    return samples


def completion(args: argparse.Namespace, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
    ckpt = load_checkpoint(Path(args.runs) / "shapes-completion")
    test = load_dataset(ckpt.config.data, "test")
    n = min(args.n, len(test))
    truth, partial = test.x[:n], test.cond["partial"][:n]
    start = time.perf_counter()
    completed = _sample(ckpt, n, test.shape, args, {"partial": partial})
    seconds = time.perf_counter() - start
    mirrored = torch.cat([partial, -partial], dim=1)

    def summary(x: torch.Tensor) -> dict[str, float]:
        d = chamfer(x.double(), truth.double())
        return {"chamfer": float(d.mean()), "chamfer_sem": float(d.std() / len(d) ** 0.5)}

    out["completion"] = {"n": n, "points": test.shape[0], "step": ckpt.state["step"], "partial_points": partial.shape[1],
                         "rows": {
        f"model ({args.sampler}, {args.steps} steps)": {**summary(completed), "seconds": seconds},
        "partial only": summary(partial),
        "partial + point reflection": summary(mirrored)}}
    return completed, partial


def _knn_mean(x: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Each point replaced by the mean of its k nearest neighbours (itself included)."""
    index = torch.cdist(x, x).topk(k, dim=-1, largest=False).indices            # (B, N, k)
    return torch.gather(x[:, None].expand(-1, x.shape[1], -1, -1), 2, index[..., None].expand(-1, -1, -1, 3)).mean(2)


def denoising(args: argparse.Namespace, out: dict) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(Path(args.runs) / "shapes-denoise")
    config = ckpt.config.data
    test_index = split_indices(config.n, config.test_fraction, config.seed, "test")[:args.denoise_n]
    shapes = make_shapes(config.n, config.points, seed=config.seed)
    clean = torch.from_numpy(shapes.points[test_index]).double()
    params = [shapes.params[i] for i in test_index]
    radius = clean.norm(dim=-1).amax(dim=1)                                      # clouds are centred
    patch = {"patch_points": config.patch_points}
    results: dict[str, Any] = {}
    pictures: dict[str, torch.Tensor] = {}
    for level in NOISE_LEVELS:
        g = torch.Generator().manual_seed(args.seed + int(level * 1000))
        sigma = level * radius
        noisy = clean + sigma[:, None, None] * torch.randn(clean.shape, generator=g, dtype=torch.float64)
        x = noisy.float()
        methods = {
            "noisy input": lambda: x,
            "kNN mean (k=8)": lambda: _knn_mean(x),
            "one Tweedie step D(x, sigma)": lambda: denoise_points(ckpt.process, ckpt.ema_model, x, sigma=sigma.numpy(),
                                                                   steps=1, step_size=1.0, **patch),
            "score ascent, fixed sigma (Luo & Hu)": lambda: denoise_points(ckpt.process, ckpt.ema_model, x,
                                                                          sigma=sigma.numpy(), anneal=1.0, **patch),
            "score ascent, sigma -> sigma/4 (default)": lambda: denoise_points(ckpt.process, ckpt.ema_model, x,
                                                                              sigma=sigma.numpy(), **patch),
            "annealed Langevin (30 levels)": lambda: torch.cat([
                denoise_points(ckpt.process, ckpt.ema_model, x[i:i + 1], sigma=float(sigma[i]), method="langevin",
                               generator=torch.Generator().manual_seed(args.seed), **patch) for i in range(len(x))]),
        }
        rows = {}
        for name, run in methods.items():
            start = time.perf_counter()
            y = run().double()
            seconds = time.perf_counter() - start
            p2s = point_to_surface(y.numpy(), params)
            rows[name] = {"chamfer": float(chamfer(y, clean).mean()), "p2s": float(np.mean(p2s)), "seconds": seconds}
            if level == 0.02:
                pictures[name] = y.float()
        results[f"{round(level * 100)}%"] = {"sigma_mean": float(sigma.mean()), "rows": rows}
    out["denoising"] = {"n": len(clean), "step": ckpt.state["step"], "levels": results,
                        "radius_mean": float(radius.mean())}
    pictures["clean"] = clean.float()
    return pictures


def tables(out: dict) -> str:
    lines = []
    g = out.get("generation")
    if g:
        lines += [f"Generation ({g['n']} samples vs {g['n']} test clouds, {g.get('points', 512)} points, model at step {g['step']}):", "",
                  "| set | 1-NNA-CD | COV-CD | MMD-CD |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['1-nna-cd']:.3f} | {v['cov-cd']:.3f} | {v['mmd-cd']:.4f} |" for k, v in g["rows"].items()]
        lines.append("")
    c = out.get("completion")
    if c:
        lines += [f"Completion ({c['n']} test shapes, partial of {c['partial_points']} points, model at step "
                  f"{c['step']}): squared Chamfer to the true complete cloud", "",
                  "| completion | Chamfer | +- sem |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['chamfer']:.4f} | {v['chamfer_sem']:.4f} |" for k, v in c["rows"].items()]
        lines.append("")
    d = out.get("denoising")
    if d:
        names = list(next(iter(d["levels"].values()))["rows"])
        lines += [f"Denoising ({d['n']} test shapes, noise std relative to the bounding-sphere radius, mean radius "
                  f"{d['radius_mean']:.2f}; model at step {d['step']}): Chamfer / point-to-surface", "",
                  "| method | " + " | ".join(f"{k} CD | {k} P2S" for k in d["levels"]) + " |",
                  "|---|" + "---:|---:|" * len(d["levels"])]
        for name in names:
            cells = " | ".join(f"{v['rows'][name]['chamfer']:.4f} | {v['rows'][name]['p2s']:.4f}"
                               for v in d["levels"].values())
            lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    parts = args.parts
    torch.set_num_threads(1)
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    out: dict[str, Any] = {k: previous[k] for k in PARTS if k in previous and k not in parts}
    for kept in out.values():   # each part records the command that measured it
        kept.setdefault("command", previous.get("command"))
    command = " ".join([Path(sys.executable).name, *sys.argv])
    out.update({"command": command, "python": platform.python_version(), "torch": torch.__version__,
                "machine": platform.machine()})
    pictures = Path(args.pictures)
    pictures.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if "generation" in parts:
        samples = generation(args, out)
        clouds_image(samples.numpy(), nrow=4, max_clouds=12).save(pictures / "pointclouds_generation.png")
    if "completion" in parts:
        completed, partial = completion(args, out)
        clouds_image(completed.numpy(), partial.numpy(), nrow=4, max_clouds=12).save(
            pictures / "pointclouds_completion.png")
    if "denoising" in parts:
        shown = denoising(args, out)
        rows = [shown[k][:4] for k in ("noisy input", "score ascent, sigma -> sigma/4 (default)", "clean")]
        clouds_image(torch.cat(rows).numpy(), nrow=4, max_clouds=12).save(pictures / "pointclouds_denoise.png")
    for part in parts:
        out[part]["command"] = command
    out["seconds"] = time.perf_counter() - start
    write_json(args.out, out)
    print(tables(out))
    print(f"\nwrote {args.out} and {pictures}/pointclouds_*.png in {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
