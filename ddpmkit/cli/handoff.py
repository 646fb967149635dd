"""``ddpmkit sample STUDENT --handoff TEACHER --handoff-sigma S``: the student's steps end at level S
and the teacher's model takes the last call, S -> 0 (:mod:`ddpmkit.sampling.handoff`): a one-step
student and its teacher draw in two calls.

    ddpmkit sample runs/digits-flow-2step-ph-5k --steps 1 --handoff runs/digits-flow --handoff-sigma 0.3
"""
from __future__ import annotations

import argparse
from typing import Any

import torch

from ..sampling import Handoff
from .common import load_for_command

__all__ = ["add_handoff_arguments", "prepare_handoff"]


def add_handoff_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--handoff", default=None, metavar="RUN",
                   help="one more call, by RUN's model (a distilled run's teacher), from --handoff-sigma to 0")
    p.add_argument("--handoff-sigma", type=float, default=None, metavar="S",
                   help="the level where RUN takes over (the digits flow students: 0.3, docs/FLOW.md)")


def prepare_handoff(args: argparse.Namespace, data: Any, cond: dict[str, Any],
                    device: torch.device | str) -> Handoff | None:
    """The :class:`Handoff` the options ask for, or None; one-line errors for options that do not fit."""
    if args.handoff is None and args.handoff_sigma is None:
        return None
    if args.handoff is None:
        raise ValueError("--handoff-sigma needs --handoff RUN, the model that takes the last call")
    if args.handoff_sigma is None:
        raise ValueError("--handoff needs --handoff-sigma S, the level where it takes over")
    if cond:
        raise ValueError(f"--handoff serves unconditional sampling, got a condition ({', '.join(sorted(cond))})")
    teacher, teacher_data = load_for_command(args.handoff, device)
    if tuple(teacher_data.shape) != tuple(data.shape):
        raise ValueError(f"--handoff {args.handoff}: its data shape {tuple(teacher_data.shape)} is not the "
                         f"sampled run's {tuple(data.shape)}")
    return Handoff(teacher.process, teacher.ema_model, args.handoff_sigma)
