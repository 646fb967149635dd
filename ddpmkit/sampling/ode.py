"""Probability-flow ODE samplers over a denoiser and a sigma grid: Euler, Heun, RK45.

In the variables of the noise-level contract (``x_hat = x_0 + sigma eps``) the probability-flow
ODE of every process is ``dx_hat / dsigma = (x_hat - D(x_hat, sigma)) / sigma`` (Karras et al.
2022, "EDM", eq. 3 with s = 1; DDIM eq. 14). So:

* :func:`euler` is DDIM with eta = 0 (DDIM eq. 13-14), step for step, on every grid;
* :func:`heun` is EDM's Algorithm 1 (its last step, to sigma = 0, is Euler);
* :func:`rk45` hands the ODE in ``u = log sigma`` to torchdiffeq's adaptive Dormand-Prince
  solver (``dopri5``), on the sample's own device, then denoises at the grid's lowest level.

Each is a function ``fn(D, x, sigmas, opts=None, ...)`` as in k-diffusion, with ``x`` the
starting sample at ``sigmas[0]`` in x_hat variables (e.g. ``sigmas[0] * randn``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .loop import Denoiser, SampleOptions, host_sigmas, run_steps

__all__ = ["euler", "heun", "rk45", "euler_step", "heun_step", "check_positive"]


def check_positive(name: str, value: Any, integer: bool = False, allow_zero: bool = False) -> None:
    """One-line ValueError unless ``value`` is a finite number > 0 (>= 0 with ``allow_zero``)."""
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} {bound}, got {name}={value!r}")


def euler_step(D: Denoiser, x: torch.Tensor, sigma: float, sigma_next: float,
               opts: SampleOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of the probability-flow ODE from ``sigma`` to ``sigma_next`` (EDM eq. 3)."""
    denoised = D(x, sigma, **opts.cond)
    return x + ((sigma_next - sigma) / sigma) * (x - denoised), denoised


def heun_step(D: Denoiser, x: torch.Tensor, sigma: float, sigma_next: float,
              opts: SampleOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """One Heun step of the probability-flow ODE (EDM Alg. 1 lines 4-8 / Alg. 2 lines 7-10);
    Euler when ``sigma_next`` is 0."""
    denoised = D(x, sigma, **opts.cond)
    d = (x - denoised) / sigma
    x_euler = x + (sigma_next - sigma) * d
    if sigma_next == 0.0:
        return x_euler, denoised
    d_next = (x_euler - D(x_euler, sigma_next, **opts.cond)) / sigma_next
    return x + (sigma_next - sigma) * 0.5 * (d + d_next), denoised


@torch.no_grad()
def euler(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None) -> torch.Tensor:
    """Euler on the probability-flow ODE (EDM Alg. 1 without the correction; DDIM eta = 0).

    x_next = D + (sigma_next / sigma) (x - D), which is x + (sigma_next - sigma) d with
    d = (x - D) / sigma. One network call per step.
    """
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    return run_steps("euler", lambda i, x: euler_step(D, x, grid[i], grid[i + 1], opts), x, grid, opts)


@torch.no_grad()
def heun(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None) -> torch.Tensor:
    """Heun's second-order method on the probability-flow ODE (EDM Algorithm 1).

    ``2 n - 1`` network calls for n steps: the step to sigma = 0 is Euler.
    """
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    return run_steps("heun", lambda i, x: heun_step(D, x, grid[i], grid[i + 1], opts), x, grid, opts)


@torch.no_grad()
def rk45(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
         rtol: float = 1e-5, atol: float = 1e-5) -> torch.Tensor:
    """The probability-flow ODE with an adaptive Dormand-Prince 5(4) solver (torchdiffeq ``dopri5``).

    Integrates dx/du = x - D(x, e^u), u = log sigma, from the grid's top level to its lowest
    non-zero one on the sample's device (the whole batch shares one error control, so results
    depend slightly on the batch, as in score_sde), then denoises there. Only the grid's two
    ends are used. ``rtol``, ``atol``: the solver's tolerances (score_sde's 1e-5 by default).
    The solver chooses its step count, and each accepted step reads its error norm back to the
    host: run it outside DDP lock-step (k-diffusion issue #79).
    """
    from torchdiffeq import odeint

    check_positive("rtol", rtol)
    check_positive("atol", atol)
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    sigma_max, sigma_min = float(grid[0]), float(grid[-2])
    ends = np.array([sigma_max, sigma_min, 0.0])

    def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if i == 1:
            denoised = D(x, sigma_min, **opts.cond)
            return denoised, denoised
        if sigma_min >= sigma_max:
            return x, None

        u = torch.tensor([math.log(sigma_max), math.log(sigma_min)], dtype=x.dtype).to(x.device)

        def drift(v: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
            # the solver's first-step probe may look past the ends: keep D inside its range
            return state - D(state, torch.exp(v.clamp(u[1], u[0])), **opts.cond)

        path = odeint(drift, x, u, rtol=float(rtol), atol=float(atol), method="dopri5")
        return path[-1], None

    return run_steps("rk45", step, x, ends, opts)
