"""Point clouds on the generated shapes: generation, completion and denoising, beside baselines.

    .venv/bin/python benchmarks/pointclouds.py      # runs/shapes{,-pvcnn,-pvcnn-cond}, runs/shapes-completion{,-pdr}, runs/shapes-denoise
    .venv/bin/python benchmarks/pointclouds.py --n 100 --denoise-n 50 --runs runs
    .venv/bin/python benchmarks/pointclouds.py --parts generation,completion   # the other parts' results in the JSON stay

Train the presets first (``ddpmkit train shapes-pvcnn`` etc.; a run named in
``--generation-runs`` / ``--completion-runs`` that does not exist is skipped). Everything is
measured on the held-out (test) split of the presets' data (the same shapes in all: ``data.n``
1200, seed 0, each normalised to zero mean and coordinate std 1; 256 points per shape for
generation and completion, 512 for denoising: each part uses its run's ``data.points``).

* Generation (PointFlow's protocol): 1-NNA, COV and MMD by Chamfer and (``--emd 1``, the default;
  exact EMD, O(N^3) per pair, about 2-4 minutes per set at 256 points) by EMD, of ``--n`` samples
  of each run against ``--n`` test clouds (a class-conditional run draws its labels at the
  training split's shares, guided with ``--cfg-scale``); beside them the floor (``--n`` training
  clouds against the same test clouds) and the copying baseline (``--n`` random training shapes with a fresh
  draw of their surface points: N of 2N new area-uniform points). The spreads: the standard
  deviation of 1-NNA and COV over ``--rounds`` random halves of both sets (without replacement:
  a bootstrap's duplicated clouds would be each other's nearest neighbours), divided by sqrt 2.
  The family mix (:func:`~ddpmkit.evaluation.metrics.pointcloud.label_mix`): each cloud labelled
  by its nearest training cloud, the total variation to the training split's mix, and the
  families made at under a quarter of their share (what COV misses, by name); the floor's row
  labels the ``--n`` test clouds themselves, so its TV is what a real draw of that size scores.
* Completion: the mean squared Chamfer distance of each completion to the true complete cloud,
  on all test shapes and apart on the families that are not centrally symmetric (cone, mushroom,
  lamp, table). A run trained with ``data.missing_only`` (PDR) generates the missing points and
  keeps the partial exactly (:func:`ddpmkit.sampling.completion.complete_clouds`); an older run
  draws the whole cloud. Beside them: the partial itself and the partial with its point reflection
  through the centroid added (exact for centrally symmetric shapes; the centroid of the complete
  shape is the origin of the normalised frame, which the model is given too). ``--refiner RUN``
  adds PDR's second stage (``ddpmkit train-refiner``) on the same coarse completions, with the
  paired per-cloud difference refined - coarse.
* Denoising (Luo & Hu 2021): Gaussian noise of std 1%, 2%, 3% of each shape's bounding-sphere
  radius (about 2 in these units); Chamfer to the clean cloud and the mean point-to-surface
  distance (exact, :func:`ddpmkit.data.shapes.point_to_surface`) before and after: gradient ascent
  on the score (30 steps, step 0.2, decay 0.95; at Luo & Hu's fixed sigma, and with sigma annealed
  to sigma/4, the default), one Tweedie step D(x, sigma), annealed Langevin (30 levels, sigma/4),
  and a classical baseline, the mean of each point's 8 nearest neighbours (Laplacian smoothing);
  against the posterior mean (issue 23): the probability-flow ODE from sigma to 0 started at the
  noisy cloud (10 Euler steps = DDIM eta 0, SDEdit's cut without added noise), two Tweedie steps
  (at sigma, then sigma/2), and ``method="ode"`` (a Tweedie step, then the ODE from sigma/2 to 0).
  The noise level is given to the denoisers (no estimation). Each row's spread is the standard
  deviation over ``--rounds`` bootstrap resamples of the clouds: of its mean Chamfer, and of its
  mean difference to one Tweedie step on the same (resampled) clouds (paired).

Writes benchmarks/out/pointclouds.json and the pictures docs/pointclouds_{generation,completion,denoise}.png
(a row of 4 clouds per run, the truth last; completions with their partial in red).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpmkit.data import load_dataset
from ddpmkit.data.dataset import split_indices
from ddpmkit.data.shapes import SHAPE_FAMILIES, make_shapes, point_to_surface
from ddpmkit.evaluation.metrics.pointcloud import (chamfer, label_mix, mmd_cov, one_nna, pairwise_chamfer,
                                                   pairwise_emd)
from ddpmkit.runs import load_checkpoint
from ddpmkit.io.files import write_json
from ddpmkit.sampling import sample
from ddpmkit.sampling.guidance import ClassifierFreeGuidance, prior_labels
from ddpmkit.sampling.completion import complete_clouds, mirror_completion
from ddpmkit.sampling.loop import SampleOptions
from ddpmkit.sampling.ode import euler
from ddpmkit.sampling.point_denoise import denoise_points, ode_grid, patch_denoiser
from ddpmkit.sampling.refine import refine_completion
from ddpmkit.training.refiner import load_refiner
from ddpmkit.training.monitor import clouds_image

NOISE_LEVELS = (0.01, 0.02, 0.03)
TWEEDIE = "one Tweedie step D(x, sigma)"
GEN_KEYS = ("1-nna-cd", "cov-cd", "mmd-cd")
ASYMMETRIC = ("cone", "mushroom", "lamp", "table")   # the families that are not centrally symmetric
PARTS = ("generation", "completion", "denoising")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs", help="the folder holding the runs named below")
    p.add_argument("--generation-runs", default="shapes,shapes-pvcnn,shapes-pvcnn-cond",
                   help="comma-separated generation runs under --runs (missing ones are skipped)")
    p.add_argument("--completion-runs", default="shapes-completion,shapes-completion-pdr",
                   help="comma-separated completion runs under --runs (missing ones are skipped)")
    p.add_argument("--n", type=int, default=100, help="clouds per set for generation and completion (default 100)")
    p.add_argument("--denoise-n", type=int, default=16, help="test clouds per noise level (default 16)")
    p.add_argument("--sampler", default=None, help="the sampler of generation and completion (default: each run's "
                   "own sample_sampler, as `ddpmkit sample` takes it)")
    p.add_argument("--steps", type=int, default=None, help="its steps (default: the run's sample_steps)")
    p.add_argument("--cfg-scale", type=float, default=1.5,
                   help="classifier-free guidance scale of a class-conditional generation run, whose labels are "
                        "drawn at the training split's shares (default 1.5, picked on test clouds 100-199; 1: unguided)")
    p.add_argument("--ref-start", type=int, default=0,
                   help="generation: score against test clouds REF_START.. (default 0; 100: the set the guidance "
                        "scale was picked on)")
    p.add_argument("--emd", type=int, default=1, help="1: 1-NNA-EMD / COV-EMD for the models and the floor (default)")
    p.add_argument("--rounds", type=int, default=200, help="random halves for the spreads (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/pointclouds.json")
    p.add_argument("--pictures", default="docs", help="folder for the picture grids (default docs)")
    p.add_argument("--refiner", default=None, help="completion: also refine the PDR run's completions with this "
                   "refiner run (ddpmkit train-refiner), with the paired difference refined - coarse")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated parts to run, of {','.join(PARTS)} (default all); the JSON keeps the others")
    args = p.parse_args()
    parts = [part for part in args.parts.split(",") if part]
    if not parts or set(parts) - set(PARTS):
        p.error(f"--parts must name some of {','.join(PARTS)}, got --parts={args.parts!r}")
    args.parts = parts
    return args


def _sampler(ckpt: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The sampler and steps: ``--sampler`` / ``--steps``, else the run's own (``sample_sampler``,
    ``sample_steps``, ``sample_grid``)."""
    grid = ckpt.config.sample_grid if args.sampler is None else None
    return {"sampler": args.sampler or ckpt.config.sample_sampler, "steps": args.steps or ckpt.config.sample_steps,
            **({"grid": grid} if grid is not None else {})}


