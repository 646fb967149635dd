"""The command line: train, sample, evaluate, solve inverse problems, import and export models.

``ddpmkit train | sample | eval | presets | train-classifier | inpaint | solve | edit | denoise | import | export``:

    ddpmkit train digits optim.steps=3000 --resume
    ddpmkit sample runs/digits --sampler ddim --steps 50 --n 64 --seed 0 --out grid.png
    ddpmkit sample runs/digits --trajectory reverse.png --precision bf16   # x_t and the x0 estimate per step
    ddpmkit eval runs/digits
    ddpmkit train digits-cond && ddpmkit sample runs/digits-cond --guidance cfg --scale 3 --class 7
    ddpmkit train-classifier digits --steps 800 && ddpmkit sample runs/digits --guidance classifier \
        --scale 4 --classifier runs/digits-classifier            # a grid with one row per class
    torchrun --nproc_per_node 2 -m ddpmkit train cifar10-ddpm data.path=/data/cifar-10-batches-bin
    ddpmkit inpaint runs/digits --image digit.png --mask bottom --method repaint --out inpainted.png
    ddpmkit import ddpm-cifar10-32 --format diffusers --out runs/ddpm-cifar10
    ddpmkit train shapes && ddpmkit sample runs/shapes --n 16 --out shapes.png   # point clouds: picture + .npz

Errors a user can cause (a bad key, value, path or file) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import __version__
from ..data import to_uint8_images
from ..evaluation.evaluate import evaluate_checkpoint
from ..io.files import write_npz
from ..nets import compile_for_inference
from ..sampling import SAMPLERS, sample
from ..training.build import describe_process
from ..training.config import list_presets, load_config
from ..training.distributed import resolve_device, set_tf32
from ..training.folder_preset import folder_config
from ..training.train import train
from ..viz import plot_loss, save_sample_grid
from .common import at_least_one, load_for_command
from .convert import add_convert_commands, data_option
from .distill import add_distill_command
from .doctor import add_doctor_command
from .samplers import add_samplers_command
from .guidance import add_guidance_arguments, add_train_classifier_command, class_argument, prepare_sampling
from .handoff import add_handoff_arguments, prepare_handoff
from .inverse import add_inverse_commands
from .points import add_points_commands, point_condition, refine_sampled, save_point_samples
from .refine import add_refine_command
from .tune import add_tune_command, grid_argument
from . import trajectory   # the module: its draw_trajectory is looked up when drawn

__all__ = ["main", "build_parser"]

TRAJECTORY_SAMPLES = 4   # rows of samples in --trajectory's picture
TRAJECTORY_STEPS = 8     # evenly spaced steps of the loop in it


class AutocastNetwork(torch.nn.Module):
    """``network`` run under ``torch.autocast`` in bfloat16 on ``device`` (CPU or CUDA), its
    output cast back to float32 so that the sampler's own arithmetic stays in float32."""

    def __init__(self, network: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.network, self.device_type = network, torch.device(device).type

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.network(x, t, **cond)
        return out.float()


def _cmd_presets(args: argparse.Namespace) -> int:
    for name in list_presets():
        cfg = load_config(name)
        net, d = cfg.network, cfg.diffusion
        size = getattr(net, "image_size", None)
        process = f"{d.build()!r} {describe_process(d)}"
        print(f"{name:14s} process={d.process:8s} data={cfg.data.name:10s} network={cfg.network_kind}"
              f"{'' if size is None else f' {size}x{size}'} {process} "
              f"sampler={cfg.sample_sampler}/{cfg.sample_steps} steps={cfg.optim.steps} batch={cfg.optim.batch_size}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    folder = _image_folder(args.config, args.overrides)
    if folder is not None:   # `ddpmkit train folder DIR` / `ddpmkit train DIR`: sized from the images
        plan = folder_config(*folder)
        print(*plan.lines, sep="\n")
        config, on_step = plan.config, _loss_curve(plan.config)
    else:
        config, on_step = load_config(args.config, args.overrides), None
    result = train(config, resume=args.resume, max_steps=args.max_steps, progress=not args.quiet, on_step=on_step)
    if on_step is not None:
        on_step(None)
    if result.stopped_by:
        print(f"stopped by {result.stopped_by} at step {result.step}; resume with --resume")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def _image_folder(source: str, overrides: Sequence[str]) -> tuple[str, list[str]] | None:
    """``(folder, key=value overrides)`` when ``ddpmkit train`` is given a folder of images: the
    ``folder`` preset with the folder as its first argument (or ``data.path=``), or a directory
    that is neither a preset nor a run (no config.json); None otherwise."""
    settings = [item for item in overrides if "=" in item]
    if source == "folder":
        paths = [item for item in overrides if "=" not in item]
        paths += [item.split("=", 1)[1] for item in settings if item.split("=", 1)[0].strip() == "data.path"]
        if not paths:
            raise ValueError("the folder preset needs the images' folder: ddpmkit train folder DIR")
        return paths[0], settings
    path = Path(source)
    if source in list_presets() or not path.is_dir() or (path / "config.json").is_file():
        return None
    return source, list(overrides)


def _loss_curve(config: Any) -> Any:
    """An ``on_step`` hook that redraws ``<out>/loss.png`` from metrics.jsonl at every preview
    step (and when called with None, at the end)."""
    metrics, picture = Path(config.out) / "metrics.jsonl", Path(config.out) / "loss.png"

    def draw(trainer: Any) -> None:
        if trainer is None:   # the end of the run: rank 0 draws (torchrun sets RANK)
            due = os.environ.get("RANK", "0") == "0"
        else:
            due = trainer.dist.is_main and config.sample_every and trainer.step % config.sample_every == 0
        if due and metrics.is_file() and metrics.stat().st_size:
            plot_loss(metrics, picture)
    return draw


def _cmd_sample(args: argparse.Namespace) -> int:
    at_least_one("--n", args.n)
    device = resolve_device(args.device)
    set_tf32(device, args.tf32)
    ckpt, data = load_for_command(args.checkpoint, device, args.ema_rate)
    model = ckpt.ema_model if not args.raw_weights else ckpt.model
    if args.compile:
        model = compile_for_inference(model, device)
    if args.precision == "bf16":
        model = AutocastNetwork(model, device)
    data_shape, levels = data.shape, data.levels
    grid_argument(args)   # --grid FILE.json: a tune-grid file's levels (and its sampler and steps)
    _default_sampler_steps(args, ckpt.config, ckpt.process)
    params: dict[str, Any] = {}
    if args.eta is not None:
        params["eta"] = args.eta
    params.update({k: v for k, v in (("grid", args.grid), ("rho", args.rho)) if v is not None})
    guided = prepare_sampling(args, ckpt, model, device)
    points = data.kind == "points"   # point clouds: the completion condition, picture + .npz
    if points:
        guided.cond.update(point_condition(args.partial_from, ckpt.config, guided.n, device))
    elif args.partial_from is not None:
        raise ValueError(f"--partial-from is for point-cloud models, got {data.kind} data of shape {data_shape}")
    handoff = prepare_handoff(args, data, guided.cond, device)
    recorder = None
    if args.trajectory is not None:
        recorder = trajectory.TrajectoryRecorder(TRAJECTORY_SAMPLES, TRAJECTORY_STEPS)
    generator = torch.Generator(device).manual_seed(args.seed)
    x = sample(ckpt.process, guided.model, (guided.n, *data_shape), sampler=args.sampler, steps=args.steps,
               generator=generator, device=device, clip_x0=args.clip and levels is not None,
               progress=not args.quiet, cond=guided.cond, callback=recorder, handoff=handoff, **guided.params,
               **params)
    if args.refiner is not None:
        x = refine_sampled(args.refiner, x, guided.cond.get("partial"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if points:
        out = " and ".join(map(str, save_point_samples(x, out, guided.cond.get("partial"), guided.nrow)))
    elif out.suffix == ".npz":
        arrays: dict[str, np.ndarray] = {"x": x.cpu().numpy()}
        if levels is not None:
            arrays["images"] = to_uint8_images(x.cpu(), levels)
        if "y" in guided.cond:
            arrays["y"] = guided.cond["y"].cpu().numpy()
        write_npz(out, arrays)
    else:
        save_sample_grid(x.cpu(), out, levels, guided.nrow, kind=data.kind)
    extra = f" and one call of {args.handoff} from sigma {args.handoff_sigma:g}" if handoff is not None else ""
    print(f"wrote {guided.n} samples ({args.sampler}, {args.steps} steps{extra}) to {out}")
    if recorder is not None:
        path = trajectory.draw_trajectory(recorder.snapshots, args.trajectory)
        print(f"wrote the reverse process of {min(guided.n, TRAJECTORY_SAMPLES)} samples at "
              f"{len(recorder.snapshots)} steps to {path}")
    return 0


def _default_sampler_steps(args: argparse.Namespace, config: Any, process: Any) -> None:
    """Fill ``--sampler`` / ``--steps`` / ``--grid`` left out with the run's own ``sample_sampler`` /
    ``sample_steps`` / ``sample_grid`` (its preview settings: DDIM 50 unless the preset or a
    distillation says otherwise, e.g. a progressive student's few steps on its ``trailing`` grid);
    the steps are capped at a discrete process's T."""
    if args.sampler is None:
        args.sampler = config.sample_sampler
    if args.steps is None:
        args.steps = min(config.sample_steps, process.training_steps or config.sample_steps)
    if args.grid is None:
        args.grid = config.sample_grid


def _cmd_eval(args: argparse.Namespace) -> int:
    at_least_one("--n", args.n)
    at_least_one("--num-samples", args.num_samples)

    report = evaluate_checkpoint(
        args.checkpoint, split=args.split, n=args.n, device=resolve_device(args.device),
        samplers=[s for s in args.samplers.split(",") if s] if args.samplers else [],
        steps=[int(s) for s in args.steps.split(",")] if args.steps else [],
        num_samples=args.num_samples, ode=not args.no_ode, bound=not args.no_bound, seed=args.seed,
        out=args.out, progress=not args.quiet, data=data_option(args.data),
    )
    print(json.dumps(report["summary"], indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ddpmkit`` parser; ``--sampler`` lists the samplers registered when it is built."""
    samplers = ", ".join(sorted(SAMPLERS))
    parser = argparse.ArgumentParser(prog="ddpmkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ddpmkit {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("presets", help="list the shipped presets")
    p.set_defaults(fn=_cmd_presets)

    p = sub.add_parser("train", help="train a model from a preset or a config file")
    p.add_argument("config", help="a preset name (see `ddpmkit presets`), a .toml/.json file, a run directory, "
                   "or a folder of images (`ddpmkit train folder DIR` or `ddpmkit train DIR`: sized from the images)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-3 data.path=...")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (still resumable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("sample", help="draw samples from a checkpoint")
    p.add_argument("checkpoint", help="a run directory or a checkpoint .json")
    p.add_argument("--sampler", default=None, help=f"the sampler, one of: {samplers} (default the run's "
                   "sample_sampler, ddim unless its preset says otherwise); `ddpmkit samplers` shows which are aliases")
    p.add_argument("--steps", type=int, default=None, help="sampling steps, at most the process's T (default the "
                   "run's sample_steps, 50 unless its preset says otherwise)")
    p.add_argument("--eta", type=float, default=None, help="DDIM's eta (0 = deterministic)")
    p.add_argument("--grid", default=None, help="the sigma grid: uniform, quadratic, linspace, trailing, logsnr, karras, "
                   "logsnr_open, karras_open, uniform_open, a `ddpmkit tune-grid` .json file, or the levels, e.g. 80,0.821,0 "
                   "(default: the run's sample_grid, "
                   "else the sampler's own at this step count, docs/SOLVERS.md)")
    p.add_argument("--rho", type=float, default=None, help="the karras grids' exponent (default 7)")
    p.add_argument("--n", type=int, default=64, help="number of samples, >= 1 (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    p.add_argument("--class", dest="label", type=class_argument, default=None,
                   help="class label (conditional or guided models; default: a grid with one row per class), or "
                        "'prior': each sample's label drawn at the training split's label shares")
    p.add_argument("--out", default="samples.png", help="a .png grid or an .npz of arrays")
    p.add_argument("--trajectory", default=None, metavar="FILE.png",
                   help=f"also draw the reverse process: x_t and the x0 estimate of the first "
                        f"{TRAJECTORY_SAMPLES} samples at {TRAJECTORY_STEPS} evenly spaced steps")
    p.add_argument("--ema-rate", type=float, default=None, help="which saved EMA to use (default: the first)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--no-clip", dest="clip", action="store_false", help="do not clip x0 to [-1, 1]")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (CUDA graphs on a GPU); the first steps pay the compile time")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: the network runs under torch.autocast in bfloat16 (CPU or CUDA), "
                        "its output cast back to float32 (default fp32)")
    p.add_argument("--no-tf32", dest="tf32", action="store_false",
                   help="forbid TensorFloat-32 matmuls and convolutions (on by default on CUDA)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--partial-from", default=None, metavar="test|FILE",
                   help="completion models: the partial clouds, from the run's test split (default) or a point "
                        "file (.npy/.npz/.ply, one cloud or a stack, in the training data's frame)")
    p.add_argument("--refiner", default=None, metavar="RUN",
                   help="missing-points completion runs: move the generated points with PDR's refinement network "
                        "(a `ddpmkit train-refiner` run)")
    add_guidance_arguments(p)
    add_handoff_arguments(p)
    p.set_defaults(fn=_cmd_sample)

    add_train_classifier_command(sub)
    add_points_commands(sub)    # denoise
    add_refine_command(sub)     # train-refiner
    add_inverse_commands(sub)   # inpaint, solve, edit

    p = sub.add_parser("eval", help="bits/dim (bound and ODE) and sample quality of a checkpoint")
    p.add_argument("checkpoint", help="a run directory or a checkpoint .json")
    p.add_argument("--split", default="test", help="the data split for bits/dim (default test)")
    p.add_argument("--n", type=int, default=None, help="examples of the split for bits/dim (default all)")
    p.add_argument("--samplers", default="", help=f"comma-separated, from: {samplers}; sample-quality metrics per sampler")
    p.add_argument("--steps", default="", help="e.g. 10,20,50,100,1000")
    p.add_argument("--num-samples", type=int, default=1000, help="samples per sampler x steps")
    p.add_argument("--no-ode", action="store_true", help="skip the probability-flow ODE likelihood")
    p.add_argument("--no-bound", action="store_true", help="skip the variational bound (discrete process only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and likelihood noise (default 0)")
    p.add_argument("--out", default=None, help="directory for eval.json / eval.md / the plot")
    p.add_argument("--data", default=None, metavar="NAME[:PATH]",
                   help="evaluate on this data set instead of the run's (an imported run has none), "
                        "e.g. cifar10:/data/cifar-10-batches-py or npz:test.npz")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_cmd_eval)
    add_convert_commands(sub)   # import, export
    add_doctor_command(sub)     # doctor: the installation, for bug reports
    add_distill_command(sub)    # distill
    add_samplers_command(sub)   # samplers: the names, their grids and aliases
    add_tune_command(sub)       # tune-grid
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"ddpmkit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
