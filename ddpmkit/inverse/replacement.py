"""Replacement inpainting (Song et al. 2021, app. I.2) and RePaint (Lugmayr et al. 2022).

Replacement: after every step of an ordinary sampler from sigma_i to sigma_{i+1}, the observed
part of the sample is set to a forward-noised copy of the observation at the new level. In the
variables x_hat = x_0 + sigma eps an observation y = A x_0 of a sample at level sigma is
A x_hat = y + sigma A eps, so for any linear A with A A^T = c I

    x_hat <- x_hat + A^+ (y_sigma - A x_hat),     y_sigma = y + sigma A eps',  eps' ~ N(0, I),

which for a mask is plain replacement of the known pixels by y + sigma eps'. At the last level
(sigma = 0) this is A x = y exactly (lucidrains PRs 322 / 324: the ground truth at the last step).

RePaint: the same, plus *resampling*: after reaching certain levels the sample is pushed back up
``jump_length`` levels by the forward kernel q(x_hat_{sigma'} | x_hat_sigma) = N(x_hat,
(sigma'^2 - sigma^2) I) and denoised again, ``jump_n_sample - 1`` extra times, so that the
unknown part has time to harmonise with the known one (their Alg. 1 and the jump schedule of
``guided_diffusion/scheduler.py``, ``get_schedule_jump``; paper defaults: 250 steps, jump
length 10, 10 resamplings).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..sampling.loop import Denoiser, SampleOptions, run_steps
from .operators import LinearOperator
from .steps import Step, check_int, jump_noise_std, step_function

__all__ = ["replacement", "repaint", "repaint_path", "run_path"]

Correct = Callable[[torch.Tensor, float], torch.Tensor]


def repaint_path(steps: int, jump_length: int = 10, jump_n_sample: int = 10) -> np.ndarray:
    """The grid indices RePaint visits on a grid of ``steps`` steps (index 0: the top, ``steps``: 0).

    RePaint's schedule (``get_schedule_jump`` with one resampling per step and no nested jumps):
    walking down one step at a time, at each of the levels j = 0, L, 2L, ... < steps - L
    (counted in their time, t = steps - 1 - index) the walk jumps back up L = ``jump_length``
    levels, ``jump_n_sample - 1`` times per level. A jump of L levels is one move here (the sum
    of L forward steps is one Gaussian step). Down moves: steps + (jump_n_sample - 1) L per jump point.
    """
    check_int("steps", steps, 1)
    check_int("jump_length", jump_length, 1)
    check_int("jump_n_sample", jump_n_sample, 1)
    jumps = {j: jump_n_sample - 1 for j in range(0, steps - jump_length, jump_length)}
    t = steps
    times: list[int] = []
    while t >= 1:
        t -= 1
        times.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            t += jump_length
            times.append(t)
    times.append(-1)
    return steps - 1 - np.asarray(times, dtype=np.int64)


def run_path(name: str, D: Denoiser, x: torch.Tensor, sigmas: np.ndarray, path: np.ndarray,
             opts: SampleOptions, step: Step, correct: Correct | None = None) -> torch.Tensor:
    """Walk the grid indices ``path``: a move down is ``step`` followed by ``correct(x, sigma_next)``,
    a move up is the forward kernel. One network call (per ``step``) per move down; no host reads."""
    levels = sigmas[path]

    def move(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        sigma, sigma_next = float(levels[i]), float(levels[i + 1])
        if sigma_next > sigma:
            return x + jump_noise_std(sigma, sigma_next) * opts.randn(x), None
        x, denoised = step(D, x, sigma, sigma_next, opts)
        return (x if correct is None else correct(x, sigma_next)), denoised

    if correct is not None:
        x = correct(x, float(levels[0]))
    return run_steps(name, move, x, levels, opts)


def replace_correction(operator: LinearOperator, y: torch.Tensor, opts: SampleOptions,
                       sigma_y: float = 0.0) -> Correct:
    """x -> x + A^+ (y_sigma - A x), y_sigma = y + sqrt(sigma^2 - sigma_y^2) A eps': the known part
    set to the observation at level sigma. y is itself at level ``sigma_y`` (noisy observations,
    :meth:`LinearOperator.level`); below that level nothing is replaced."""
    def correct(x: torch.Tensor, sigma: float) -> torch.Tensor:
        if sigma < sigma_y:
            return x
        std = math.sqrt(sigma**2 - sigma_y**2)
        return operator.project(x, operator.noised(y, std, opts.randn(x)) if std > 0.0 else y)
    return correct


@torch.no_grad()
def replacement(D: Denoiser, x: torch.Tensor, sigmas: np.ndarray, opts: SampleOptions,
                operator: LinearOperator, y: torch.Tensor, step: Step | None = None,
                sigma_y: float = 0.0) -> torch.Tensor:
    """Replacement sampling (score-SDE app. I.2) with any single-step sampler ``step`` (default
    the ancestral step) from ``x`` at ``sigmas[0]``; the result satisfies A x = y."""
    path = np.arange(len(sigmas))
    return run_path("replace", D, x, sigmas, path, opts, step or step_function("sde"),
                    replace_correction(operator, y, opts, sigma_y))


@torch.no_grad()
def repaint(D: Denoiser, x: torch.Tensor, sigmas: np.ndarray, opts: SampleOptions,
            operator: LinearOperator, y: torch.Tensor, step: Step | None = None,
            jump_length: int = 10, jump_n_sample: int = 10, sigma_y: float = 0.0) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022, Alg. 1 with their jump schedule :func:`repaint_path`):
    replacement plus resampling. ``jump_n_sample = 1`` is plain replacement."""
    path = repaint_path(len(sigmas) - 1, jump_length, jump_n_sample)
    return run_path("repaint", D, x, sigmas, path, opts, step or step_function("sde"),
                    replace_correction(operator, y, opts, sigma_y))
