"""The one sampling plan: on which grid a sampler runs, where it starts and from which prior.

:func:`plan_sampling` decides, once and on the host, for (process, sampler, steps, grid, x_T
given or not): the float64 sigma grid ending in 0, the level it starts at, the respaced process
DDPM's chain (``ddpm``) runs on, the std of the prior draw x_T ~ N(0, prior_std^2 I), the
Langevin corrector's alpha_i, and the warning when a drawn x_T starts below the process's top.
``dk.sample`` (and so guidance and the trainer's previews), the inverse methods, SDEdit and DDIM
editing all take their grid from it; the builders of :mod:`.grids` are what it calls.

``"ddpm"`` means one thing everywhere: DDPM's ancestral chain (Ho et al. 2020, Alg. 2) on the
process's training steps, from the chain's top, with the process's own variance. ``sample`` runs
the chain itself. A caller that steps over a denoiser (the inverse methods, SDEdit) runs the
chain's step as the exact posterior step of the frozen denoiser (DDPM eq. 7 in x_hat), which *is*
the chain's step only for the fixed-small variance: elsewhere ``"ddpm"`` is refused there, and
``"sde"`` is the same posterior step on the sampler's usual grid.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .grids import CONTINUOUS_GRIDS, SIGMA_MAX, check_grid, grids_for, respaced_for, sigma_grid, start_at
from .registry import SAMPLERS, Sampler, check_params, lookup

__all__ = ["SamplingPlan", "plan_sampling", "explicit_sigmas", "scale_at", "ancestral_step_name", "TOP_SIGNAL",
           "POSTERIOR_STEP", "EXPLICIT_GRID"]

TOP_SIGNAL = 0.05
"""A grid starting below the process's top where x_t keeps more than this fraction sqrt(alpha_bar)
of the data draws a warning when x_T is drawn from the prior there."""
EXPLICIT_GRID = "explicit"
"""The plan's grid name when the caller gave the levels themselves."""
POSTERIOR_STEP = "sde"
"""The registered sampler that is DDPM's fixed-small step over a denoiser (ddim with eta = 1)."""


def scale_at(process: Any, sigma: float) -> float:
    """s(t) at the noise level sigma: x_t = s(t) x_hat (host float64)."""
    return float(process.scale(process.t_of_sigma(sigma)))


def _chain_is_posterior(process: Any) -> bool:
    """Whether DDPM's chain on ``process`` steps as the exact posterior step of a denoiser: it has
    training steps and the fixed-small variance (beta_tilde, DDPM eq. 7)."""
    return process.training_steps is not None and getattr(process, "variance", None) == "fixed_small"


def ancestral_step_name(process: Any) -> str:
    """The ancestral step's name on ``process`` for a caller over a denoiser: ``"ddpm"`` where it is
    DDPM's chain (training steps, fixed-small variance), else ``"sde"`` (the inverse methods' default)."""
    return "ddpm" if _chain_is_posterior(process) else POSTERIOR_STEP


@dataclass(frozen=True)
class SamplingPlan:
    """What a sampler runs on (see :func:`plan_sampling`).

    Attributes:
        name: the sampler as asked; ``entry``: the registered sampler that runs (for ``ddpm`` over
            a denoiser, :data:`POSTERIOR_STEP`'s); ``steps`` and ``grid`` (the grid's name) as decided.
        sigmas: the host float64 grid, decreasing, ending in 0 (DDPM's chain: its levels).
        chain: the respaced process DDPM's chain runs on (``sample(..., "ddpm")``), else None.
        prior_std: x_T ~ N(0, prior_std^2 I) in the process's own scaling.
        start_scale: s(t) at ``sigmas[0]``: x_hat = x_T / start_scale.
        params: the sampler's keyword arguments (its defaults, the caller's, the corrector's alphas).
        warning: the message when a drawn x_T starts below the process's top, else None.
    """

    name: str
    entry: Sampler
    steps: int
    grid: str
    sigmas: np.ndarray
    chain: Any | None
    prior_std: float
    start_scale: float
    params: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None

    @property
    def sigma_start(self) -> float:
        return float(self.sigmas[0])

    def draw_x_T(self, shape: Sequence[int], generator: torch.Generator | None,
                 device: torch.device | str) -> torch.Tensor:
        """x_T ~ N(0, prior_std^2 I) in the process's scaling (the default dtype); warns per ``warning``."""
        x_T = self.prior_std * torch.randn(tuple(shape), generator=generator, device=device)
        self.warn(stacklevel=3)
        return x_T

    def start_noise(self, shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str,
                    dtype: torch.dtype) -> torch.Tensor:
        """x_hat at the grid's top for x_T ~ N(0, prior_std^2 I): (prior_std / s) z; warns per ``warning``."""
        x = (self.prior_std / self.start_scale) * torch.randn(tuple(shape), generator=generator, device=device,
                                                              dtype=dtype)
        self.warn(stacklevel=3)
        return x

    def warn(self, stacklevel: int = 2) -> None:
        if self.warning is not None:
            warnings.warn(self.warning, stacklevel=stacklevel + 1)


