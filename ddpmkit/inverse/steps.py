"""What every inverse-problem method shares: the sampler's single step, the sigma grid, the start.

The methods here act between the steps of an ordinary sampler, so they take the sampler as a
*step*, ``step(D, x, sigma, sigma_next, opts) -> (x_next, denoised)``, reused from
:mod:`ddpmkit.sampling` (no step is re-derived here):

* ``"ddpm"`` / ``"sde"``: the ancestral step, the exact Gaussian step of the frozen denoiser
  (DDPM eq. 7 with the fixed-small variance; :func:`ddpmkit.sampling.stochastic.posterior_step`
  with eta = 1); ``"ddim"``: the same step with eta = ``eta`` (default 0, deterministic);
* ``"euler"`` / ``"heun"``: the probability-flow ODE steps of :mod:`ddpmkit.sampling.ode`.

Multistep samplers (DPM-Solver++) keep a history that a jump back in time would invalidate,
so they are not offered. Grids come from :mod:`ddpmkit.sampling.grids` as for ``dk.sample``.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import numpy as np
import torch

from ..core.diffusion import GaussianDiffusion
from ..sampling.grids import CONTINUOUS_GRIDS, GRIDS, SIGMA_MAX, check_grid, continuous_sigmas, sigma_grid
from ..sampling.loop import Denoiser, SampleOptions
from ..sampling.ode import euler_step, heun_step
from ..sampling.registry import SAMPLERS, Sampler
from ..sampling.stochastic import check_eta, posterior_step

__all__ = ["STEP_SAMPLERS", "Step", "step_function", "inverse_grid", "sampler_entry", "scale_at", "start_noise", "check_int"]

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


def inverse_grid(process: Any, sampler: str, steps: int | None, grid: str | None = None,
                 rho: float = 7.0) -> np.ndarray:
    """The float64 host sigma grid (ending in 0) ``dk.sample`` would use for ``sampler`` (a
    registered sampler over a denoiser, or ``"ddpm"``: the ancestral step on DDPM's grid).

    Discrete process: ``"ddpm"`` and unbounded samplers (``"ddim"``) keep the process's top, the
    others start at most at :data:`ddpmkit.sampling.grids.SIGMA_MAX`; default ``steps`` T.
    Continuous processes: the sampler's own continuous grid, else the process's ``default_grid``.
    """
    discrete = isinstance(process, GaussianDiffusion)
    entry = sampler_entry(sampler)
    if discrete:
        steps = process.T if steps is None else steps
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= process.T:
            raise ValueError(f"steps must be an integer in [1, {process.T}], got steps={steps!r}")
        name = check_grid(grid or ("linspace" if sampler == "ddpm" else entry.grid), GRIDS)
        top = None if sampler == "ddpm" or not entry.bounded else SIGMA_MAX
        return sigma_grid(process, steps, name, rho, top)
    if steps is None:
        raise ValueError("steps must be given for a continuous-time process, got steps=None")
    check_int("steps", steps, 1)
    own = entry.grid if entry.grid in CONTINUOUS_GRIDS else getattr(process, "default_grid", "karras")
    return continuous_sigmas(process, steps, check_grid(grid or own, CONTINUOUS_GRIDS), rho)


def sampler_entry(sampler: str) -> Sampler:
    """The registered sampler over a denoiser for ``sampler``; ``"ddpm"`` maps to ``"sde"``, the
    same ancestral step (DDPM's fixed-small variance) over a denoiser."""
    name = "sde" if sampler == "ddpm" else sampler
    if not isinstance(sampler, str) or name not in SAMPLERS or SAMPLERS[name].discrete:
        known = sorted(k for k in SAMPLERS if not SAMPLERS[k].discrete) + ["ddpm"]
        raise ValueError(f"sampler must be one of {known}, got sampler={sampler!r}")
    return SAMPLERS[name]


def scale_at(process: Any, sigma: float) -> float:
    """s(t) at noise level ``sigma`` (x_t = s(t) x_hat), host float64."""
    return float(process.scale(process.t_of_sigma(sigma)))


def start_noise(process: Any, shape: tuple[int, ...], sigma_top: float, generator: torch.Generator | None,
                device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """x_hat at the grid's top: x_T ~ N(0, prior_std^2 I) in the process's scaling, divided by s."""
    std = float(getattr(process, "prior_std", 1.0)) / scale_at(process, sigma_top)
    return std * torch.randn(shape, generator=generator, device=device, dtype=dtype)


def jump_noise_std(sigma_from: float, sigma_to: float) -> float:
    """The forward kernel q(x_hat_to | x_hat_from) = N(x_hat_from, (sigma_to^2 - sigma_from^2) I)."""
    return math.sqrt(max(sigma_to**2 - sigma_from**2, 0.0))
