"""A hand-off between two models on one sigma grid: a fast model (a distilled student) takes the
high noise levels, another (its teacher) the last step, from a small level ``sigma`` to 0.

This is the ensemble of expert denoisers of eDiff-I (Balaji et al. 2022, sec. 4) and Stable
Diffusion XL's refiner (Podell et al. 2023, sec. 2.5), reduced to its few-call use: a one-step
student lands on the data manifold up to an error it could not learn (its samples are slightly
averaged where the teacher's map is uncertain); stepped to ``sigma`` it becomes a noisy sample at
that level, x_hat = x_0' + sigma eps', which is what the teacher's denoiser was trained on, and
the teacher's one call E[x_0 | x_hat] (Tweedie's formula, x_hat + sigma^2 grad log p_sigma(x_hat))
restores the detail. Both denoisers are on the noise-level contract, D(x_hat, sigma) in x_hat =
x_0 + sigma eps, so any two processes combine (a rectified-flow student with a VP teacher).

    handoff = Handoff(teacher.process, teacher.ema_model, sigma=0.3)
    x = dk.sample(student.process, student.ema_model, shape, "euler", 1, handoff=handoff)   # 2 calls

The grid is the sampler's own for ``steps`` steps with its final 0 replaced by ``sigma, 0``
(:func:`handoff_grid`), so Euler takes ``steps + 1`` calls, the last one the teacher's. Which model
a call goes to is decided on the host, from the grid's level: no device read in the loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .loop import Denoiser
from .ode import check_positive

__all__ = ["Handoff", "HandoffDenoiser", "handoff_grid", "check_handoff"]


@dataclass(frozen=True)
class Handoff:
    """The model that takes every call at a level <= ``sigma``, with its process (any process on
    the noise-level contract: it must have ``denoiser``, ``sigma_min`` and ``sigma_max``)."""

    process: Any
    model: Callable[..., torch.Tensor]
    sigma: float


class HandoffDenoiser:
    """``D(x_hat, sigma)``: ``low(x_hat, sigma)`` where ``sigma <= level``, else ``high(x_hat, sigma)``.

    The samplers pass host floats, so the choice costs nothing. A tensor sigma (one level per
    example) is served by both models and ``torch.where``, which is correct but calls both.
    """

    def __init__(self, high: Denoiser, low: Denoiser, level: float) -> None:
        self.high, self.low, self.level = high, low, float(level)

    def __call__(self, x_hat: torch.Tensor, sigma: float | torch.Tensor, **cond: Any) -> torch.Tensor:
        if not isinstance(sigma, torch.Tensor):
            return (self.low if float(sigma) <= self.level else self.high)(x_hat, sigma, **cond)
        at_low = (sigma <= self.level).reshape((-1,) + (1,) * (x_hat.dim() - 1))
        return torch.where(at_low, self.low(x_hat, sigma, **cond), self.high(x_hat, sigma, **cond))


def handoff_grid(sigmas: Any, sigma: float) -> np.ndarray:
    """The grid ``sigmas`` (decreasing, ending in 0) with ``sigma`` put before its final 0: the
    first model's steps end at ``sigma``, the second model's step goes from ``sigma`` to 0."""
    grid = np.asarray(sigmas, dtype=np.float64)
    if grid.ndim != 1 or len(grid) < 2 or grid[-1] != 0.0:
        raise ValueError(f"a hand-off needs a grid that ends in 0, got {grid.tolist()}")
    if not sigma < grid[-2]:
        raise ValueError(f"the hand-off sigma must lie below the grid's last level above 0 ({grid[-2]:.4g}), "
                         f"got sigma={sigma!r}")
    return np.concatenate([grid[:-1], [float(sigma), 0.0]])


def check_handoff(handoff: Any) -> None:
    """One-line errors for a :class:`Handoff` that cannot serve (read once, at the API edge)."""
    if not isinstance(handoff, Handoff):
        raise ValueError(f"handoff must be a ddpmkit.sampling.Handoff, got {type(handoff).__name__}")
    check_positive("handoff.sigma", handoff.sigma)
    process = handoff.process
    if not all(hasattr(process, name) for name in ("denoiser", "sigma_min", "sigma_max")):
        raise ValueError(f"the hand-off process must be on the noise-level contract (denoiser, sigma_min, "
                         f"sigma_max), got {type(process).__name__}")
    low, high = float(process.sigma_min), float(process.sigma_max)
    if not low <= handoff.sigma <= high:
        raise ValueError(f"handoff.sigma must lie in the hand-off process's range [{low:.4g}, {high:.4g}], "
                         f"got {handoff.sigma!r}")
