"""The score-based samplers of NCSN and score_sde over a denoiser and a sigma grid.

In the variables x_hat = x_0 + sigma eps the score is s(x, sigma) = (D(x, sigma) - x) / sigma^2 and
every process's reverse SDE is the VE one, dx = -d[sigma^2] s + dw_bar in the clock sigma^2
(Song et al. 2021, eq. 6 and 9): VE, VP and sub-VP differ only by the grid. So:

* :func:`ald` is annealed Langevin dynamics (Song & Ermon 2019, Alg. 1, with NCSNv2's step and
  final denoising step);
* :func:`reverse_diffusion` is score_sde's ``ReverseDiffusionPredictor`` for VE:
  x' = x + (sigma^2 - sigma'^2) s + sqrt(sigma^2 - sigma'^2) z. It is also the Euler-Maruyama step
  of the reverse SDE in the clock sigma^2 (the increment of the clock is sigma^2 - sigma'^2), so
  :data:`euler_maruyama` is the same function; score_sde's ``EulerMaruyamaPredictor`` runs in
  the process's own time t and variables and agrees with it to first order in the step;
* :func:`ancestral_ve` is score_sde's ``AncestralSamplingPredictor`` for VE:
  x' = x + (sigma^2 - sigma'^2) s + sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2) z, whose mean
  D + (sigma'^2 / sigma^2)(x - D) and noise are the exact posterior step of
  :mod:`ddpmkit.sampling.stochastic` (``ancestral_split`` with eta = 1): it *is*
  :func:`ddpmkit.sampling.sde`. Reverse diffusion has the same mean and sigma / sigma' times
  its noise;
* :func:`predictor_corrector` runs any of these predictors followed by score_sde's Langevin
  corrector (:func:`ddpmkit.sampling.langevin_step`); with ``predictor="ancestral_ve"`` it is
  :func:`ddpmkit.sampling.pc`.

The step to sigma = 0 returns D (score_sde's ``denoise=True``: the last predictor's mean).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .loop import Denoiser, SampleOptions, host_sigmas, run_steps
from .ode import check_positive
from .stochastic import langevin_step, posterior_step, sde

__all__ = ["pc", "ald", "reverse_diffusion", "euler_maruyama", "ancestral_ve", "predictor_corrector",
           "reverse_diffusion_step", "ancestral_ve_step", "PREDICTORS"]

PredictorStep = Callable[[Denoiser, torch.Tensor, float, float, SampleOptions], "tuple[torch.Tensor, torch.Tensor]"]


def reverse_diffusion_step(D: Denoiser, x: torch.Tensor, sigma: float, sigma_next: float,
                           opts: SampleOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """score_sde's reverse-diffusion predictor (Song et al. 2021, eq. 47 for VE):
    x' = x + g^2 s + g z with g^2 = sigma^2 - sigma'^2; returns (x', D) and x' = D when sigma' = 0."""
    denoised = D(x, sigma, **opts.cond)
    if sigma_next == 0.0:
        return denoised, denoised
    g2 = sigma * sigma - sigma_next * sigma_next
    return x + (g2 / (sigma * sigma)) * (denoised - x) + math.sqrt(g2) * opts.randn(x), denoised


def ancestral_ve_step(D: Denoiser, x: torch.Tensor, sigma: float, sigma_next: float,
                      opts: SampleOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """score_sde's ancestral-sampling predictor for VE (Song et al. 2021, eq. 45): the exact
    posterior step of :mod:`ddpmkit.sampling.stochastic` (its formula, reused)."""
    return posterior_step(D, x, sigma, sigma_next, 1.0, opts)


PREDICTORS: dict[str, PredictorStep] = {
    "reverse_diffusion": reverse_diffusion_step,
    "euler_maruyama": reverse_diffusion_step,   # the same step in x_hat with the clock sigma^2
    "ancestral_ve": ancestral_ve_step,
}


def _run_pc(name: str, D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None, predictor: Any,
            snr: Any, corrector_steps: Any, alphas: Sequence[float] | np.ndarray | None) -> torch.Tensor:
    if not isinstance(predictor, str) or predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {sorted(PREDICTORS)}, got predictor={predictor!r}")
    check_positive("snr", snr)
    check_positive("corrector_steps", corrector_steps, integer=True, allow_zero=True)
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    level_alpha = np.ones(grid.size) if alphas is None else np.asarray(alphas, dtype=np.float64)
    if level_alpha.shape != grid.shape:
        raise ValueError(f"alphas must have one entry per grid level {grid.shape}, got {level_alpha.shape}")
    predict = PREDICTORS[predictor]

    def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, denoised = predict(D, x, grid[i], grid[i + 1], opts)
        if grid[i + 1] > 0.0:
            for _ in range(corrector_steps):
                x = langevin_step(D, x, grid[i + 1], snr, float(level_alpha[i + 1]), opts)
        return x, denoised

    return run_steps(name, step, x, grid, opts)


@torch.no_grad()
def pc(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
       snr: float = 0.16, corrector_steps: int = 1,
       alphas: Sequence[float] | np.ndarray | None = None) -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1 and 5): the exact reverse-SDE step
    (``ancestral_ve``, the posterior of :mod:`.stochastic`) as predictor, then
    ``corrector_steps`` Langevin steps at each new level but the last.

    ``snr``: the corrector's signal-to-noise ratio r (0.16 is score_sde's CIFAR-10 default);
    ``alphas``: the alpha_i of Alg. 5 for each grid level (the discrete VP's 1 - beta_i;
    1 for VE, the default). Calls: n + corrector_steps (n - 1). The registry's ``pc`` is an alias
    of :func:`predictor_corrector` with ``predictor="ancestral_ve"``, which this is.
    """
    return predictor_corrector(D, x, sigmas, opts, "ancestral_ve", snr, corrector_steps, alphas)


@torch.no_grad()
def predictor_corrector(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
                        predictor: str = "reverse_diffusion", snr: float = 0.16, corrector_steps: int = 1,
                        alphas: Sequence[float] | np.ndarray | None = None) -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1-2 and 5) with a named predictor.

    Each step runs ``predictor`` (one of :data:`PREDICTORS`) from sigma_i to sigma_{i+1}, then
    ``corrector_steps`` Langevin corrector steps at sigma_{i+1} when it is not 0 (score_sde's
    ``LangevinCorrector``: step 2 alpha (snr |z| / |s|)^2). ``snr`` > 0 (0.16: score_sde's VE
    CIFAR-10 default); ``alphas``: Alg. 5's alpha_i per grid level (1, the default, for VE).
    score_sde's loop runs the corrector before the predictor at each time, i.e. one more
    corrector pass at the top level; the last step returns D. Calls: n + corrector_steps (n - 1).
    """
    return _run_pc("predictor_corrector", D, x, sigmas, opts, predictor, snr, corrector_steps, alphas)


