"""Point clouds on the command line: ``ddpmkit denoise`` and the point-cloud parts of ``sample``.

    ddpmkit denoise runs/shapes-denoise --input noisy.ply --noise 0.02 --out clean.npz --picture clean.png
    ddpmkit sample runs/shapes --n 16 --out shapes.png                      # shapes.png + shapes.npz
    ddpmkit sample runs/shapes-completion --partial-from test --n 16 --out completion.png
    ddpmkit sample runs/shapes-completion --partial-from partial.ply --n 4 --out mine.npz

A point file is ``.npy`` / ``.npz`` / ``.ply`` (:func:`ddpmkit.data.pointfiles.read_points`), one
cloud (N, 3) or a stack (S, N, 3). ``denoise`` normalises each cloud as the training data was
(zero mean, coordinate std 1: PointFlow's per-shape normalisation), denoises it by gradient ascent
on the model's score (:func:`ddpmkit.sampling.point_denoise.denoise_points`; by patches when the
model was trained on patches, ``data.patch_points``) and maps it back.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import load_dataset
from ..data.pointfiles import read_points
from ..data.shapes import normalize_clouds
from ..io.files import write_npz
from ..sampling.point_denoise import DENOISE_METHODS, denoise_points
from ..sampling.refine import refine_completion
from ..training.distributed import resolve_device
from ..training.refiner import load_refiner
from ..viz import clouds_image, save_sample_grid
from .common import at_least_one, load_checkpoint

__all__ = ["add_points_commands", "point_condition", "save_point_samples", "bounding_radius", "refine_sampled",
           "PARTIAL_SOURCES"]

PARTIAL_SOURCES = ("test",)   # besides a file: the partial clouds of the run's own test split
MIN_POINTS = 4                # fewer points give no meaningful scale and bounding sphere


def point_condition(partial_from: str | None, config: Any, n: int, device: torch.device) -> dict[str, torch.Tensor]:
    """``{"partial": (n, M, 3)}`` for a completion model (``network.conditional``), else ``{}``.

    ``partial_from``: "test" (the default: the partial clouds of the run's test split, in order,
    repeated when ``n`` is larger) or a point file holding one partial cloud (N, 3) or several
    (S, N, 3), in the frame of the training data (e.g. the ``partial`` array of an .npz this
    command wrote), repeated to ``n``.
    """
    conditional = bool(getattr(config.network, "conditional", False))
    if not conditional:
        if partial_from is not None:
            raise ValueError(f"--partial-from {partial_from} given, but the checkpoint's network is not "
                             "conditional (network.conditional=false)")
        return {}
    source = partial_from or "test"
    if source == "test":
        test = load_dataset(config.data, "test")
        if "partial" not in test.cond:
            raise ValueError(f"--partial-from test: the run's data {config.data.name!r} has no partial clouds "
                             "(data.partial_points is not set); give a point file")
        partial = test.cond["partial"]
    else:
        partial = torch.from_numpy(read_points(source))
        partial = partial[None] if partial.ndim == 2 else partial
    index = torch.arange(n) % len(partial)
    return {"partial": partial[index].to(device)}


def refine_sampled(refiner_path: str, missing: torch.Tensor, partial: torch.Tensor | None) -> torch.Tensor:
    """``ddpmkit sample --refiner RUN``: a missing-points run's samples moved by PDR's refinement
    network (``ddpmkit train-refiner``); the partial is untouched."""
    if partial is None:
        raise ValueError(f"--refiner {refiner_path} refines a completion run's missing points; this run takes no "
                         f"partial cloud")
    refiner = load_refiner(refiner_path).refiner
    m = partial.shape[1]
    done = refine_completion(refiner, partial.cpu(), torch.cat([partial, missing.to(partial.dtype)], 1).cpu())
    return done[:, m:].to(missing.device, missing.dtype)


def save_point_samples(x: torch.Tensor, out: str | Path, partial: torch.Tensor | None = None,
                       nrow: int | None = None) -> list[Path]:
    """Point-cloud samples (n, P, 3) as a picture (3-D scatter plots from three views, the
    partial clouds in red) and an ``.npz`` (``x``, and ``partial`` when given), at ``out`` with
    the suffixes ``.png`` and ``.npz`` (whichever ``out`` names, the other beside it)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = out.with_suffix(".png") if out.suffix in (".npz", ".png") else out.with_name(out.name + ".png")
    arrays_path = picture.with_suffix(".npz")
    arrays = {"x": x.detach().cpu().numpy()}
    if partial is not None:
        arrays["partial"] = partial.detach().cpu().numpy()
    write_npz(arrays_path, arrays)
    save_sample_grid(x.detach().cpu(), picture, None, nrow, partial=None if partial is None else partial.cpu(),
                     kind="points")
    return [picture, arrays_path]


def _read_clouds(path: str) -> tuple[np.ndarray, bool]:
    """The clouds of a point file as (S, N, 3) float64, and whether the file held one cloud."""
    clouds = np.asarray(read_points(path), dtype=np.float64)
    single = clouds.ndim == 2
    clouds = clouds[None] if single else clouds
    if clouds.shape[1] < MIN_POINTS:
        raise ValueError(f"{path}: a cloud needs at least {MIN_POINTS} points to be normalised and denoised, "
                         f"got {clouds.shape[1]}")
    return clouds, single