def _sample(ckpt: Any, n: int, shape: tuple[int, ...], args: argparse.Namespace, cond: dict | None = None,
            model: Any = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(args.seed)
    return sample(ckpt.process, model or ckpt.ema_model, (n, *shape), generator=gen, progress=False, cond=cond or {},
                  **_sampler(ckpt, args))


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


def _half_spreads(d_rr: np.ndarray, d_rs: np.ndarray, d_ss: np.ndarray, rounds: int, seed: int) -> dict[str, float]:
    """The spread of 1-NNA and COV over ``rounds`` random halves of both sets (n/2 vs n/2, without
    replacement: a bootstrap's duplicates would be each other's nearest neighbours), times
    1/sqrt(2), the ratio of the standard errors of a proportion at n and n/2."""
    rng = np.random.default_rng(seed)
    r, s = d_rs.shape
    nna, cov = [], []
    for _ in range(rounds):
        a, b = rng.choice(r, r // 2, replace=False), rng.choice(s, s // 2, replace=False)
        nna.append(one_nna(d_rr[np.ix_(a, a)], d_rs[np.ix_(a, b)], d_ss[np.ix_(b, b)]))
        cov.append(mmd_cov(d_rs[np.ix_(a, b)].T)[1])
    return {"1-nna_spread": float(np.std(nna) / 2 ** 0.5), "cov_spread": float(np.std(cov) / 2 ** 0.5)}


def _metrics(samples: torch.Tensor, refs: torch.Tensor, d_rr: dict[str, np.ndarray], names: tuple[str, ...],
             args: argparse.Namespace) -> dict[str, float]:
    """1-NNA, COV, MMD (PointFlow's protocol) for each distance of ``names`` ("cd", "emd"), with spreads."""
    out: dict[str, float] = {}
    for name in names:
        pair = pairwise_chamfer if name == "cd" else pairwise_emd
        if name not in d_rr:
            d_rr[name] = pair(refs.double()).numpy()
        d_rs, d_ss = pair(refs.double(), samples.double()).numpy(), pair(samples.double()).numpy()
        out[f"mmd-{name}"], out[f"cov-{name}"] = mmd_cov(d_rs.T)
        out[f"1-nna-{name}"] = one_nna(d_rr[name], d_rs, d_ss)
        out.update({f"{k.split('_')[0]}-{name}_spread": v
                    for k, v in _half_spreads(d_rr[name], d_rs, d_ss, args.rounds, args.seed).items()})
    return out


def _families(samples: torch.Tensor, train: Any) -> dict[str, Any]:
    """The family mix of a set by its clouds' nearest training clouds (Chamfer), its total variation
    to the training split's mix, and the families made at under a quarter of their training share."""
    mix, tv = label_mix(pairwise_chamfer(train.x.double(), samples.double()), train.y, len(SHAPE_FAMILIES))
    share = np.bincount(train.y.numpy(), minlength=len(SHAPE_FAMILIES)) / len(train)
    return {"family-tv": tv, "family-mix": dict(zip(SHAPE_FAMILIES, mix.tolist())),
            "families-missing": [f for f, m, s in zip(SHAPE_FAMILIES, mix, share) if m < s / 4]}


def _existing(args: argparse.Namespace, names: str) -> list[str]:
    found = [n for n in names.split(",") if n and (Path(args.runs) / n).is_dir()]
    if not found:
        raise SystemExit(f"none of the runs {names!r} exists under {args.runs}: train them first")
    return found


def generation(args: argparse.Namespace, out: dict) -> dict[str, torch.Tensor]:
    rows: dict[str, Any] = {}
    pictures: dict[str, torch.Tensor] = {}
    d_rr: dict[str, np.ndarray] = {}
    emd = ("cd", "emd") if args.emd else ("cd",)
    for run in _existing(args, args.generation_runs):
        ckpt = load_checkpoint(Path(args.runs) / run)
        train, test = load_dataset(ckpt.config.data, "train"), load_dataset(ckpt.config.data, "test")
        n = min(args.n, len(test) - args.ref_start)
        refs = test.x[args.ref_start:args.ref_start + n]
        start = time.perf_counter()
        cond, model, guided = {}, ckpt.ema_model, ""
        classes = getattr(ckpt.config.network, "num_classes", None)
        if classes is not None:   # the families at the training shares: the data's whole law
            cond["y"] = prior_labels(train.y, n, torch.Generator().manual_seed(args.seed + 1000))   # their own stream
            model = ClassifierFreeGuidance(ckpt.process, ckpt.ema_model, args.cfg_scale, classes)
            guided = f", family labels, guidance {args.cfg_scale:g}"
        samples = _sample(ckpt, n, test.shape, args, cond, model)
        seconds = time.perf_counter() - start
        how = _sampler(ckpt, args)
        rows[f"{run} ({ckpt.config.network_kind}, step {ckpt.state['step']}, {how['sampler']} {how['steps']}{guided})"] = {
            **_metrics(samples, refs, d_rr, emd, args), **_families(samples, train), "seconds": seconds}
        pictures[run] = samples
    rows["floor: training clouds"] = {**_metrics(train.x[:n], refs, d_rr, emd, args), **_families(refs, train)}
    copies = _resampled_train(ckpt.config, n, args.seed)
    rows["copying: training shapes re-sampled"] = {**_metrics(copies, refs, d_rr, ("cd",), args),
                                                   **_families(copies, train)}
    out["generation"] = {"n": n, "points": test.shape[0], "rows": rows}
    pictures["truth"] = refs
    return pictures


def completion(args: argparse.Namespace, out: dict) -> dict[str, torch.Tensor]:
    rows: dict[str, Any] = {}
    pictures: dict[str, torch.Tensor] = {}
    for run in _existing(args, args.completion_runs):
        ckpt = load_checkpoint(Path(args.runs) / run)
        data = ckpt.config.data
        full = load_dataset(replace(data, missing_only=False), "test")
        n = min(args.n, len(full))
        truth, partial, family = full.x[:n], full.cond["partial"][:n], full.y[:n]
        start = time.perf_counter()
        if data.missing_only:   # PDR: generate the missing points only, keep the given ones
            done = complete_clouds(ckpt.process, ckpt.ema_model, partial, data.points - data.partial_points,
                                   generator=torch.Generator().manual_seed(args.seed), **_sampler(ckpt, args))
        else:                   # the whole cloud, drawn from scratch
            done = _sample(ckpt, n, full.shape, args, {"partial": partial})
        seconds = time.perf_counter() - start
        rows[f"{run} ({ckpt.config.network_kind}, {'missing points' if data.missing_only else 'whole cloud'}, "
             f"step {ckpt.state['step']}, {_sampler(ckpt, args)['sampler']} {_sampler(ckpt, args)['steps']})"] = {
                 **_completion_row(done, truth, family), "seconds": seconds}
        pictures[run] = done
        if args.refiner and data.missing_only:   # PDR's second stage on the same coarse completions
            start, loaded = time.perf_counter(), load_refiner(args.refiner)
            refined = refine_completion(loaded.refiner, partial, done)
            row = {**_completion_row(refined, truth, family), "seconds": time.perf_counter() - start}
            for key, v in _completion_row(done, truth, family, refined).items():
                row[f"vs_coarse_{key}"] = v
            rows[f"{run} + refiner {args.refiner} (step {loaded.state['step']})"] = row
            pictures[f"{run} refined"] = refined
    rows["partial only"] = _completion_row(partial, truth, family)
    rows["partial + point reflection"] = _completion_row(mirror_completion(partial), truth, family)
    out["completion"] = {"n": n, "points": truth.shape[1], "partial_points": partial.shape[1], "rows": rows,
                         "asymmetric": list(ASYMMETRIC)}
    pictures.update({"partial": partial, "truth": truth})
    return pictures


def _completion_row(x: torch.Tensor, truth: torch.Tensor, family: torch.Tensor,
                    paired: torch.Tensor | None = None) -> dict[str, float]:
    """Mean squared Chamfer to the truth, its standard error, on all clouds and on the families
    that are not centrally symmetric (cone, mushroom, lamp, table) apart; with ``paired``, of the
    per-cloud difference CD(paired) - CD(x)."""
    d = chamfer(x.double(), truth.double())
    d = d if paired is None else chamfer(paired.double(), truth.double()) - d
    asym = torch.tensor([SHAPE_FAMILIES[int(f)] in ASYMMETRIC for f in family])
    row = {}
    for key, mask in (("all", torch.ones_like(asym)), ("asym", asym), ("sym", ~asym)):
        v = d[mask]
        row[key] = float(v.mean())
        row[f"{key}_sem"] = float(v.std() / len(v) ** 0.5)
        row[f"{key}_n"] = int(len(v))
    row["chamfer"], row["chamfer_sem"] = row["all"], row["all_sem"]
    return row


def _knn_mean(x: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Each point replaced by the mean of its k nearest neighbours (itself included)."""
    index = torch.cdist(x, x).topk(k, dim=-1, largest=False).indices            # (B, N, k)
    return torch.gather(x[:, None].expand(-1, x.shape[1], -1, -1), 2, index[..., None].expand(-1, -1, -1, 3)).mean(2)


def _flow_from_sigma(ckpt: Any, x: torch.Tensor, sigma: torch.Tensor, patch_points: int,
                     steps: int = 10) -> torch.Tensor:
    """The probability-flow ODE from each cloud's own sigma to 0, started at the noisy cloud (Euler =
    DDIM eta 0 on method="ode"'s grid from sigma: 10 levels down to sigma/10, then 0)."""
    D = patch_denoiser(ckpt.process.denoiser(ckpt.ema_model), patch_points)
    floor = float(ckpt.process.sigma_min)
    return torch.cat([euler(D, x[i:i + 1], ode_grid(float(s), steps, floor), SampleOptions(progress=False))
                      for i, s in enumerate(sigma.tolist())])


def _bootstrap(values: np.ndarray, rounds: int, seed: int) -> float:
    """The standard deviation of the mean of ``values`` (one per cloud) over ``rounds`` resamples of the clouds."""
    rng = np.random.default_rng(seed)
    return float(np.std([values[rng.integers(0, len(values), len(values))].mean() for _ in range(rounds)]))


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
            TWEEDIE: lambda: denoise_points(ckpt.process, ckpt.ema_model, x, sigma=sigma.numpy(), steps=1,
                                            step_size=1.0, **patch),
            "score ascent, fixed sigma (Luo & Hu)": lambda: denoise_points(ckpt.process, ckpt.ema_model, x,
                                                                          sigma=sigma.numpy(), anneal=1.0, **patch),
            "score ascent, sigma -> sigma/4 (default)": lambda: denoise_points(ckpt.process, ckpt.ema_model, x,
                                                                              sigma=sigma.numpy(), **patch),
            "annealed Langevin (30 levels)": lambda: torch.cat([
                denoise_points(ckpt.process, ckpt.ema_model, x[i:i + 1], sigma=float(sigma[i]), method="langevin",
                               generator=torch.Generator().manual_seed(args.seed), **patch) for i in range(len(x))]),
            "probability-flow ODE from sigma to 0 (10 Euler steps)": lambda: _flow_from_sigma(
                ckpt, x, sigma, config.patch_points),
            "two Tweedie steps, at sigma and sigma/2": lambda: denoise_points(
                ckpt.process, ckpt.ema_model, x, sigma=sigma.numpy(), steps=2, step_size=1.0, decay=1.0, anneal=0.5,
                **patch),
            "Tweedie, then the ODE from sigma/2 to 0 (ode, 5 steps)": lambda: denoise_points(
                ckpt.process, ckpt.ema_model, x, sigma=sigma.numpy(), method="ode", steps=5, **patch),
        }
        rows: dict[str, Any] = {}
        per_cloud: dict[str, np.ndarray] = {}
        for name, run in methods.items():
            start = time.perf_counter()
            y = run().double()
            seconds = time.perf_counter() - start
            p2s = point_to_surface(y.numpy(), params)
            cd = chamfer(y, clean).numpy()
            per_cloud[name] = cd
            rows[name] = {"chamfer": float(cd.mean()), "chamfer_spread": _bootstrap(cd, args.rounds, args.seed),
                          "p2s": float(np.mean(p2s)), "seconds": seconds}
            if level == 0.02:
                pictures[name] = y.float()
        for name, row in rows.items():   # paired with one Tweedie step on the same clouds
            row["vs_tweedie"] = float((per_cloud[name] - per_cloud[TWEEDIE]).mean())
            row["vs_tweedie_spread"] = _bootstrap(per_cloud[name] - per_cloud[TWEEDIE], args.rounds, args.seed)
        results[f"{round(level * 100)}%"] = {"sigma_mean": float(sigma.mean()), "rows": rows}
    out["denoising"] = {"n": len(clean), "step": ckpt.state["step"], "levels": results,
                        "radius_mean": float(radius.mean())}
    pictures["clean"] = clean.float()
    return pictures


def tables(out: dict) -> str:
    lines = []
    g = out.get("generation")
    if g:
        emd = any("1-nna-emd" in v for v in g["rows"].values())
        lines += [f"Generation ({g['n']} samples vs {g['n']} test clouds, {g.get('points', 512)} points; +- the spread "
                  "over random halves / sqrt 2):", "",
                  "| set | 1-NNA-CD | COV-CD | MMD-CD |" + (" 1-NNA-EMD | COV-EMD | MMD-EMD |" if emd else "")
                  + " family TV | families under 1/4 of their share |",
                  "|---|---:|---:|---:|" + ("---:|---:|---:|" if emd else "") + "---:|---|"]
        for k, v in g["rows"].items():
            cells = [f"{v['1-nna-cd']:.3f} +- {v.get('1-nna-cd_spread', 0):.3f}",
                     f"{v['cov-cd']:.3f} +- {v.get('cov-cd_spread', 0):.3f}", f"{v['mmd-cd']:.4f}"]
            if emd:
                cells += ([f"{v['1-nna-emd']:.3f} +- {v['1-nna-emd_spread']:.3f}",
                           f"{v['cov-emd']:.3f} +- {v['cov-emd_spread']:.3f}", f"{v['mmd-emd']:.4f}"]
                          if "1-nna-emd" in v else ["", "", ""])
            cells += [f"{v['family-tv']:.2f}", ", ".join(v["families-missing"])] if "family-tv" in v else ["", ""]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines.append("")
    c = out.get("completion")
    if c:
        asym = ", ".join(c.get("asymmetric", ()))
        lines += [f"Completion ({c['n']} test shapes, partial of {c['partial_points']} of {c.get('points', 256)} "
                  f"points): squared Chamfer to the true complete cloud, +- standard error; 'not symmetric': {asym}", "",
                  "| completion | all | not symmetric | centrally symmetric |", "|---|---:|---:|---:|"]
        for k, v in c["rows"].items():
            if "asym" not in v:
                lines.append(f"| {k} | {v['chamfer']:.4f} +- {v['chamfer_sem']:.4f} | | |")
                continue
            lines.append(f"| {k} | " + " | ".join(f"{v[p]:.4f} +- {v[p + '_sem']:.4f} (n={v[p + '_n']})"
                                                  for p in ("all", "asym", "sym")) + " |")
            if "vs_coarse_all" in v:
                lines.append(f"| {k}: refined - coarse, paired | " + " | ".join(
                    f"{v['vs_coarse_' + p]:+.4f} +- {v['vs_coarse_' + p + '_sem']:.4f}" for p in ("all", "asym", "sym")) + " |")
        lines.append("")
    d = out.get("denoising")
    if d:
        names = list(next(iter(d["levels"].values()))["rows"])
        lines += [f"Denoising ({d['n']} test shapes, noise std relative to the bounding-sphere radius, mean radius "
                  f"{d['radius_mean']:.2f}; model at step {d['step']}): Chamfer +- bootstrap spread, its difference "
                  "to one Tweedie step on the same clouds +- paired bootstrap spread, point-to-surface", "",
                  "| method | " + " | ".join(f"{k} CD | {k} vs Tweedie | {k} P2S" for k in d["levels"]) + " |",
                  "|---|" + "---:|---:|---:|" * len(d["levels"])]

        def cells(row: dict) -> str:
            versus = (f"{row['vs_tweedie']:+.5f} +- {row['vs_tweedie_spread']:.5f}"
                      if row.get("vs_tweedie") is not None else "")
            spread = f" +- {row['chamfer_spread']:.4f}" if "chamfer_spread" in row else ""
            return f"{row['chamfer']:.4f}{spread} | {versus} | {row['p2s']:.4f}"

        for name in names:
            lines.append(f"| {name} | " + " | ".join(cells(v["rows"][name]) for v in d["levels"].values()) + " |")
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
        shown = generation(args, out)
        grid = torch.cat([v[:4] for v in shown.values()])   # a row of 4 per model, the truth last
        clouds_image(grid.numpy(), nrow=4, max_clouds=len(grid)).save(pictures / "pointclouds_generation.png")
    if "completion" in parts:
        shown = completion(args, out)
        partial = shown.pop("partial")[:4]
        grid = torch.cat([v[:4] for v in shown.values()])   # a row per model, the truth last; partial in red
        clouds_image(grid.numpy(), partial.repeat(len(shown), 1, 1).numpy(), nrow=4, max_clouds=len(grid)).save(
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
