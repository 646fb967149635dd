"""Score-SDE samplers: probability-flow ODE (Euler, Heun, RK45), reverse SDE, predictor-corrector.

Song et al. 2021 ("Score-Based Generative Modeling through SDEs"), sections 3-4 and appendix G;
Karras et al. 2022 (EDM), algorithm 1 for Heun. Every sampler here works on the continuous-time
view of the process (:class:`ddpmkit.core.vpsde.ContinuousVP`) in the variables ``sigma`` and
``y = x / sqrt(alpha_bar)``, where the probability-flow ODE is ``dy / dsigma = eps_hat`` and the
reverse SDE is a VE SDE with the clock ``sigma^2``. So:

* ``euler`` *is* DDIM with eta = 0 (DDIM eq. 13-14), step for step, on every integer grid.
* Each sampler runs over ``steps`` grid times from the top of the grid down to its bottom
  (``tau_max`` to ``tau_min``, the first training step, for the default ``skip="linspace"``)
  and ends with one step to ``sigma = 0``, which is the denoising step ``x_0 = x0_hat(x, tau)``
  (Tweedie's formula; score_sde's ``noise_removal``).
* Function evaluations: euler and sde use ``steps``; heun ``2 steps - 1`` (its last step is
  Euler, as in EDM); pc ``steps + corrector_steps (steps - 1)``; rk45 chooses its own (``steps``
  is ignored) plus one for the final denoising step.

Grids (``skip``): the training steps of :func:`ddpmkit.sampling.base.subsequence` (``"linspace"``
by default: both ends, as iDDPM's respacing; ``"uniform"``, ``"quadratic"``, ``"trailing"``,
``"logsnr"``), or ``"karras"``: real-valued times whose sigmas follow EDM eq. 5 with ``rho``.
Like the other samplers, one step with ``"linspace"`` is the single step 0 (as in respacing);
``skip="trailing"`` or ``"karras"`` start one step at the top, ``tau_max``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp
from tqdm.auto import tqdm

from ..core.diffusion import GaussianDiffusion
from ..core.vpsde import ContinuousVP
from .base import SKIPS, SampleOptions, register, subsequence

__all__ = ["euler", "heun", "rk45", "reverse_sde", "predictor_corrector", "time_grid", "GRIDS"]

Model = Callable[..., torch.Tensor]
GRIDS = SKIPS + ("karras",)


def _positive(name: str, value: Any, integer: bool = False, allow_zero: bool = False) -> None:
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} {bound}, got {name}={value!r}")


def time_grid(process: GaussianDiffusion, steps: int, skip: str = "linspace", rho: float = 7.0) -> np.ndarray:
    """``steps`` decreasing times (original units) for the samplers here.

    ``skip`` in :data:`SKIPS` but ``"karras"``: the training steps ``subsequence(process, steps,
    skip)``, top first. ``"karras"``: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho (EDM eq. 5), mapped to times by the inverse of sigma(tau).
    """
    if skip not in GRIDS:
        raise ValueError(f"skip must be one of {list(GRIDS)}, got skip={skip!r}")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= process.T:
        raise ValueError(f"steps must be an integer in [1, {process.T}], got steps={steps!r}")
    vp = ContinuousVP(process)
    if skip != "karras":
        return process.schedule.timesteps[subsequence(process, int(steps), skip)][::-1].astype(np.float64)
    _positive("rho", rho)
    if steps == 1:
        return np.array([vp.tau_max])
    ramp = np.linspace(0.0, 1.0, int(steps))
    lo, hi = vp.sigma_min ** (1.0 / rho), vp.sigma_max ** (1.0 / rho)
    tau = vp.tau_of_sigma((hi + ramp * (lo - hi)) ** rho)
    tau[0], tau[-1] = vp.tau_max, vp.tau_min
    return tau


def _setup(process: GaussianDiffusion, x_T: torch.Tensor, steps: int, skip: str, rho: float
           ) -> tuple[ContinuousVP, np.ndarray, np.ndarray, torch.Tensor]:
    """The time grid, its sigmas with a final 0, and y = x_T / sqrt(alpha_bar) at the top."""
    vp = ContinuousVP(process)
    taus = time_grid(process, steps, skip, rho)
    sigmas = np.append(vp.sigma(taus), 0.0)
    if not x_T.is_floating_point():
        raise ValueError(f"x_T must be a floating-point tensor, got dtype {x_T.dtype}")
    return vp, taus, sigmas, x_T * math.sqrt(1.0 + sigmas[0] ** 2)


def _x_of_y(y: torch.Tensor, sigma: float) -> torch.Tensor:
    return y / math.sqrt(1.0 + sigma * sigma)


def _fixed_step_ode(process: GaussianDiffusion, model: Model, x_T: torch.Tensor, steps: int,
                    opts: SampleOptions, second_order: bool, skip: str, rho: float) -> torch.Tensor:
    """Euler (DDIM eta=0) or Heun (EDM alg. 1) on dy/dsigma = eps_hat(x, tau)."""
    vp, taus, sigmas, y = _setup(process, x_T, steps, skip, rho)
    n = len(taus)
    name = "heun" if second_order else "euler"
    for i in tqdm(range(n), desc=name, disable=not opts.progress, leave=False):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0, eps = vp.eps_in_y(model, y, sigma, float(taus[i]), opts.cond, opts.clip_x0)
        y_next = y + (sigma_next - sigma) * eps
        if second_order and sigma_next > 0:
            _, eps_next = vp.eps_in_y(model, y_next, sigma_next, float(taus[i + 1]), opts.cond, opts.clip_x0)
            y_next = y + (sigma_next - sigma) * 0.5 * (eps + eps_next)
        y = y_next
        opts.report(i, n, float(taus[i]), _x_of_y(y, sigma_next), x0)
    return y


@register("euler")
def euler(process: GaussianDiffusion, model: Model, x_T: torch.Tensor, steps: int,
          opts: SampleOptions, skip: str = "linspace", rho: float = 7.0) -> torch.Tensor:
    """Probability-flow ODE, Euler in (sigma, y): identical to DDIM eta=0 (DDIM eq. 13-14).

    ``steps`` network calls; ``skip`` and ``rho`` choose the grid (see :func:`time_grid`).
    """
    return _fixed_step_ode(process, model, x_T, steps, opts, False, skip, rho)


@register("heun")
def heun(process: GaussianDiffusion, model: Model, x_T: torch.Tensor, steps: int,
         opts: SampleOptions, skip: str = "linspace", rho: float = 7.0) -> torch.Tensor:
    """Probability-flow ODE, Heun's 2nd-order method (EDM alg. 1; last step Euler to sigma=0).

    ``2 steps - 1`` network calls; ``skip`` and ``rho`` choose the grid (see :func:`time_grid`).
    """
    return _fixed_step_ode(process, model, x_T, steps, opts, True, skip, rho)


@register("rk45")
def rk45(process: GaussianDiffusion, model: Model, x_T: torch.Tensor, steps: int,
         opts: SampleOptions, rtol: float = 1e-5, atol: float = 1e-5) -> torch.Tensor:
    """Probability-flow ODE with scipy's adaptive RK45 (Dormand-Prince), as in score_sde.

    Integrates dy/d(log sigma) = sigma eps_hat from sigma_max to sigma_min on the flattened batch
    (float64 state; one error control for the whole batch, so results depend slightly on the
    batch), then denoises. ``steps`` is ignored: the solver picks its steps, and their number
    differs from batch to batch, so never run it in lock-step across DDP ranks without care.
    ``rtol``, ``atol``: the solver's tolerances (score_sde's 1e-5 by default).
    """
    _positive("rtol", rtol)
    _positive("atol", atol)
    vp, _, _, y = _setup(process, x_T, 1, "karras", 7.0)
    shape, dtype, device = y.shape, y.dtype, y.device
    u_start, u_end = math.log(vp.sigma_max), math.log(vp.sigma_min)
    bar = tqdm(total=1000, desc="rk45", disable=not opts.progress, leave=False)

    def rhs(u: float, state: np.ndarray) -> np.ndarray:
        sigma = math.exp(u)
        y_u = torch.from_numpy(state).reshape(shape).to(device=device, dtype=dtype)
        _, eps = vp.eps_in_y(model, y_u, sigma, float(vp.tau_of_sigma(sigma)), opts.cond, opts.clip_x0)
        bar.n = int(1000 * (u_start - u) / max(u_start - u_end, 1e-12))
        bar.refresh()
        return (sigma * eps).double().cpu().numpy().ravel()

    try:
        solution = solve_ivp(rhs, (u_start, u_end), y.double().cpu().numpy().ravel(), method="RK45",
                             rtol=float(rtol), atol=float(atol), t_eval=[u_end])
    finally:
        bar.close()
    if not solution.success or not np.all(np.isfinite(solution.y)):
        raise FloatingPointError(f"rk45: the ODE solver failed ({solution.message})")
    y = torch.from_numpy(solution.y[:, -1]).reshape(shape).to(device=device, dtype=dtype)
    opts.report(0, 2, vp.tau_max, _x_of_y(y, vp.sigma_min), None)
    x0, _ = vp.eps_in_y(model, y, vp.sigma_min, vp.tau_min, opts.cond, opts.clip_x0)
    opts.report(1, 2, vp.tau_min, x0, x0)
    return x0


def _langevin(vp: ContinuousVP, model: Model, y: torch.Tensor, sigma: float, tau: float,
              opts: SampleOptions, snr: float) -> torch.Tensor:
    """One Langevin corrector step (Song et al. 2021, alg. 5), in y (equivalent to it in x).

    step = 2 alpha_i (snr ||z|| / ||score||)^2 with the norms averaged over the batch, as in
    score_sde's LangevinCorrector (so the step couples the examples of a batch). A batch whose
    score is exactly zero is returned unchanged (the step size would be infinite).
    """
    _, eps = vp.eps_in_y(model, y, sigma, tau, opts.cond, opts.clip_x0)
    score = -eps / sigma
    noise = opts.randn(y.shape, y)
    score_norm = score.reshape(y.shape[0], -1).norm(dim=1).mean()
    if not score_norm > 0:   # a zero score (e.g. a zero-initialised network) sets no step size: no correction
        return y
    noise_norm = noise.reshape(y.shape[0], -1).norm(dim=1).mean()
    step = 2.0 * vp.alpha_at(tau) * (snr * noise_norm / score_norm) ** 2
    return y + step * score + torch.sqrt(2.0 * step) * noise


def _reverse_sde_loop(name: str, process: GaussianDiffusion, model: Model, x_T: torch.Tensor, steps: int,
                      opts: SampleOptions, skip: str, rho: float, snr: float = 0.0, corrector_steps: int = 0
                      ) -> torch.Tensor:
    """Euler-Maruyama on the reverse SDE dy = -score d(sigma^2) + dw (clock sigma^2 decreasing).

    y' = y - (sigma^2 - sigma'^2) / sigma * eps_hat + sqrt(sigma^2 - sigma'^2) z; the last step
    (to sigma = 0) adds no noise. After every other step, ``corrector_steps`` Langevin steps.
    """
    vp, taus, sigmas, y = _setup(process, x_T, steps, skip, rho)
    n = len(taus)
    for i in tqdm(range(n), desc=name, disable=not opts.progress, leave=False):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0, eps = vp.eps_in_y(model, y, sigma, float(taus[i]), opts.cond, opts.clip_x0)
        dvar = sigma * sigma - sigma_next * sigma_next
        y = y - (dvar / sigma) * eps
        if sigma_next > 0:
            y = y + math.sqrt(dvar) * opts.randn(y.shape, y)
            for _ in range(corrector_steps):
                y = _langevin(vp, model, y, sigma_next, float(taus[i + 1]), opts, snr)
        opts.report(i, n, float(taus[i]), _x_of_y(y, sigma_next), x0)
    return y


@register("sde")
def reverse_sde(process: GaussianDiffusion, model: Model, x_T: torch.Tensor, steps: int,
                opts: SampleOptions, skip: str = "linspace", rho: float = 7.0) -> torch.Tensor:
    """Reverse-time SDE (Song et al. 2021, eq. 6) by Euler-Maruyama; ``steps`` network calls.

    The step's mean equals the DDPM posterior mean; its noise variance sigma^2 - sigma'^2 is
    larger than the posterior's. ``skip`` and ``rho`` choose the grid (see :func:`time_grid`).
    """
    return _reverse_sde_loop("sde", process, model, x_T, steps, opts, skip, rho)


@register("pc")
def predictor_corrector(process: GaussianDiffusion, model: Model, x_T: torch.Tensor, steps: int,
                        opts: SampleOptions, snr: float = 0.16, corrector_steps: int = 1,
                        skip: str = "linspace", rho: float = 7.0) -> torch.Tensor:
    """Predictor-corrector (Song et al. 2021, alg. 1 and 5): Euler-Maruyama + Langevin.

    ``snr``: the corrector's signal-to-noise ratio r (0.16 is score_sde's default, from its
    CIFAR-10 configs; its VP configs switch the corrector off); ``corrector_steps``: Langevin
    steps per level (M). Calls: ``steps + corrector_steps (steps - 1)``.
    """
    _positive("snr", snr)
    _positive("corrector_steps", corrector_steps, integer=True, allow_zero=True)
    return _reverse_sde_loop("pc", process, model, x_T, steps, opts, skip, rho, snr, corrector_steps)
