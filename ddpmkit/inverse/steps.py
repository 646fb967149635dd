"""What every inverse-problem method shares: the sampler's single step, the sigma grid, the start.

The methods here act between the steps of an ordinary sampler, so they take the sampler as a
*step*, ``step(D, x, sigma, sigma_next, opts) -> (x_next, denoised)``, reused from
:mod:`ddpmkit.sampling` (no step is re-derived here):

* ``"sde"``: the ancestral step, the exact Gaussian step of the frozen denoiser (DDPM eq. 7 in
  x_hat; :func:`ddpmkit.sampling.stochastic.posterior_step` with eta = 1); ``"ddpm"``: DDPM's
  chain, whose step over a denoiser is that one, on the chain's grid from its top (only for the
  fixed-small variance: :mod:`ddpmkit.sampling.plan`); ``"ddim"``: the same step with eta =
  ``eta`` (default 0, deterministic);
* ``"euler"`` / ``"heun"``: the probability-flow ODE steps of :mod:`ddpmkit.sampling.ode`.

Multistep samplers (DPM-Solver++) keep a history that a jump back in time would invalidate,
so they are not offered. The grid, the start and the prior come from the one sampling plan,
:func:`ddpmkit.sampling.plan.plan_sampling`, as for ``dk.sample``.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import numpy as np
import torch

from ..sampling.loop import Denoiser, SampleOptions
from ..sampling.ode import euler_step, heun_step
from ..sampling.stochastic import check_eta, posterior_step

__all__ = ["STEP_SAMPLERS", "Step", "step_function", "check_int"]

Step = Callable[[Denoiser, torch.Tensor, float, float, SampleOptions], "tuple[torch.Tensor, torch.Tensor]"]

STEP_SAMPLERS = ("ddpm", "sde", "ddim", "euler", "heun")
CALLS_PER_STEP = {"ddpm": 1, "sde": 1, "ddim": 1, "euler": 1, "heun": 2}


def check_int(name: str, value: Any, low: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")
    return int(value)


def step_function(sampler: str, eta: float | None = None) -> Step:
    """The single step of ``sampler`` (one of :data:`STEP_SAMPLERS`); ``eta`` only for ``"ddim"``."""
    if not isinstance(sampler, str) or sampler not in STEP_SAMPLERS:
        raise ValueError(f"sampler must be one of {list(STEP_SAMPLERS)} for inverse problems, got sampler={sampler!r}")
    if eta is not None and sampler != "ddim":
        raise ValueError(f"eta applies to sampler='ddim' only, got eta={eta!r} with sampler={sampler!r}")
    if sampler in ("ddpm", "sde"):
        return partial(_posterior, eta=1.0)
    if sampler == "ddim":
        return partial(_posterior, eta=check_eta(0.0 if eta is None else eta))
    return euler_step if sampler == "euler" else heun_step


def _posterior(D: Denoiser, x: torch.Tensor, sigma: float, sigma_next: float, opts: SampleOptions,
               eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    return posterior_step(D, x, sigma, sigma_next, eta, opts)


def jump_noise_std(sigma_from: float, sigma_to: float) -> float:
    """The forward kernel q(x_hat_to | x_hat_from) = N(x_hat_from, (sigma_to^2 - sigma_from^2) I)."""
    return math.sqrt(max(sigma_to**2 - sigma_from**2, 0.0))
