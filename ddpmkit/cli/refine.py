"""``ddpmkit train-refiner RUN [key=value ...] --out NEW_RUN``: PDR's refinement network
(RFNet, Lyu et al. 2022) for a missing-points completion run (:mod:`ddpmkit.training.refiner`).
The settings (RefinerConfig fields) follow RUN, before the options.

    ddpmkit train-refiner runs/shapes-completion-pdr --out runs/shapes-completion-pdr-refiner
    ddpmkit train-refiner runs/shapes-completion-pdr rotate=false mirror=false --out runs/pdr-refiner-plain \
        --coarse-from runs/shapes-completion-pdr-refiner          # reuse the coarse completions drawn there
    .venv/bin/python benchmarks/pointclouds.py --parts completion --sampler ddpm --steps 100 \
        --refiner runs/shapes-completion-pdr-refiner                # coarse vs refined vs mirror
"""
from __future__ import annotations

import argparse
import typing
from typing import Any

from ..training.overrides import parse_value
from ..training.refiner import RefinerConfig, train_refiner

__all__ = ["add_refine_command"]


def _settings(items: list[str]) -> dict[str, Any]:
    """``key=value`` items as RefinerConfig fields, each value read by its field's type as the
    training overrides read theirs (:func:`ddpmkit.training.overrides.parse_value`)."""
    hints = typing.get_type_hints(RefinerConfig)
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in hints:
            raise ValueError(f"settings must be key=value with a RefinerConfig field ({', '.join(sorted(hints))}), "
                             f"got {item!r}")
        settings[key] = parse_value(text, hints[key])
    return settings


def _cmd_train_refiner(args: argparse.Namespace) -> int:
    result = train_refiner(args.run, args.out, resume=args.resume, progress=not args.quiet, max_steps=args.max_steps,
                           coarse_from=args.coarse_from, **_settings(args.settings))
    if result.outcome.stopped_by:
        print(f"stopped by {result.outcome.stopped_by} at step {result.outcome.step}; resume with --resume")
    held = result.outcome.metrics.get("held_out")
    if held is not None:
        print(f"held-out Chamfer {held:.4f} (coarse {result.outcome.metrics['held_out_coarse']:.4f})")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def add_refine_command(sub: Any) -> None:
    """Register ``ddpmkit train-refiner`` on the subcommand parsers ``sub``."""
    p = sub.add_parser("train-refiner", help="train PDR's refinement network on a completion run's coarse output")
    p.add_argument("run", help="the coarse model: a missing-points completion run (data.missing_only = true)")
    p.add_argument("--out", required=True, help="the refiner's run directory")
    p.add_argument("settings", nargs="*", help="RefinerConfig fields as key=value, right after RUN: draws=2 "
                   "steps=1500 lr=1e-3 rotate=true mirror=true held_out=100 batch_size=32 ...")
    p.add_argument("--coarse-from", default=None, help="take the coarse completions another refiner run drew")
    p.add_argument("--resume", action="store_true", help="continue the run's latest checkpoint (coarse data reused)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (still resumable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_cmd_train_refiner)