def _check_steps(entry: Sampler, steps: Any, T: int | None) -> int:
    """``steps`` in [1, T] where the process has T training steps (default T), >= 1 in continuous time."""
    if entry.endpoints and steps is None:
        return 1
    if steps is None and T is None:
        raise ValueError("steps must be given for a continuous-time process, got steps=None")
    steps = T if steps is None else steps
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1 or (T is not None and steps > T):
        raise ValueError(f"steps must be an integer in [1, inf), got steps={steps!r}"
                         if T is None else f"steps must be an integer in [1, {T}], got steps={steps!r}")
    return int(steps)


def _default_grid(process: Any, entry: Sampler, steps: int) -> str:
    """The sampler's own grid at ``steps``; in continuous time that one where it is a continuous
    grid (DPM-Solver's logsnr, EDM's karras), else the sampler's ``continuous_grid``, else the
    process's ``default_grid`` (score_sde's uniform t for VP / sub-VP, geometric for VE)."""
    own = entry.grid_for(steps)
    if process.training_steps is not None or own in CONTINUOUS_GRIDS:
        return own
    return entry.continuous_grid or getattr(process, "default_grid", "karras")


def _top_warning(process: Any, sigma_top: float, grid: str) -> str | None:
    """The warning for x_T ~ N(0, I) drawn at a level below the process's top where the marginal
    keeps a visible part of the data (the DDIM repository's ``quadratic`` tops at 0.8 T;
    ``uniform`` misses the top steps): on the cosine schedule the oracle's sample mean comes
    out 0.25 for a data mean of 0.30."""
    signal = 1.0 / math.sqrt(1.0 + sigma_top**2)
    if sigma_top >= float(process.sigma_max) * (1.0 - 1e-9) or signal <= TOP_SIGNAL:
        return None
    return (f"grid={grid!r} starts at sigma={sigma_top:.3g}, where x_t keeps {signal:.1%} of the data, yet x_T "
            f"is drawn from N(0, I): samples are biased towards 0; a grid that starts at the top ('linspace', "
            f"'trailing', 'karras') avoids it")


def explicit_sigmas(process: Any, entry: Sampler, grid: Any, steps: Any) -> np.ndarray:
    """A grid given as its noise levels (e.g. :func:`ddpmkit.sampling.tune.tune_grid`'s): float64,
    strictly decreasing, positive but the final 0, inside the process's [sigma_min, sigma_max];
    ``steps``, where given, must be its length less one. Refused for DDPM's chain and the adaptive
    samplers, which pick their own levels. Checked once, here; one line per problem."""
    if entry.discrete or entry.endpoints:
        raise ValueError(f"an explicit sigma grid needs a sampler that steps over a denoiser on the grid it is "
                         f"given, got sampler={entry.name!r}")
    try:
        sigmas = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"grid must be a grid's name or a list of noise levels, got grid={grid!r}") from None
    low, high = float(process.sigma_min), float(process.sigma_max)
    if sigmas.ndim != 1 or len(sigmas) < 2 or not np.isfinite(sigmas).all() or sigmas[-1] != 0.0:
        raise ValueError(f"an explicit grid must be a list of at least 2 finite noise levels ending in 0, got "
                         f"grid={grid!r}")
    if not (np.diff(sigmas) < 0).all():
        raise ValueError(f"an explicit grid must decrease strictly, got grid={sigmas.tolist()}")
    if sigmas[0] > high * (1 + 1e-9) or sigmas[-2] < low * (1 - 1e-9):
        raise ValueError(f"an explicit grid's levels must lie in the process's [{low:.6g}, {high:.6g}] (then 0), "
                         f"got grid={sigmas.tolist()}")
    if steps is not None and steps != len(sigmas) - 1:
        raise ValueError(f"steps must be the explicit grid's length less one ({len(sigmas) - 1}), got steps={steps!r}")
    return sigmas


