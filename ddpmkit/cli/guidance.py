"""Command-line pieces for conditioning and guidance; :mod:`ddpmkit.cli.main` wires them in.

    ddpmkit train digits-cond
    ddpmkit train-classifier digits-cond optim.steps=1000            # -> runs/digits-cond-classifier
    ddpmkit sample runs/digits-cond --guidance cfg --scale 3 --class 7
    ddpmkit sample runs/digits-cond --guidance classifier --scale 4 --classifier runs/digits-cond-classifier
    ddpmkit sample runs/digits-cond --guidance cfg --scale 2 --out grid.png     # one row per class
    ddpmkit sample runs/shapes-pvcnn-cond --guidance cfg --scale 1.5 --class prior   # the data's label shares

``--scale``: classifier-free w (0 unconditional, 1 conditional, > 1 guided; Ho & Salimans'
w' = w - 1) or the classifier scale s (0 unguided, 1 the conditional model for an exact
classifier). Without ``--class``, a class-conditional or guided run draws a grid with one row
per class (``--n`` rounded up to a multiple of the class count); ``--class prior`` draws each
sample's label at the training split's label shares (the data's whole law, ``prior_labels``).
"""
from __future__ import annotations

import argparse
import math
from typing import Any, NamedTuple

import numpy as np
import torch

from ..data import load_dataset
from ..sampling.guidance import GUIDANCE_KINDS, Guidance, check_labels, class_grid_labels, prior_labels
from ..training.config import load_config
from ..training.train_classifier import load_classifier, train_classifier
from .common import at_least_one

__all__ = ["add_train_classifier_command", "cmd_train_classifier", "add_guidance_arguments", "prepare_sampling",
           "class_argument", "PRIOR",
           "GuidedSampling", "check_same_schedule"]


# ---------------------------------------------------------------------------- train-classifier
def add_train_classifier_command(sub: Any) -> None:
    """Register ``ddpmkit train-classifier CONFIG [key=value ...]`` on the CLI's subparsers."""
    p = sub.add_parser("train-classifier", help="train a noise-aware classifier for classifier guidance")
    p.add_argument("config", help="a preset name, a .toml/.json file or a run directory (its data and process)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-3 optim.steps=1000")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default optim.steps)")
    p.add_argument("--out", default=None, help="run directory (default: the config's out + '-classifier')")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train_classifier)


def cmd_train_classifier(args: argparse.Namespace) -> int:
    at_least_one("--steps", args.steps)
    config = load_config(args.config, args.overrides)
    run = train_classifier(config, args.steps, out=args.out, resume=args.resume, progress=not args.quiet)
    if run.stopped_by:
        print(f"stopped by {run.stopped_by} at step {run.step}; resume with --resume")
    else:
        accuracy = ", ".join(f"t={t}: {a:.3f}" for t, a in run.metrics["test_accuracy_by_t"].items())
        print(f"test accuracy on noised data ({accuracy})")
    print(f"checkpoint: {run.checkpoint}")
    return 0


# ---------------------------------------------------------------------------- sample --guidance
PRIOR = "prior"


def class_argument(value: str) -> int | str:
    """``--class``: an integer label or ``prior`` (labels drawn at the training split's shares)."""
    if value == PRIOR:
        return PRIOR
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--class must be an integer label or 'prior', got {value!r}") from None


def add_guidance_arguments(p: argparse.ArgumentParser) -> None:
    """``--guidance``, ``--scale``, ``--classifier``, ``--guide-conditional`` for ``ddpmkit sample``."""
    p.add_argument("--guidance", choices=GUIDANCE_KINDS, default="none",
                   help="cfg: classifier-free (needs class_dropout > 0 in training); classifier: needs --classifier")
    p.add_argument("--scale", type=float, default=1.0,
                   help="guidance scale: cfg w (0 unconditional, 1 conditional) or classifier s (0 unguided)")
    p.add_argument("--classifier", default=None, help="noise-aware classifier run or checkpoint (train-classifier)")
    p.add_argument("--guide-conditional", action="store_true",
                   help="classifier guidance of the conditional model (default: of the unconditional one)")


class GuidedSampling(NamedTuple):
    """What ``ddpmkit sample`` needs: the (wrapped) model, ``cond``, extra sampler parameters,
    the number of samples and the grid's row length (None: square)."""

    model: Any
    cond: dict[str, Any]
    params: dict[str, Any]
    n: int
    nrow: int | None


def check_same_schedule(model_process: Any, classifier_process: Any) -> None:
    """One-line ValueError unless the classifier was trained on the model's noise levels."""
    a, b = model_process.schedule, classifier_process.schedule
    if a.T != b.T or not np.allclose(a.alpha_bar, b.alpha_bar, rtol=1e-10, atol=0.0):
        raise ValueError(f"the classifier was trained on {b!r}, the model on {a!r}: timesteps would "
                         f"mean different noise levels")


def prepare_sampling(args: argparse.Namespace, ckpt: Any, model: Any, device: torch.device) -> GuidedSampling:
    """Labels, guidance wrapper and sampler parameters from ``args`` (``--class``, ``--n``,
    ``--sampler`` and the guidance arguments) for a loaded diffusion checkpoint."""
    model_classes = getattr(ckpt.config.network, "num_classes", None)
    kind, classifier, num_classes = args.guidance, None, model_classes
    if kind == "cfg":
        if model_classes is None:
            raise ValueError("--guidance cfg needs a class-conditional model (network.num_classes)")
        if ckpt.config.class_dropout <= 0:
            raise ValueError("--guidance cfg needs a model trained with class_dropout > 0 (its null class is untrained)")
    elif kind == "classifier":
        if args.classifier is None:
            raise ValueError("--guidance classifier needs --classifier RUN_OR_CHECKPOINT")
        loaded = load_classifier(args.classifier, device=device)
        check_same_schedule(ckpt.process, loaded.process)
        classifier, num_classes = loaded.model, loaded.classifier_config.num_classes
        if args.guide_conditional and model_classes is None:
            raise ValueError("--guide-conditional needs a class-conditional model (network.num_classes)")
        if model_classes is not None and model_classes != num_classes:
            raise ValueError(f"the classifier has {num_classes} classes, the model {model_classes}")
    elif args.guide_conditional:
        raise ValueError("--guide-conditional goes with --guidance classifier")
    n, nrow, y = args.n, None, None
    if num_classes is None:
        if args.label is not None:
            raise ValueError(f"--class {args.label} given, but the checkpoint's network is not class-conditional")
    elif args.label == PRIOR:   # the data's own label shares: the whole law, p(x) = sum_c p(c) p(x | c)
        labels = load_dataset(ckpt.config.data, "train").y
        if labels is None:
            raise ValueError(f"--class prior needs a labelled training split, got data {ckpt.config.data.name!r}")
        y = prior_labels(labels, n, torch.Generator().manual_seed(args.seed + 1)).to(device)
    elif args.label is not None:
        y = check_labels(torch.full((n,), args.label), num_classes, name="--class").to(device)
    else:
        nrow = math.ceil(n / num_classes)
        n = nrow * num_classes
        y = class_grid_labels(num_classes, nrow, device)
    guidance = Guidance(kind, args.scale, num_classes, classifier, args.guide_conditional)
    wrapped, params = guidance.wrap(ckpt.process, model, args.sampler)
    return GuidedSampling(wrapped, {} if y is None else {"y": y}, params, n, nrow)
