"""EDM's stochastic samplers and DPM-Solver++(3M) SDE over a denoiser and a sigma grid.

* :func:`heun_churn` is Karras et al. 2022 ("EDM") Algorithm 2: at each level sigma_i with
  S_tmin <= sigma_i <= S_tmax, noise is added to raise the level to sigma_hat = sigma_i (1 + gamma),
  gamma = min(S_churn / n, sqrt(2) - 1) (decided on the host), then a Heun step of the
  probability-flow ODE goes from sigma_hat to sigma_{i+1} (Euler for the step to 0). With
  S_churn = 0 it is :func:`ddpmkit.sampling.heun` (Algorithm 1) step for step.
* :func:`euler_churn` is the same with an Euler step (k-diffusion's ``sample_euler``).
* :func:`dpmpp3m_sde` is k-diffusion's ``sample_dpmpp_3m_sde``.

All are ``fn(D, x, sigmas, opts=None, **params)`` in the variables x_hat = x_0 + sigma eps.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .loop import Denoiser, SampleOptions, host_sigmas, run_steps
from .ode import check_positive, euler_step, heun_step
from .stochastic import check_eta

__all__ = ["heun_churn", "euler_churn", "dpmpp3m_sde", "churn_gammas"]

GAMMA_MAX = math.sqrt(2.0) - 1.0
"""EDM's cap on gamma_i (Alg. 2): sigma_hat is at most sqrt(2) sigma_i, i.e. at most as much new
noise as the sample already holds."""


def churn_gammas(grid: np.ndarray, s_churn: Any, s_tmin: Any, s_tmax: Any) -> np.ndarray:
    """gamma_i for each step of ``grid`` (host float64): min(S_churn / n, sqrt(2) - 1) where
    S_tmin <= sigma_i <= S_tmax, else 0 (EDM Alg. 2, line 4; n = number of steps)."""
    check_positive("s_churn", s_churn, allow_zero=True)
    check_positive("s_tmin", s_tmin, allow_zero=True)
    ok = isinstance(s_tmax, (int, float, np.integer, np.floating)) and not isinstance(s_tmax, bool)
    if not ok or math.isnan(s_tmax) or s_tmax < s_tmin:
        raise ValueError(f"s_tmax must be a number >= s_tmin={s_tmin!r} (inf allowed), got s_tmax={s_tmax!r}")
    levels = grid[:-1]
    gamma = min(float(s_churn) / levels.size, GAMMA_MAX)
    return np.where((levels >= s_tmin) & (levels <= s_tmax), gamma, 0.0)


def _churn(name: str, ode_step: Any, D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None,
           s_churn: Any, s_tmin: Any, s_tmax: Any, s_noise: Any) -> torch.Tensor:
    """EDM Alg. 2's loop: raise the level by gamma_i (lines 4-6), then ``ode_step`` to the next level."""
    check_positive("s_noise", s_noise, allow_zero=True)
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    gammas = churn_gammas(grid, s_churn, s_tmin, s_tmax)

    def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, gamma = grid[i], float(gammas[i])
        sigma_hat = sigma * (1.0 + gamma)
        if gamma > 0.0:
            x = x + (float(s_noise) * math.sqrt(sigma_hat**2 - sigma**2)) * opts.randn(x)
        return ode_step(D, x, sigma_hat, grid[i + 1], opts)

    return run_steps(name, step, x, grid, opts)


@torch.no_grad()
def heun_churn(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
               s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
               s_noise: float = 1.0) -> torch.Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2; k-diffusion's ``sample_heun``).

    ``s_churn``: total churn S_churn (>= 0; 0 is Algorithm 1, :func:`ddpmkit.sampling.heun`);
    ``s_tmin``, ``s_tmax``: the levels that get churn; ``s_noise``: S_noise, the scale of the
    added noise (EDM uses 1.003-1.007 to offset the denoiser's loss of detail). One noise draw
    per churned step (k-diffusion draws one on every step, used or not); 2 n - 1 network calls.
    """
    return _churn("heun_churn", heun_step, D, x, sigmas, opts, s_churn, s_tmin, s_tmax, s_noise)


@torch.no_grad()
def euler_churn(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
                s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                s_noise: float = 1.0) -> torch.Tensor:
    """EDM Algorithm 2 with Euler steps (k-diffusion's ``sample_euler``): :func:`heun_churn`'s churn,
    one network call per step; with ``s_churn`` = 0 it is :func:`ddpmkit.sampling.euler`."""
    return _churn("euler_churn", euler_step, D, x, sigmas, opts, s_churn, s_tmin, s_tmax, s_noise)


@torch.no_grad()
def dpmpp3m_sde(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
                eta: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(3M) SDE, as k-diffusion's ``sample_dpmpp_3m_sde`` (Lu et al. 2022, "DPM-Solver++",
    sec. 5, multistep to third order), in lambda = -log sigma.

    With h = lambda' - lambda, H = (1 + eta) h, phi_2 = (e^{-H} - 1) / H + 1, phi_3 = phi_2 / H - 1/2:
    x' = e^{-H} x + (1 - e^{-H}) D + phi_2 D1 - phi_3 D2 + sigma' sqrt(1 - e^{-2 eta h}) z,
    where D1 ~ h dD/dlambda and D2 come from divided differences of the last three denoised
    estimates (D2 = 0 with two, D1 = D2 = 0 with one). eta = 1 without history is the exact
    posterior step (:func:`ddpmkit.sampling.sde`), eta = 0 a deterministic multistep solver.

    k-diffusion's convention, kept so that the two agree: D2 is half the second Taylor term
    (as DPM-Solver's and diffusers' multistep code), and the second step uses phi_2 D1 (the
    exact first-order term) rather than DPM-Solver++(2M)'s midpoint form; so at eta = 0 it is
    not :func:`ddpmkit.sampling.dpmpp3m` (see :func:`ddpmkit.sampling.dpmpp_update`).
    The step to sigma = 0 returns D. One network call and (eta > 0) one noise draw per step.
    """
    eta = check_eta(eta)
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    denoised_hist: list[torch.Tensor] = []
    h_hist: list[float] = []

    def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, sigma_next = float(grid[i]), float(grid[i + 1])
        denoised = D(x, sigma, **opts.cond)
        if sigma_next == 0.0:
            return denoised, denoised
        h = math.log(sigma) - math.log(sigma_next)
        h_eta = (1.0 + eta) * h
        x = math.exp(-h_eta) * x + (-math.expm1(-h_eta)) * denoised
        phi_2 = math.expm1(-h_eta) / h_eta + 1.0
        if len(h_hist) >= 2:
            r0, r1 = h_hist[0] / h, h_hist[1] / h
            d1_0 = (denoised - denoised_hist[0]) / r0
            d1_1 = (denoised_hist[0] - denoised_hist[1]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            x = x + phi_2 * d1 - phi_3 * d2
        elif h_hist:
            x = x + (phi_2 * h / h_hist[0]) * (denoised - denoised_hist[0])
        if eta > 0.0:
            x = x + (sigma_next * math.sqrt(-math.expm1(-2.0 * eta * h))) * opts.randn(x)
        denoised_hist[:] = [denoised] + denoised_hist[:1]
        h_hist[:] = [h] + h_hist[:1]
        return x, denoised

    return run_steps("dpm-solver++(3M) sde", step, x, grid, opts)
