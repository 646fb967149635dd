"""Image-to-image editing: SDEdit (Meng et al. 2022) and DDIM-inversion editing (Song et al. 2020).

SDEdit: a guide image x_g is noised to the level of time t_0 = strength of the way from t_min to
t_max (their t_0 in [0, 1] of the SDE's time; for the discrete process t_0 = strength (T - 1)),
x_hat = x_g + sigma(t_0) z, and denoised by any sampler from there: a small strength keeps the
guide, strength 1 forgets it. The grid is the sampler's usual grid cut at sigma(t_0).

DDIM editing: the image is inverted to x_T by DDIM run backwards (``dk.invert`` on the discrete
process; on a continuous one the same explicit step of the probability-flow ODE in x_hat,
DDIM eq. 14, with the denoiser taken at the upper level) and sampled again with the same
deterministic sampler under another condition or model (a class, a guidance wrapper).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from ..core.predictions import check_finite
from ..sampling.api import make_generator, sample
from ..sampling.ddim import invert
from ..sampling.grids import start_at
from ..sampling.loop import Denoiser, SampleOptions, run_steps
from ..sampling.plan import plan_sampling

__all__ = ["sdedit", "ddim_edit", "check_strength", "sdedit_grid", "invert_ode"]

Model = Callable[..., torch.Tensor]


def check_strength(strength: Any) -> float:
    ok = isinstance(strength, (int, float, np.integer, np.floating)) and not isinstance(strength, bool)
    if not ok or not math.isfinite(float(strength)) or not 0.0 < float(strength) <= 1.0:
        raise ValueError(f"strength must be a number in (0, 1], got strength={strength!r}")
    return float(strength)


def check_image(image: Any, name: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() < 2 or not image.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, ...), got "
                         f"{type(image).__name__}{tuple(image.shape) if isinstance(image, torch.Tensor) else ''}")
    check_finite(name, image)
    return image


def sdedit_grid(process: Any, full: np.ndarray, strength: float) -> np.ndarray:
    """``full`` cut at sigma(t_0), t_0 = t_min + strength (t_max - t_min), which becomes its top
    (never above ``full``'s own top): :func:`ddpmkit.sampling.grids.start_at`."""
    return start_at(process, full, strength)


def sdedit(process: Any, model: Model, image: torch.Tensor, strength: float, *, sampler: str = "ddim",
           steps: int = 50, generator: torch.Generator | None = None, seed: int | None = None,
           cond: dict[str, Any] | None = None, progress: bool = True, clip_x0: bool = False,
           **params: Any) -> torch.Tensor:
    """SDEdit (Meng et al. 2022, Alg. 1): noise ``image`` to ``strength`` and denoise with ``sampler``
    (any registered sampler over a denoiser, or ``"ddpm"``: DDPM's fixed-small chain, as its posterior
    step; :mod:`ddpmkit.sampling.plan`); about ``strength * steps`` steps.
    ``params``: ``grid``, ``rho`` and the sampler's own (e.g. ``eta``)."""
    strength = check_strength(strength)
    image = check_image(image)
    grid, rho = params.pop("grid", None), params.pop("rho", 7.0)
    plan = plan_sampling(process, sampler, steps, grid, rho, x_T_given=True, params=params,
                         over_denoiser=True, strength=strength)
    if generator is None and seed is not None:
        generator = make_generator(seed, image.device)
    opts = SampleOptions(generator=generator, progress=progress, cond=dict(cond or {}))
    x_hat = image + plan.sigma_start * opts.randn(image)
    return plan.entry.fn(process.denoiser(model, clip_x0), x_hat, plan.sigmas, opts, **plan.params)


@torch.no_grad()
def invert_ode(D: Denoiser, x0: torch.Tensor, sigmas: np.ndarray, opts: SampleOptions,
               fixed_point_iters: int = 0) -> torch.Tensor:
    """x_0 -> x_hat at ``sigmas[0]`` by the inverse of the Euler (DDIM eta = 0) step, going up the
    reversed grid: x' = x + (sigma' - sigma) (x' - D(x', sigma')) / sigma', first with x' = x on
    the right (explicit), then ``fixed_point_iters`` fixed-point iterations of that equation."""
    up = np.asarray(sigmas, dtype=np.float64)[::-1].copy()

    def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = float(up[i]), float(up[i + 1])
        x_next = x
        for _ in range(fixed_point_iters + 1):
            denoised = D(x_next, upper, **opts.cond)
            x_next = x + ((upper - lower) / upper) * (x_next - denoised)
        return x_next, denoised

    return run_steps("ode inversion", step, x0, up, opts)


def ddim_edit(process: Any, model: Model, image: torch.Tensor, *, steps: int = 50,
              cond: dict[str, Any] | None = None, edit_cond: dict[str, Any] | None = None,
              edit_model: Model | None = None, fixed_point_iters: int = 0, progress: bool = True) -> torch.Tensor:
    """Invert ``image`` with DDIM under ``cond`` and ``model``, then sample it back with DDIM (eta 0)
    under ``edit_cond`` and ``edit_model`` (e.g. another class, or a guidance wrapper such as
    :class:`ddpmkit.sampling.guidance.ClassifierFreeGuidance`); with neither it reconstructs ``image``."""
    image = check_image(image)
    edit_model = model if edit_model is None else edit_model
    edit_cond = dict(cond or {}) if edit_cond is None else dict(edit_cond)
    if process.training_steps is not None:   # DDIM's own inversion, on the sub-sequence sample(ddim) runs
        z = invert(process, model, image, steps, fixed_point_iters=fixed_point_iters, cond=cond, progress=progress)
        return sample(process, edit_model, None, "ddim", steps, x_T=z, cond=edit_cond, progress=progress)
    plan = plan_sampling(process, "euler", steps, x_T_given=True, over_denoiser=True)
    top = invert_ode(process.denoiser(model), image, plan.sigmas,
                     SampleOptions(progress=progress, cond=dict(cond or {})), fixed_point_iters)
    opts = SampleOptions(progress=progress, cond=edit_cond)
    return plan.entry.fn(process.denoiser(edit_model), top, plan.sigmas, opts, **plan.params)