def _refuse_chain(process: Any, sampler: str, over_denoiser: bool) -> None:
    if process.training_steps is None:
        raise ValueError(f"sampler={sampler!r} is DDPM's chain: it needs a discrete process (training steps and "
                         f"their variance), got {type(process).__name__}; 'sde' is its step over a denoiser")
    if over_denoiser and not _chain_is_posterior(process):
        raise ValueError(f"sampler={sampler!r} over a denoiser is DDPM's chain only for variance='fixed_small', got "
                         f"variance={getattr(process, 'variance', None)!r}; use sampler='sde' (the posterior step) "
                         f"here, or dk.sample for the chain itself")


def plan_sampling(process: Any, sampler: str, steps: int | None = None, grid: str | None = None,
                  rho: float = 7.0, *, x_T_given: bool = False, params: Mapping[str, Any] | None = None,
                  over_denoiser: bool = False, strength: float | None = None) -> SamplingPlan:
    """The one decision of where and how ``sampler`` runs on ``process`` (module docstring).

    Args:
        steps: default the process's training steps (required in continuous time; ignored by
            adaptive samplers, ``rk45``, which take only the grid's ends).
        grid: a grid name (default: the sampler's own at ``steps``, else the process's); ``rho``
            for the karras grids; or the levels themselves, a decreasing list ending in 0
            (:func:`explicit_sigmas`; ``steps`` is then its length less one, the plan's grid
            ``"explicit"``).
        x_T_given: the caller brings its own start (an inverted x_T, SDEdit's noised guide): no
            warning about drawing x_T below the top.
        params: the sampler's own parameters (checked against it).
        over_denoiser: the caller runs the sampler's steps over a denoiser between its own (the
            inverse methods, SDEdit): ``ddpm`` then runs as :data:`POSTERIOR_STEP`.
        strength: SDEdit's start, the grid cut at sigma(t_min + strength (t_max - t_min)).

    Processes with training steps (``process.training_steps``): sub-sequence grids and karras;
    the samplers but ``ddim`` and DDPM's chain start at most at :data:`SIGMA_MAX`. In continuous
    time: :data:`CONTINUOUS_GRIDS` over the process's own range.
    """
    entry = lookup(sampler)
    params = dict(params or {})
    T = process.training_steps
    if entry.discrete:
        _refuse_chain(process, sampler, over_denoiser)
    if grid is not None and not isinstance(grid, str):
        sigmas = explicit_sigmas(process, entry, grid, steps)
        steps, name = len(sigmas) - 1, EXPLICIT_GRID
    else:
        steps = _check_steps(entry, steps, T)
        name = check_grid(grid if grid is not None else _default_grid(process, entry, steps),
                          grids_for(process, entry.discrete))
        top = SIGMA_MAX if entry.bounded and T is not None else None
        sigmas = sigma_grid(process, 2 if entry.endpoints else steps, name, rho, top)
    if strength is not None:
        sigmas = start_at(process, sigmas, strength)
    chain = None
    if entry.discrete and over_denoiser:
        entry = SAMPLERS[POSTERIOR_STEP]
    elif entry.discrete:
        chain = respaced_for(process, steps, name)
    check_params(entry, params)
    kwargs = {**entry.defaults, **params}
    if chain is None and "alphas" in entry.parameters():   # the corrector's alpha_i (alg. 5)
        alphas = process.corrector_alphas(sigmas)
        if alphas is not None:
            kwargs.setdefault("alphas", alphas)
    sigma_top = float(sigmas[0])
    warning = None if x_T_given else _top_warning(process, sigma_top, name)
    return SamplingPlan(sampler, entry, steps, name, sigmas, chain, float(getattr(process, "prior_std", 1.0)),
                        scale_at(process, sigma_top), kwargs, warning)
