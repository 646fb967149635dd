"""The multistep consistency sampler (Song et al. 2023, Algorithm 1) over a sigma grid.

With a consistency function f (a consistency process's denoiser, :mod:`ddpmkit.core.consistency`):

    x_0 <- f(x, sigma_0);  for i = 1 .. n - 1:  x <- x_0 + sqrt(sigma_i^2 - sigma_min^2) z,  x_0 <- f(x, sigma_i)

over the grid's positive levels sigma_0 > ... > sigma_{n-1} (the chosen sigmas *are* the grid; the
final 0 closes it, as for every sampler). One network call per level, except at sigma_min itself,
where f is the identity by construction: a level at sigma_min (the last level of the closed grids)
costs no call. Its default grid, ``"karras_open"`` (:data:`ddpmkit.sampling.grids.OPEN_GRIDS`: the
Karras levels of n + 1 steps without sigma_min), makes ``steps`` calls. On an ordinary denoiser D
the same loop is the "denoise, re-noise" sampler (k-diffusion's ``sample_lcm``).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .loop import Denoiser, SampleOptions, host_sigmas, run_steps

__all__ = ["consistency"]


@torch.no_grad()
def consistency(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1) from ``x`` at ``sigmas[0]``.

    ``D`` is f (its ``sigma_min``, the boundary, is read from ``D.sigma_min``; 0 if it has none).
    Each step evaluates f at sigma_i and re-noises the estimate to sigma_{i+1}:
    ``x_0 + sqrt(sigma_{i+1}^2 - sigma_min^2) z`` (nothing after the last positive level).
    """
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    floor = float(getattr(D, "sigma_min", 0.0))
    boundary = floor * (1.0 + 1e-9)

    def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, sigma_next = float(grid[i]), float(grid[i + 1])
        x0 = x if sigma <= boundary else D(x, sigma, **opts.cond)   # f(x, sigma_min) = x exactly
        if sigma_next == 0.0:
            return x0, x0
        return x0 + math.sqrt(max(sigma_next**2 - floor**2, 0.0)) * opts.randn(x0), x0

    return run_steps("consistency", step, x, grid, opts)
