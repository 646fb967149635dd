"""DDIM inversion (Song, Meng & Ermon 2020), the inverse of the ``ddim`` sampler with eta = 0.

DDIM eq. 12 on a sub-sequence tau_1 < ... < tau_S of the training steps,

    x_{tau_{i-1}} = sqrt(a_{i-1}) x0_hat + sqrt(1 - a_{i-1} - sigma_i^2) eps_hat + sigma_i z,

is, in the variables x_hat = x / sqrt(a) of the noise-level contract, the ancestral step of
:mod:`ddpmkit.sampling.stochastic` with DDIM's eta: ``sample(..., sampler="ddim")`` runs that.
:func:`invert` runs the eta = 0 step backwards, from x_0 up the same sub-sequence, so that
``sample(..., sampler="ddim", steps=S, x_T=invert(..., x0, steps=S))`` returns x_0 (up to the
error of evaluating eps at the start of each inverse step; ``fixed_point_iters`` removes it).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from ..core.diffusion import GaussianDiffusion
from ..core.predictions import check_finite
from .grids import respaced_for
from .loop import SampleOptions, StepInfo, run_steps

__all__ = ["invert"]

Model = Callable[..., torch.Tensor]


@torch.no_grad()
def invert(process: GaussianDiffusion, model: Model, x0: torch.Tensor, steps: int = 50, *,
           grid: str = "uniform", fixed_point_iters: int = 0, cond: dict[str, Any] | None = None,
           callback: Callable[[StepInfo], None] | None = None, progress: bool = True
           ) -> torch.Tensor:
    """DDIM inversion: the deterministic map x_0 -> x_T that ``sample(sampler="ddim")`` undoes.

    For each kept step i = 1..S (indices tau_i as in sampling with the same ``steps`` and
    ``grid``) the eta = 0 step between levels a_{i-1} and a_i is run backwards with the model
    called at the step's own timestep tau_i, the one sampling uses for the same pair of levels:

        x0_hat = (x_{i-1} - sqrt(1 - a_{i-1}) eps) / sqrt(a_{i-1}),
        x_i = sqrt(a_i) x0_hat + sqrt(1 - a_i) eps,         eps = eps_theta(x_i, tau_i).

    eps is first evaluated at x_{i-1} (the usual explicit inversion); ``fixed_point_iters`` > 0
    re-evaluates it at the current estimate of x_i that many times, solving the implicit equation
    so that one DDIM step maps x_i back to x_{i-1}.
    """
    if not isinstance(x0, torch.Tensor) or x0.dim() < 1 or not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating-point tensor with a batch dimension, got x0={type(x0).__name__}")
    check_finite("x0", x0)
    if not isinstance(fixed_point_iters, int) or isinstance(fixed_point_iters, bool) or fixed_point_iters < 0:
        raise ValueError(f"fixed_point_iters must be an integer >= 0, got fixed_point_iters={fixed_point_iters!r}")
    sub = respaced_for(process, steps, grid)
    opts = SampleOptions(callback=callback, progress=progress, cond=dict(cond or {}))
    schedule = sub.schedule
    levels = np.append(0.0, sub.sigma(schedule.timesteps.astype(np.float64)))

    def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)   # of the respaced process
        a_from, a_to = float(schedule.alpha_bar_prev[i]), float(schedule.alpha_bar[i])
        x_next = x
        for _ in range(fixed_point_iters + 1):
            pred, _ = sub.split_output(sub.model_output(model, x_next, index, validate=False, **opts.cond))
            eps = sub.to_x0_eps(x_next, index, pred, validate=False)[1]
            x0_hat = (x - math.sqrt(1.0 - a_from) * eps) / math.sqrt(a_from)
            x_next = math.sqrt(a_to) * x0_hat + math.sqrt(1.0 - a_to) * eps
        return x_next, x0_hat

    return run_steps("ddim inversion", step, x0, levels, opts, times=schedule.timesteps)
