"""``ddpmkit distill RUN --method consistency | progressive | reflow [--steps N] --out NEW_RUN``.

    ddpmkit distill runs/digits --method consistency --steps 1 --out runs/digits-cd
    ddpmkit distill runs/digits --method consistency --mode ect --out runs/digits-ect
    ddpmkit distill runs/digits --method progressive --steps 2 --out runs/digits-pd --train-steps 1200
    ddpmkit sample runs/digits-cd --steps 2                # the run's own sampler: multistep consistency
    ddpmkit distill runs/digits-flow-reflow --method reflow --one-step --out runs/digits-flow-1step
    ddpmkit distill runs/digits-flow-reflow --method reflow --k-step --steps 2 --out runs/digits-flow-2step
    ddpmkit distill runs/digits-flow-2step --method reflow --k-step --steps 2 --rollout --out runs/digits-flow-2step-roll

The new run is an ordinary run: ``sample``, ``eval`` and ``export`` take it, ``--resume`` continues it.
"""
from __future__ import annotations

import argparse
from typing import Any

from ..training.distill import distill
from ..training.distributed import resolve_device
from ..viz import plot_loss
from .common import at_least_one

__all__ = ["add_distill_command"]


def _cmd_distill(args: argparse.Namespace) -> int:
    at_least_one("--steps", args.steps)
    result = distill(args.run, args.method, args.out, args.steps, mode=args.mode, solver=args.solver,
                     teacher_steps=args.teacher_steps, train_steps=args.train_steps, overrides=args.overrides,
                     resume=args.resume, max_steps=args.max_steps, progress=not args.quiet,
                     device=str(resolve_device(args.device)), one_step=args.one_step, k_step=args.k_step,
                     pairs_from=args.pairs_from, rollout=args.rollout)
    metrics = result.run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size:
        print(f"loss curve: {plot_loss(metrics, result.run_dir / 'loss.png')}")
    if result.stopped_by:
        print(f"stopped by {result.stopped_by} at step {result.step}; resume with --resume")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def add_distill_command(sub: Any) -> None:
    """Register ``ddpmkit distill`` on the subcommand parsers ``sub``."""
    p = sub.add_parser("distill", help="distil a trained run into a few-step student (a new run)")
    p.add_argument("run", help="the teacher: a run directory or a checkpoint .json")
    p.add_argument("--method", required=True, choices=("consistency", "progressive", "reflow"),
                   help="consistency (CD or ECT), progressive (Salimans & Ho), reflow (rectified flow)")
    p.add_argument("--steps", type=int, default=None,
                   help="the student's sampling steps (progressive: a power of two; default 1)")
    p.add_argument("--out", required=True, help="the new run's directory")
    p.add_argument("--mode", choices=("cd", "ect"), default="cd",
                   help="consistency: cd (distillation with teacher ODE steps) or ect (fine-tuning, dt -> 0)")
    p.add_argument("--solver", choices=("heun", "euler"), default="heun", help="cd: the teacher's ODE step")
    p.add_argument("--one-step", action="store_true",
                   help="reflow: distil a reflow run for one call on its stored pairs, trained at t_max only "
                        "(Liu et al. 2022, k = 1); the same as --k-step --steps 1")
    p.add_argument("--k-step", action="store_true",
                   help="reflow: distil a reflow run for --steps K Euler calls on its stored pairs, trained only at "
                        "the K-step Euler grid's times t_max (1 - j/K), j < K (Liu et al. 2022, sec. 2.3)")
    p.add_argument("--rollout", action="store_true",
                   help="--k-step, K >= 2: train each later step where the student's own earlier Euler steps land, "
                        "not on the pair's straight interpolant (backward distillation, Kohler et al. 2024)")
    p.add_argument("--pairs-from", default=None,
                   help="reflow: train on the (z, x) pairs stored by this reflow run (or its pairs.safetensors)")
    p.add_argument("--teacher-steps", type=int, default=64, help="progressive: the first teacher's DDIM steps")
    p.add_argument("--train-steps", type=int, default=None,
                   help="optimiser steps of the whole distillation (default: the teacher's optim.steps)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the student's config, e.g. optim.lr=2e-4")
    p.add_argument("--resume", action="store_true", help="continue the new run's latest checkpoint")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (still resumable)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_cmd_distill)
