"""Stochastic samplers over a denoiser and a sigma grid: ancestral (DDIM eta), reverse SDE, the
Langevin corrector (its sampler ``pc`` lives with score_sde's predictors, :mod:`.score_sde`).

Every stochastic step here uses the *exact* Gaussian step of the frozen denoiser: from sigma to
sigma' < sigma with x_0 estimated by D, the process's own posterior is

    x' ~ N(D + (sigma'^2 / sigma^2)(x - D), sigma'^2 (1 - sigma'^2 / sigma^2))

(DDPM eq. 7 in the variables x_hat = x_0 + sigma eps). k-diffusion writes it as the ancestral
split ``sigma_up = eta sigma' sqrt(1 - sigma'^2 / sigma^2)``, ``sigma_down = sqrt(sigma'^2 -
sigma_up^2)``, an Euler step to sigma_down plus sigma_up noise; eta interpolates between the
ODE (0) and the posterior (1), which is DDIM's eta (DDIM eq. 16 divided by alpha_bar_{t-1}).
It is also the first-order exponential integrator of the reverse SDE (Lu et al. 2022,
DPM-Solver++ SDE), which stays right across the large jumps in sigma at the top of short
grids, where Euler-Maruyama's increment sqrt(sigma^2 - sigma'^2) is not.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .loop import Denoiser, SampleOptions, host_sigmas, run_steps

__all__ = ["ancestral_split", "toward_denoised", "posterior_step", "euler_ancestral", "sde", "langevin_step", "check_eta",
           "dpmpp2m_sde", "ddim"]


def check_eta(eta: Any) -> float:
    ok = isinstance(eta, (int, float, np.integer, np.floating)) and not isinstance(eta, bool)
    if not ok or not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1], got eta={eta!r}")
    return float(eta)


def ancestral_split(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up): the deterministic target level and the noise of an ancestral step."""
    if sigma_next == 0.0:
        return 0.0, 0.0
    sigma_up = min(sigma_next, eta * sigma_next * math.sqrt(max(1.0 - sigma_next**2 / sigma**2, 0.0)))
    return math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0)), sigma_up


def toward_denoised(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_down: float) -> torch.Tensor:
    """The deterministic part of an ancestral step: x moved from level ``sigma`` to ``sigma_down`` along
    the frozen denoiser's direction, ``D + (sigma_down / sigma) (x - D)`` (DDIM eq. 12's mean)."""
    return denoised + (sigma_down / sigma) * (x - denoised)


