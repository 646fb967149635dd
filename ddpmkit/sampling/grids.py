"""Where a sampler stops: sub-sequences of the training steps and sigma grids (float64, host).

A sampler runs over a *sigma grid*: a decreasing sequence of noise levels that ends in 0
(k-diffusion's convention), computed once on the host in float64 and cast once. For a process
with training steps (``process.training_steps``, the discrete chain) the grid is either a
sub-sequence of them (``uniform``, ``quadratic``, ``linspace``, ``trailing``, ``logsnr``: the
model is only called where it was trained) or ``karras``: real-valued levels spaced as in EDM
eq. 5 with exponent ``rho``; in continuous time it spans the process's own range
(:data:`CONTINUOUS_GRIDS`). These are builders: which grid a sampler runs on is decided in one
place, :func:`ddpmkit.sampling.plan.plan_sampling`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.schedules import space_timesteps

__all__ = ["SKIPS", "GRIDS", "OPEN_GRIDS", "CONTINUOUS_GRIDS", "continuous_sigmas", "SIGMA_MAX", "subsequence", "respaced_for", "time_grid", "sigma_grid",
           "karras_sigmas", "check_grid", "bounded", "grids_for", "start_at"]

SKIPS = ("uniform", "quadratic", "linspace", "trailing", "logsnr")   # sub-sequences of training steps
OPEN_GRIDS = ("logsnr_open", "karras_open", "uniform_open")
"""``logsnr`` / ``karras`` / ``uniform`` over steps + 1 levels with the lowest (sigma_min) dropped,
so that no call is spent at sigma_min, where D is nearly the identity: the last call is at a real
noise level and the step from it goes to 0. This is the grid of DPM-Solver's, UniPC's and AMED's
code, which return x at sigma_min without a final call. On the digits run ``trailing`` still beat
both at 2-8 calls (docs/SOLVERS.md). ``uniform_open`` in continuous time is ``trailing``'s analogue,
t_k = t_max - k (t_max - t_min) / steps: on a rectified flow, Liu et al.'s n-step Euler grid (every
call moves 1/n of t; :func:`ddpmkit.core.flow.flow_sigmas`, bit for bit), the flow's default."""
GRIDS = SKIPS + ("karras",) + OPEN_GRIDS
CONTINUOUS_GRIDS = ("uniform", "logsnr", "karras") + OPEN_GRIDS   # for continuous-time processes
SIGMA_MAX = 160.0
"""The highest noise level the ODE / SDE samplers start from on a discrete VP process (EDM's
practice, Karras et al. 2022, Table 1 and app. C.3.3, which starts the cosine-schedule ADM models
at sigma_max = 80). The cosine schedule's last step has sigma = 20,291 and the sigmoid's 1,825,
artefacts of clipping beta at 0.999: across the jump from there to the next grid level Heun's
trapezoid and a multistep solver's extrapolation fail (Heun at 10 steps gave a sample sd of
7.4 for a target of 0.5). Starting at sigma <= 160 leaves the linear schedule (157.4) and the
continuous VP SDE (152.2) untouched, and costs at most a 1/160 relative shift of the data mean
in x_T ~ N(0, I)."""


def check_grid(grid: Any, allowed: tuple[str, ...] = GRIDS) -> str:
    if not isinstance(grid, str) or grid not in allowed:
        raise ValueError(f"grid must be one of {list(allowed)}, got grid={grid!r}")
    return grid


def _check_steps(steps: Any, T: int) -> int:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, {T}], got steps={steps!r}")
    return int(steps)


def _strictly_increasing(seq: np.ndarray, T: int) -> np.ndarray:
    """Push repeated indices apart (forward, then back from T - 1) so ``len(seq)`` stay distinct."""
    seq = np.asarray(seq, dtype=np.int64).copy()
    for k in range(1, seq.size):
        seq[k] = max(seq[k], seq[k - 1] + 1)
    seq[-1] = min(seq[-1], T - 1)
    for k in range(seq.size - 2, -1, -1):
        seq[k] = min(seq[k], seq[k + 1] - 1)
    return seq


