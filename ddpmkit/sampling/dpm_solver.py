"""DPM-Solver++ multistep samplers in data-prediction form (Lu et al. 2022, "DPM-Solver++").

With alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) and the half log-SNR
lambda = log(alpha / sigma), the probability-flow ODE has the exact solution (their eq. 9)

    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x0_theta(lambda) dlambda,

and the multistep solvers expand x0_theta in lambda around the newest point using earlier
points' predictions (one network call per step). The samplers run in the variables of the
noise-level contract, x_hat = x_0 + sigma eps, where alpha = 1 and lambda = -log sigma: the same
update (x_hat = x / alpha), so it runs over any denoiser and sigma grid (k-diffusion's
``sample_dpmpp_2m`` is the second-order one). The last step goes to sigma = 0 and is the
first-order step x_0 = D, exactly DDIM's last step.

Orders: the first step has no history and is first order; "lower order final" (their section
3.3 and code, for fewer than 15 steps) lowers the order near the end, and the step to sigma = 0
is always first order. The first-order step is DDIM with eta = 0.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .loop import Denoiser, SampleOptions, host_sigmas, run_steps

__all__ = ["dpmpp_update", "dpmpp2m", "dpmpp3m", "dpmpp_multistep"]


def dpmpp_update(x: torch.Tensor, sigma_from: float, alpha_to: float, sigma_to: float, lambda_to: float,
                 lambdas: Sequence[float], x0s: Sequence[torch.Tensor], order: int) -> torch.Tensor:
    """One DPM-Solver++ multistep update of ``order`` 1, 2 or 3 (newest first in ``lambdas``, ``x0s``).

    With h = lambda_to - lambdas[0], phi_1 = e^{-h} - 1, phi_2 = phi_1 / h + 1, phi_3 = phi_2 / h - 1/2:
        x_to = (sigma_to / sigma_from) x - alpha_to phi_1 D0 + alpha_to phi_2 D1 - alpha_to phi_3 D2,
    where D0 = x0s[0], D1 ~ h dx0/dlambda and D2 ~ h^2 d^2x0/dlambda^2 come from divided
    differences of the history. Order 2 is their Algorithm 2 (D = D0 + (D0 - D_prev) / (2 r)).
    Order 3 takes D2 as the exact second Taylor term, so a quadratic x0(lambda) is integrated
    exactly; DPM-Solver's and diffusers' code use half that D2 term.
    lambda_to = inf (sigma_to = 0) needs order 1 and returns x0s[0].
    """
    h = lambda_to - lambdas[0]
    phi_1 = math.expm1(-h)
    x_next = (sigma_to / sigma_from) * x - (alpha_to * phi_1) * x0s[0]
    if order == 1:
        return x_next
    r0 = (lambdas[0] - lambdas[1]) / h
    d1_0 = (x0s[0] - x0s[1]) / r0
    if order == 2:
        return x_next - (0.5 * alpha_to * phi_1) * d1_0
    r1 = (lambdas[1] - lambdas[2]) / h
    d1_1 = (x0s[1] - x0s[2]) / r1
    d2 = (2.0 / (r0 + r1)) * (d1_0 - d1_1)
    d1 = d1_0 + (0.5 * r0) * d2
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    return x_next + (alpha_to * phi_2) * d1 - (alpha_to * phi_3) * d2


def dpmpp_multistep(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
                    order: int = 2, lower_order_final: bool = True) -> torch.Tensor:
    """DPM-Solver++(``order``M) over the grid, one network call per step.

    The first step has no history and is first order; with ``lower_order_final`` and fewer
    than 15 steps the order drops near the end (their section 3.3 and code); the step to
    sigma = 0 is always first order.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got order={order!r}")
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    n = grid.size - 1
    lambdas: list[float] = []
    x0s: list[torch.Tensor] = []

    def step(k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal lambdas, x0s
        sigma, sigma_next = float(grid[k]), float(grid[k + 1])
        denoised = D(x, sigma, **opts.cond)
        lambdas = [-math.log(sigma)] + lambdas[: order - 1]
        x0s = [denoised] + x0s[: order - 1]
        step_order = min(order, k + 1)
        if lower_order_final and n < 15:
            step_order = min(step_order, n - k)
        if sigma_next == 0.0:
            return dpmpp_update(x, sigma, 1.0, 0.0, math.inf, lambdas, x0s, 1), denoised
        return dpmpp_update(x, sigma, 1.0, sigma_next, -math.log(sigma_next), lambdas, x0s, step_order), denoised

    return run_steps(f"dpm-solver++({order}M)", step, x, grid, opts)


@torch.no_grad()
def dpmpp2m(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
             lower_order_final: bool = True) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; k-diffusion's ``sample_dpmpp_2m``)."""
    return dpmpp_multistep(D, x, sigmas, opts, 2, lower_order_final)


@torch.no_grad()
def dpmpp3m(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
             lower_order_final: bool = True) -> torch.Tensor:
    """DPM-Solver++(3M): the third-order multistep update (see :func:`dpmpp_update`)."""
    return dpmpp_multistep(D, x, sigmas, opts, 3, lower_order_final)