def posterior_step(D: Denoiser, x: torch.Tensor, sigma: float, sigma_next: float, eta: float,
                   opts: SampleOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step from ``sigma`` to ``sigma_next``: the exact Gaussian step of the frozen
    denoiser with DDIM's ``eta`` (module docstring); returns (x', D(x, sigma))."""
    denoised = D(x, sigma, **opts.cond)
    sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
    x = toward_denoised(x, denoised, sigma, sigma_down)
    if sigma_up > 0.0:
        x = x + sigma_up * opts.randn(x)
    return x, denoised


@torch.no_grad()
def euler_ancestral(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
                    eta: float = 1.0) -> torch.Tensor:
    """Ancestral sampling (k-diffusion's ``sample_euler_ancestral``; DDIM eq. 12 with ``eta``).

    One network call and (for eta > 0) one noise draw per step but the last.
    """
    eta = check_eta(eta)
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    return run_steps("ancestral", lambda i, x: posterior_step(D, x, grid[i], grid[i + 1], eta, opts), x, grid, opts)


@torch.no_grad()
def ddim(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
         eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2020, eq. 12): the ancestral step with DDIM's ``eta`` (0: deterministic,
    the probability-flow ODE's exponential integrator; 1: the posterior, i.e. DDPM's fixed-small
    step). ``sample(..., sampler="ddim")`` runs it on DDIM's ``uniform`` grid."""
    return euler_ancestral(D, x, sigmas, opts, eta)


@torch.no_grad()
def sde(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None) -> torch.Tensor:
    """The reverse-time SDE (Song et al. 2021, eq. 6) by its exact step for a frozen denoiser.

    The step is the posterior of the module docstring (eta = 1): its mean is the DDPM posterior
    mean and its variance the posterior's, the exponential-integrator solution of
    dx = -2 sigma dsigma score + sqrt(2 sigma dsigma) dw over [sigma', sigma] with D held fixed:
    :func:`ddim` with eta = 1 (the registry's ``sde`` is its alias).
    """
    return euler_ancestral(D, x, sigmas, opts, 1.0)


def langevin_step(D: Denoiser, x: torch.Tensor, sigma: float, snr: float, alpha: float,
                  opts: SampleOptions) -> torch.Tensor:
    """One Langevin corrector step at level ``sigma`` (Song et al. 2021, Alg. 5).

    score = (D - x) / sigma^2; step = 2 alpha (snr ||z|| / ||score||)^2 with the norms averaged
    over the batch, as in score_sde's LangevinCorrector (so the step couples the examples). A
    batch whose score is zero up to rounding (a zero-initialised network: D = x) gets no
    correction, decided on the device.
    """
    residual = D(x, sigma, **opts.cond) - x
    score = residual / (sigma * sigma)
    noise = opts.randn(x)
    score_norm = score.reshape(x.shape[0], -1).norm(dim=1).mean()
    noise_norm = noise.reshape(x.shape[0], -1).norm(dim=1).mean()
    # a residual at the rounding level of x (D = x up to rounding: zero score) sets no step size
    floor = 64.0 * torch.finfo(x.dtype).eps * x.reshape(x.shape[0], -1).norm(dim=1).mean()
    informative = residual.reshape(x.shape[0], -1).norm(dim=1).mean() > floor
    ratio = snr * noise_norm / score_norm.clamp_min(torch.finfo(score_norm.dtype).tiny)
    step = torch.where(informative, 2.0 * alpha * ratio**2, torch.zeros_like(ratio))
    return x + step * score + torch.sqrt(2.0 * step) * noise


@torch.no_grad()
def dpmpp2m_sde(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
                 eta: float = 1.0, solver: str = "midpoint") -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, "DPM-Solver++", sec. 5; k-diffusion's
    ``sample_dpmpp_2m_sde``): the exact step of the module docstring (eta = 1) plus a second-order
    correction from the previous step's denoised estimate, in lambda = -log sigma.

    With h = lambda' - lambda and w = 1 - e^{-(1+eta) h}:
    x' = (sigma'/sigma) e^{-eta h} x + w D + (c / r) (D - D_prev) + sigma' sqrt(1 - e^{-2 eta h}) z,
    r = h_prev / h, c = w / 2 (``midpoint``) or 1 - w / ((1+eta) h) (``heun``). eta = 0 is a
    deterministic second-order multistep solver; the last step (to sigma = 0) returns D.
    """
    eta = check_eta(eta)
    if solver not in ("midpoint", "heun"):
        raise ValueError(f"solver must be 'midpoint' or 'heun', got solver={solver!r}")
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    history: dict[str, Any] = {}

    def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, sigma_next = float(grid[i]), float(grid[i + 1])
        denoised = D(x, sigma, **opts.cond)
        if sigma_next == 0.0:
            return denoised, denoised
        h = math.log(sigma) - math.log(sigma_next)
        eta_h = eta * h
        weight = -math.expm1(-h - eta_h)
        x = (sigma_next / sigma) * math.exp(-eta_h) * x + weight * denoised
        if "denoised" in history:
            r = history["h"] / h
            c = 0.5 * weight if solver == "midpoint" else 1.0 - weight / (h + eta_h)
            x = x + (c / r) * (denoised - history["denoised"])
        if eta > 0.0:
            x = x + (sigma_next * math.sqrt(-math.expm1(-2.0 * eta_h))) * opts.randn(x)
        history.update(denoised=denoised, h=h)
        return x, denoised

    return run_steps("dpm-solver++(2M) sde", step, x, grid, opts)