def bounding_radius(clouds: np.ndarray) -> np.ndarray:
    """The radius of each cloud's bounding sphere about its mean, (S,) (Luo & Hu's unit of noise)."""
    return np.linalg.norm(clouds - clouds.mean(axis=1, keepdims=True), axis=-1).max(axis=1)


def _cmd_denoise(args: argparse.Namespace) -> int:
    at_least_one("--steps", args.steps)
    if (args.noise is None) == (args.sigma is None):
        raise ValueError("give exactly one of --noise (a fraction of each cloud's bounding-sphere radius) and "
                         "--sigma (in the normalised units of the training data)")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device=device)
    if getattr(ckpt.config.network, "conditional", False):
        raise ValueError("ddpmkit denoise needs an unconditional point model (e.g. the shapes-denoise preset), "
                         f"got a conditional network from {args.checkpoint}")
    clouds, single = _read_clouds(args.input)
    normalised, shift, scale = normalize_clouds(clouds)
    if args.noise is not None:
        if not 0 < args.noise < 1:
            raise ValueError(f"--noise must be a fraction in (0, 1) of the bounding-sphere radius, got --noise {args.noise}")
        sigma = args.noise * bounding_radius(normalised)
    else:
        sigma = np.full(len(clouds), args.sigma)
    if args.method == "langevin" and len(set(sigma.tolist())) > 1:
        raise ValueError("--method langevin takes one noise level: give --sigma, or one cloud per call")
    x = torch.from_numpy(normalised.astype(np.float32)).to(device)
    generator = torch.Generator(device).manual_seed(args.seed)
    levels = sigma if args.method != "langevin" else float(sigma[0])   # langevin: one level (checked above)
    clean = denoise_points(ckpt.process, ckpt.ema_model, x, sigma=levels,
                           steps=args.steps, step_size=args.step_size, decay=args.decay, method=args.method,
                           anneal=args.anneal,
                           generator=generator, progress=not args.quiet, patch_points=ckpt.config.data.patch_points)
    restored = clean.double().cpu().numpy() * scale + shift
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {args.out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x": (restored[0] if single else restored).astype(np.float32),
              "noisy": (clouds[0] if single else clouds).astype(np.float32),
              "sigma": np.asarray(sigma * scale[:, 0, 0], dtype=np.float64)}
    write_npz(out, arrays)
    print(f"denoised {len(clouds)} cloud(s) of {clouds.shape[1]} points ({args.method}, {args.steps} steps, sigma "
          f"{', '.join(f'{s:.4g}' for s in sigma[:4])}{'...' if len(sigma) > 4 else ''} in normalised units) to {out}")
    if args.picture:
        both = np.concatenate([normalised, clean.double().cpu().numpy()])
        clouds_image(both, nrow=len(clouds), max_clouds=2 * min(len(clouds), 8)).save(args.picture)
        print(f"wrote the noisy (top) and denoised (bottom) clouds to {args.picture}")
    return 0


def add_points_commands(sub: Any) -> None:
    """Register ``ddpmkit denoise`` on the ``ddpmkit`` sub-parsers."""
    p = sub.add_parser("denoise", help="denoise point clouds with a point model's score (Luo & Hu 2021)")
    p.add_argument("checkpoint", help="a run directory or checkpoint .json of an unconditional point model")
    p.add_argument("--input", required=True, help="a point file: .npy / .npz / .ply, one cloud (N, 3) or (S, N, 3)")
    p.add_argument("--out", required=True, help="an .npz: x (the denoised clouds), noisy, sigma")
    p.add_argument("--noise", type=float, default=None,
                   help="the noise level as a fraction of each cloud's bounding-sphere radius (Luo & Hu: 0.01-0.03)")
    p.add_argument("--sigma", type=float, default=None, help="or the noise level in the training data's units "
                   "(each cloud normalised to coordinate std 1)")
    p.add_argument("--method", choices=DENOISE_METHODS, default="ascent",
                   help="gradient ascent on the score (default), annealed Langevin, or ode: one Tweedie step "
                   "then the probability-flow ODE from sigma/2 to 0")
    p.add_argument("--steps", type=int, default=30, help="ascent steps / Langevin levels / the ODE's Euler steps "
                   "(default 30)")
    p.add_argument("--step-size", type=float, default=0.2, help="the first step, a fraction of D(x) - x (default 0.2)")
    p.add_argument("--decay", type=float, default=0.95, help="the ascent's step decay per step (default 0.95)")
    p.add_argument("--anneal", type=float, default=None, help="the last noise level as a fraction of the first "
                   "(default 0.25; 1 keeps Luo & Hu's fixed level); for ode the ODE's first level (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of Langevin's noise (default 0)")
    p.add_argument("--picture", default=None, metavar="FILE.png", help="also draw the noisy and denoised clouds")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_cmd_denoise)