@torch.no_grad()
def reverse_diffusion(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None) -> torch.Tensor:
    """score_sde's reverse-diffusion predictor alone (:func:`reverse_diffusion_step` at every step),
    which is also the reverse SDE's Euler-Maruyama scheme in the clock sigma^2 (:data:`euler_maruyama`).
    Its increment sqrt(sigma^2 - sigma'^2) ignores the denoiser's shrinkage, so unlike ``sde`` it
    overshoots the variance on coarse grids; one network call per step."""
    return _run_pc("reverse_diffusion", D, x, sigmas, opts, "reverse_diffusion", 1.0, 0, None)


euler_maruyama = reverse_diffusion
"""The reverse SDE's Euler-Maruyama scheme in x_hat with the clock sigma^2: exactly :func:`reverse_diffusion`."""


@torch.no_grad()
def ancestral_ve(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None) -> torch.Tensor:
    """score_sde's ancestral-sampling predictor for VE alone: the exact posterior step, i.e.
    :func:`ddpmkit.sampling.sde` (DDIM with eta = 1; the registry's ``ancestral_ve`` is its alias)."""
    return sde(D, x, sigmas, opts)


@torch.no_grad()
def ald(D: Denoiser, x: torch.Tensor, sigmas: Any, opts: SampleOptions | None = None,
        steps_per_level: int = 5, eps: float = 2e-5, denoise: bool = True) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; NCSNv2, Song & Ermon 2020).

    At every non-zero level sigma_i of the grid, ``steps_per_level`` steps
    x <- x + alpha_i s(x, sigma_i) + sqrt(2 alpha_i) z with alpha_i = eps sigma_i^2 / sigma_L^2
    (sigma_L the lowest non-zero level); with ``denoise``, the last step ends with NCSNv2's
    x + sigma_L^2 s(x, sigma_L) = D(x, sigma_L). Step i of the loop runs level sigma_i, so the
    callback's x is the sample handed on to sigma_{i+1}. Stability needs alpha_i < 2 sigma_i^2,
    i.e. ``eps`` < 2 sigma_L^2 (NCSNv1: 2e-5 at sigma_L = 0.01 with 100 steps per level; NCSNv2
    CIFAR-10: 6.2e-6, 5 steps). Network calls: steps_per_level n (+ 1 with ``denoise``).
    """
    check_positive("steps_per_level", steps_per_level, integer=True)
    check_positive("eps", eps)
    if not isinstance(denoise, bool):
        raise ValueError(f"denoise must be True or False, got denoise={denoise!r}")
    opts = opts or SampleOptions()
    grid = host_sigmas(sigmas)
    sigma_last = float(grid[-2])
    if eps >= 2.0 * sigma_last**2:
        raise ValueError(f"eps must be < 2 sigma_L^2 = {2.0 * sigma_last**2:.4g} for this grid (sigma_L={sigma_last:.4g}): "
                         f"the Langevin step eps sigma^2 / sigma_L^2 must stay below 2 sigma^2, got eps={eps!r}")

    def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = float(grid[i])
        alpha = float(eps) * (sigma / sigma_last) ** 2
        drift, noise_scale = alpha / (sigma * sigma), math.sqrt(2.0 * alpha)
        for _ in range(int(steps_per_level)):
            denoised = D(x, sigma, **opts.cond)
            x = x + drift * (denoised - x) + noise_scale * opts.randn(x)
        if denoise and grid[i + 1] == 0.0:
            denoised = D(x, sigma, **opts.cond)
            return denoised, denoised
        return x, denoised

    return run_steps("ald", step, x, grid, opts)