def subsequence(process: Any, steps: int, grid: str) -> np.ndarray:
    """The ``steps`` indices of ``process``'s schedule (ascending) a sampler visits.

    ``grid`` (indices in [0, T), T = ``process.training_steps``; c = T // steps):

    - ``"uniform"``: 0, c, 2c, ... (the DDIM repo's ``skip_type="uniform"``, which is diffusers'
      ``timestep_spacing="leading"`` with ``steps_offset=0``; the DDIM repo's ``range(0, T, c)``
      has one or more extra steps when ``steps`` does not divide T, this has exactly ``steps``);
    - ``"quadratic"``: int((k sqrt(0.8 T) / (steps - 1))^2) (the DDIM repo's quadratic skip, for
      CIFAR-10), with repeated indices pushed apart so that every step is a real step; it tops
      at 0.8 T, below the process's top: :func:`ddpmkit.sampling.sample` warns, since x_T is
      drawn from N(0, I) where the marginal is not that;
    - ``"linspace"``: evenly spaced with both ends, 0 and T - 1 (iDDPM's ``respace(steps)``);
    - ``"trailing"``: round(k T / steps) - 1 for k = 1..steps, ending at T - 1 (diffusers'
      ``"trailing"``, Lin et al. 2023);
    - ``"logsnr"``: the indices nearest to points uniform in log-SNR between the ends
      (DPM-Solver's recommendation for low-resolution pixel models, Lu et al. 2022, section 3.3).
    """
    T = process.training_steps
    check_grid(grid, SKIPS)
    steps = _check_steps(steps, T)
    k = np.arange(steps, dtype=np.float64)
    if grid == "uniform":
        seq = np.arange(steps, dtype=np.int64) * (T // steps)
    elif grid == "quadratic":
        top = np.sqrt(0.8 * T)
        seq = ((k * top / max(steps - 1, 1)) ** 2).astype(np.int64)
    elif grid == "linspace":
        seq = space_timesteps(T, int(steps))
    elif grid == "trailing":
        seq = np.round((k + 1) * T / steps).astype(np.int64) - 1
    else:  # logsnr
        log_snr = process.schedule.log_snr          # decreasing in t
        targets = np.linspace(log_snr[-1], log_snr[0], steps)[::-1] if steps > 1 else log_snr[-1:]
        seq = np.abs(log_snr[None, :] - targets[:, None]).argmin(axis=1)
    return _strictly_increasing(np.clip(seq, 0, T - 1), T)


def respaced_for(process: Any, steps: int, grid: str) -> Any:
    """``process`` respaced onto ``subsequence(process, steps, grid)`` (itself if that is every step).

    On the respaced process index i stands for original step ``timesteps[i]``; its betas are
    ``1 - alpha_bar[tau_i] / alpha_bar[tau_{i-1}]`` and ``alpha_bar_prev[0] = 1`` (iDDPM section 4).
    """
    keep = subsequence(process, steps, grid)
    if keep.size == process.training_steps:
        return process
    return process.respace([int(i) for i in keep])


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i < n
    (EDM eq. 5), without the final 0; one step is ``[sigma_max]``."""
    if not (isinstance(rho, (int, float)) and not isinstance(rho, bool) and math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a number > 0, got rho={rho!r}")
    if not 0.0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    if steps == 1:
        return np.array([float(sigma_max)])
    ramp = np.linspace(0.0, 1.0, int(steps))
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    sigmas[0], sigmas[-1] = sigma_max, sigma_min
    return sigmas


def bounded(process: Any, sigma_max: float | None) -> Any:
    """``process`` cut to the training steps whose sigma is at most ``sigma_max`` (itself when
    every step is, or ``sigma_max`` is None): the same steps, with the same alpha_bar."""
    if sigma_max is None or process.sigma_max <= sigma_max:
        return process
    levels = process.sigma(process.schedule.timesteps.astype(np.float64))
    keep = int(np.searchsorted(levels, sigma_max, side="right"))
    if keep < 1:
        raise ValueError(f"sigma_max={sigma_max!r} is below the process's lowest level {levels[0]:.4g}")
    return process.respace(list(range(keep)))


def time_grid(process: Any, steps: int, grid: str = "linspace", rho: float = 7.0,
              sigma_max: float | None = None) -> np.ndarray:
    """``steps`` decreasing times (original units): the training steps of ``subsequence`` (top
    first), or for ``"karras"`` the times of :func:`karras_sigmas` between the process's ends.

    With ``sigma_max`` the grid stays at or below that level (:func:`bounded`; see
    :data:`SIGMA_MAX`); ``steps`` is then capped at the number of training steps left.
    """
    check_grid(grid)
    steps = _check_steps(steps, process.training_steps)
    process = bounded(process, sigma_max)
    steps = min(steps, process.training_steps)
    if grid in OPEN_GRIDS:   # the closed grid one level longer, its lowest level dropped
        base = grid[: -len("_open")]
        return time_grid(process, min(steps + 1, process.training_steps), base, rho)[:steps]
    if grid != "karras":
        return process.schedule.timesteps[subsequence(process, steps, grid)][::-1].astype(np.float64)
    t = process.t_of_sigma(karras_sigmas(process.sigma_min, process.sigma_max, steps, rho))
    t[0] = process.t_max
    if steps > 1:
        t[-1] = process.t_min
    return t


def grids_for(process: Any, discrete_sampler: bool = False) -> tuple[str, ...]:
    """The grids a sampler may run on: the training-step grids (:data:`GRIDS`; only the
    sub-sequences :data:`SKIPS` for DDPM's chain) where ``process.training_steps`` is not None,
    else :data:`CONTINUOUS_GRIDS`."""
    if process.training_steps is None:
        return CONTINUOUS_GRIDS
    return SKIPS if discrete_sampler else GRIDS


def sigma_grid(process: Any, steps: int, grid: str = "linspace", rho: float = 7.0,
               sigma_max: float | None = None) -> np.ndarray:
    """``steps`` decreasing noise levels of ``process`` and a final 0 (float64, host): the levels of
    :func:`time_grid` where the process has training steps, else :func:`continuous_sigmas`.

    ``sigma_max`` (training-step grids only) keeps the grid at or below that level (:func:`bounded`).
    """
    if process.training_steps is not None:
        return np.append(process.sigma(time_grid(process, steps, grid, rho, sigma_max)), 0.0)
    if sigma_max is not None:
        raise ValueError(f"sigma_max bounds a grid of training steps; {type(process).__name__} has none, "
                         f"got sigma_max={sigma_max!r}")
    return continuous_sigmas(process, steps, grid, rho)


def start_at(process: Any, full: np.ndarray, strength: float) -> np.ndarray:
    """``full`` cut at sigma(t_0), t_0 = t_min + strength (t_max - t_min), which becomes its top
    (never above ``full``'s own top): SDEdit's start (Meng et al. 2022, Alg. 1)."""
    t0 = float(process.t_min) + strength * (float(process.t_max) - float(process.t_min))
    start = min(float(process.sigma(t0)), float(full[0]))
    return np.append(start, full[full < start])


def continuous_sigmas(process: Any, steps: int, grid: str = "karras", rho: float = 7.0) -> np.ndarray:
    """The sigma grid of a continuous-time process, from ``sigma_max`` to ``sigma_min`` plus a final 0:
    ``"uniform"`` in t from ``t_max`` to ``t_min`` (score_sde), ``"logsnr"`` uniform in log sigma
    (log-SNR = -2 log sigma: the geometric NCSN / VE levels), ``"karras"`` (EDM eq. 5), and the
    :data:`OPEN_GRIDS` (:func:`sigma_grid` calls it for a process without training steps)."""
    check_grid(grid, CONTINUOUS_GRIDS)
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got steps={steps!r}")
    if grid in OPEN_GRIDS:   # the closed grid one level longer, its lowest level dropped
        closed = continuous_sigmas(process, int(steps) + 1, grid[: -len("_open")], rho)
        return np.append(closed[:int(steps)], 0.0)
    lo, hi = float(process.sigma_min), float(process.sigma_max)
    if grid == "karras":
        sigmas = karras_sigmas(lo, hi, int(steps), rho)
    elif grid == "logsnr":
        sigmas = np.exp(np.linspace(math.log(hi), math.log(lo), int(steps))) if steps > 1 else np.array([hi])
    else:
        t = np.linspace(float(process.t_max), float(process.t_min), int(steps)) if steps > 1 else np.array([process.t_max])
        sigmas = np.asarray(process.sigma(t), dtype=np.float64)
    return np.append(sigmas, 0.0)
