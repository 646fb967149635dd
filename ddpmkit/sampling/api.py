"""``sample(process, model, shape, sampler=..., steps=...)``: the one entry point.

It checks every argument once (the API edge), builds the denoiser and the sigma grid on the
host, draws x_T on the sample's device, and hands them to the named sampler; nothing inside the
sampling loop reads the device.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import torch

from ..core.diffusion import GaussianDiffusion
from .grids import CONTINUOUS_GRIDS, SIGMA_MAX, check_grid, continuous_sigmas, respaced_for, sigma_grid
from .loop import SampleOptions, StepInfo
from .registry import SAMPLERS, Sampler, check_params

__all__ = ["sample", "make_generator", "model_device"]


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def model_device(model: Any) -> torch.device | None:
    """The device of ``model``'s first parameter, looking through wrappers that keep the network
    as ``.model`` or ``.module`` (guidance, DDP); None for a parameter-free callable."""
    seen = 0
    while model is not None and seen < 8:
        if isinstance(model, torch.nn.Module):
            for p in model.parameters():
                return p.device
            for b in model.buffers():
                return b.device
        model = getattr(model, "model", None) or getattr(model, "module", None)
        seen += 1
    return None


def _snap(t: float) -> float:
    r = round(t)
    return float(r) if abs(t - r) <= 1e-7 * max(1.0, abs(t)) else float(t)


def _scale_at(process: Any, sigma: float) -> float:
    """s(t) at the noise level sigma: x_t = s(t) x_hat (host float64)."""
    return float(process.scale(process.t_of_sigma(sigma)))


def _process_callback(process: Any, callback: Callable[[StepInfo], None] | None,
                      rescale: bool) -> Callable[[StepInfo], None] | None:
    """The user's callback with ``t`` in the process's time and ``x`` in its scaling (x_t)."""
    if callback is None:
        return None

    def report(info: StepInfo) -> None:
        t = _snap(float(process.t_of_sigma(info.sigma)))
        x = info.x * _scale_at(process, info.sigma_next) if rescale and info.sigma_next > 0 else info.x
        callback(StepInfo(info.i, info.n, t, x, info.pred_x0, info.sigma, info.sigma_next))

    return report


TOP_SIGNAL = 0.05
"""A grid whose top keeps more than this fraction sqrt(alpha_bar) of the data in x_T draws a warning."""


def _warn_if_not_at_the_top(process: GaussianDiffusion, sigma_top: float, grid: str) -> None:
    """Warn when x_T ~ N(0, I) is drawn at a level where the marginal keeps a visible part of the
    data (the DDIM repository's ``quadratic`` tops at 0.8 T; ``uniform`` misses the top steps):
    on the cosine schedule the oracle's sample mean comes out 0.25 for a data mean of 0.30."""
    signal = 1.0 / math.sqrt(1.0 + sigma_top**2)
    if signal > TOP_SIGNAL:
        warnings.warn(f"grid={grid!r} starts at sigma={sigma_top:.3g}, where x_t keeps {signal:.1%} of the "
                      f"data, yet x_T is drawn from N(0, I): samples are biased towards 0; a grid that "
                      f"starts at the top ('linspace', 'trailing', 'karras') avoids it", stacklevel=3)


def _check_steps(entry: Sampler, steps: Any, T: int | None) -> int:
    """``steps`` in [1, T] for a discrete process (default T), >= 1 for a continuous one."""
    if entry.endpoints and steps is None:
        return 1
    if steps is None and T is None:
        raise ValueError("steps must be given for a continuous-time process, got steps=None")
    steps = T if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1 or (T is not None and steps > T):
        raise ValueError(f"steps must be an integer in [1, {T if T is not None else 'inf'}), got steps={steps!r}"
                         if T is None else f"steps must be an integer in [1, {T}], got steps={steps!r}")
    return steps


def sample(
    process: Any,
    model: Callable[..., torch.Tensor],
    shape: Sequence[int] | None,
    sampler: str = "ddim",
    steps: int | None = None,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    x_T: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    clip_x0: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = True,
    cond: dict[str, Any] | None = None,
    **params: Any,
) -> torch.Tensor:
    """Draw ``shape[0]`` samples from ``model`` with the named sampler.

    ``process`` is the discrete :class:`GaussianDiffusion` or any process on the noise-level
    contract (``denoiser``, ``sigma``, ``scale``, ``t_of_sigma``, ``sigma_min``, ``sigma_max``,
    ``t_min``, ``t_max``, ``prior_std``): x_T is drawn from its prior N(0, prior_std^2 I).

    Args:
        sampler: one of ``SAMPLERS`` ("ddpm", "ddim", "euler", "heun", "rk45", "sde", "pc",
            "dpmpp2m", "dpmpp3m").
        steps: the number of steps (default: the process's T); must lie in [1, T] (ignored
            by ``rk45``, which picks its own).
        generator / seed: the source of randomness (a seed makes a generator on the device).
        x_T: the starting noise (e.g. from :func:`invert`); drawn from N(0, I) when None.
            ``shape`` may then be None.
        device: where to sample; default: x_T's device, else the model's parameters', else CPU.
        params: ``grid`` (discrete: a step sub-sequence or ``"karras"``, each sampler has its
            default; continuous: ``"uniform"`` in t, ``"logsnr"`` (geometric in sigma) or
            ``"karras"``: the sampler's own where it is one of these, else the process's
            ``default_grid``),
            ``rho`` (karras), and the sampler's own parameters, e.g. ``eta`` for DDIM.
    """
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got sampler={sampler!r}")
    entry = SAMPLERS[sampler]
    check_params(entry, params)
    if shape is None:
        if x_T is None:
            raise ValueError("shape must be given when x_T is None, got shape=None")
        shape = tuple(x_T.shape)
    if len(shape) < 1 or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"shape must hold positive integers, got shape={tuple(shape)}")
    discrete = isinstance(process, GaussianDiffusion)
    if entry.discrete and not discrete:
        raise ValueError(f"sampler={sampler!r} needs a discrete process (its variance), got {type(process).__name__}")
    steps = _check_steps(entry, steps, process.T if discrete else None)
    if discrete:
        grid = check_grid(params.pop("grid", entry.grid_for(steps)), entry.grids)
    else:
        # the sampler's own grid where it is a continuous one (DPM-Solver's logsnr, EDM's karras),
        # else the process's (score_sde's uniform t for VP / sub-VP, geometric for VE)
        own = entry.grid_for(steps) if entry.grid_for(steps) in CONTINUOUS_GRIDS else (
            entry.continuous_grid or getattr(process, "default_grid", "karras"))
        grid = check_grid(params.pop("grid", own), CONTINUOUS_GRIDS)
    rho = params.pop("rho", 7.0)
    if device is None:
        device = x_T.device if x_T is not None else (model_device(model) or torch.device("cpu"))
    if generator is None and seed is not None:
        generator = make_generator(seed, device)
    drawn = x_T is None   # only a drawn x_T can be at the wrong level (an inverted one is not)
    if drawn:   # the prior N(0, prior_std^2 I) in the process's own scaling
        x_T = float(getattr(process, "prior_std", 1.0)) * torch.randn(tuple(shape), generator=generator, device=device)
    elif tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T must have shape {tuple(shape)}, got {tuple(x_T.shape)}")
    if not x_T.is_floating_point():
        raise ValueError(f"x_T must be a floating-point tensor, got dtype {x_T.dtype}")
    kwargs = {**entry.defaults, **params}
    opts = SampleOptions(generator=generator, progress=progress, cond=dict(cond or {}), clip_x0=clip_x0,
                         callback=_process_callback(process, callback, rescale=not entry.discrete))
    if entry.discrete:
        sub = respaced_for(process, steps, grid)
        if drawn:
            _warn_if_not_at_the_top(process, sub.sigma_max, grid)
        return entry.fn(sub, model, x_T, opts, **kwargs)
    n = 2 if entry.endpoints else steps
    if discrete:
        sigmas = sigma_grid(process, n, grid, rho, SIGMA_MAX if entry.bounded else None)
        if drawn:
            _warn_if_not_at_the_top(process, float(sigmas[0]), grid)
        if "alphas" in entry.parameters():   # the corrector's alpha_i: the discrete VP's 1 - beta_i
            kwargs.setdefault("alphas", [process.continuous.alpha_at(float(t)) for t in process.t_of_sigma(sigmas)])
    else:
        sigmas = continuous_sigmas(process, n, grid, rho)
    x_hat = x_T / _scale_at(process, float(sigmas[0]))
    return entry.fn(process.denoiser(model, clip_x0), x_hat, sigmas, opts, **kwargs)
