"""Score-based point-cloud denoising (Luo & Hu, "Score-Based Point Cloud Denoising", ICCV 2021).

A noisy cloud ``y = x_0 + sigma eps`` is moved uphill on the log-density of the noisy data,
whose gradient a diffusion model gives through its denoiser (Tweedie; EDM Table 1, VE column):

    score(x) = grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2.

Gradient ascent (Luo & Hu 2021, sec. 4.2 eq. 10) takes ``x <- x + a_k sigma_k^2 score(x) =
x + a_k (D(x, sigma_k) - x)`` with decaying steps ``a_k = step_size decay^k``; Luo & Hu's network
knows one noise level, so their sigma_k is fixed; a noise-conditional model can follow the
shrinking residual noise, sigma_k from sigma down to ``anneal sigma`` geometrically (default 1/4); multiplying the score
by sigma^2 makes ``step_size`` dimensionless (their network predicts the displacement
``-(x - x_clean)`` directly, which is ``sigma^2 score``), and ``step_size = 1`` is one Tweedie step
``x <- D(x, sigma)``. Luo & Hu's released denoiser takes 30 steps with decay 0.95; the default
step 0.2 makes the steps sum to 3.1. A fixed point of the ascent is a point where the smoothed
density is flat: for a smooth surface and small sigma, the surface itself.

``method="langevin"`` runs annealed Langevin dynamics instead (:func:`ddpmkit.sampling.ald`:
Song & Ermon 2019, Alg. 1) on a geometric grid from ``sigma`` down to ``anneal sigma`` and ends
with the denoising step ``D(x, anneal sigma)``; its step at level sigma_i is ``step_size sigma_i^2``,
i.e. the drift ``step_size (D - x)`` of the ascent plus noise ``sqrt(2 step_size) sigma_i z``.

``method="ode"``: one Tweedie step ``x_1 = D(x, sigma)``, then the probability-flow ODE
``dx / dsigma = (x - D(x, sigma)) / sigma`` (EDM eq. 3; its Euler step is DDIM with eta = 0,
:func:`ddpmkit.sampling.ode.euler`) from the level ``anneal sigma`` (default 1/2) down to 0, the
Tweedie estimate taken as a sample at that level (its remaining error is smaller than sigma).
With ``steps = 1`` it is two Tweedie steps, at sigma and at ``anneal sigma``. The grid:
``steps`` levels geometric from ``anneal sigma`` to a tenth of it (at least the process's
``sigma_min``), then 0 (a last Tweedie step). Not from a paper: chosen by
benchmarks/pointclouds.py (docs/POINTCLOUDS.md), where this second pass at a lower level beats one
Tweedie step, and the ODE from ``sigma`` itself, started at the noisy cloud (SDEdit's cut, Meng
et al. 2022, without the added noise), ends farther from the surface than one Tweedie step.

The network sees the whole cloud (a permutation-equivariant point network with a global
feature), so ``D`` is the posterior mean of the whole cloud; or, with ``patch_points`` (a model
trained on patches, ``data.patch_points``), Luo & Hu's patch scheme: every point's ``k`` nearest
neighbours, centred on their mean, are denoised as one patch, and each point's estimate is the
average of its estimates in all the patches that hold it (:func:`patch_denoiser`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.pointsets import knn_patches
from .loop import SampleOptions
from .ode import check_positive, euler
from .score_sde import ald

__all__ = ["denoise_points", "ascent_steps", "patch_denoiser", "ode_grid", "DENOISE_METHODS"]

DENOISE_METHODS = ("ascent", "langevin", "ode")
LANGEVIN_ANNEAL = 0.25   # langevin's default last level, sigma / 4
ASCENT_ANNEAL = 0.25     # the ascent's default last level: better than Luo & Hu's fixed level on the shapes
ODE_START = 0.5          # method="ode": the ODE's first level, a fraction of sigma (best of 0.3 / 0.5 / 0.7 measured)
ODE_SPAN = 0.1           # its lowest nonzero level, a fraction of its first


def ascent_steps(steps: int, step_size: float, decay: float) -> np.ndarray:
    """The step sizes ``a_k = step_size decay^k``, k = 0 .. steps - 1 (host float64)."""
    return step_size * decay ** np.arange(steps, dtype=np.float64)


def ode_grid(top: float, steps: int, floor: float) -> np.ndarray:
    """method="ode"'s grid (host float64): ``steps`` levels geometric from ``top`` down to
    ``max(ODE_SPAN top, floor)``, then 0."""
    end = max(top * ODE_SPAN, floor)
    levels = np.geomspace(top, end, steps) if steps > 1 and end < top else np.array([top])
    return np.append(levels, 0.0)


def _tweedie_then_ode(D: Callable[..., torch.Tensor], noisy: torch.Tensor, sigma: float | np.ndarray,
                      tops: np.ndarray, steps: int, floor: float, cond: dict[str, Any]) -> torch.Tensor:
    """``D(x, sigma)``, then Euler on the probability-flow ODE from ``tops`` to 0 (module
    docstring); one grid per cloud when the clouds' levels differ (their condition sliced with them)."""
    if isinstance(sigma, float):
        opts = SampleOptions(progress=False, cond=cond)
        return euler(D, D(noisy, sigma, **cond), ode_grid(float(tops), steps, floor), opts)
    return torch.cat([_tweedie_then_ode(D, noisy[i:i + 1], float(level), tops[i], steps, floor,
                                        {k: v[i:i + 1] for k, v in cond.items()}) for i, level in enumerate(sigma)])


def _check_cloud(noisy: Any) -> torch.Tensor:
    if not isinstance(noisy, torch.Tensor) or noisy.ndim != 3 or noisy.shape[-1] != 3 or not noisy.is_floating_point():
        raise ValueError(f"noisy must be a float tensor of point clouds (B, N, 3), got "
                         f"{type(noisy).__name__} {tuple(getattr(noisy, 'shape', ()))}")
    if noisy.shape[0] < 1 or noisy.shape[1] < 1:
        raise ValueError(f"noisy must hold at least one cloud of one point, got shape {tuple(noisy.shape)}")
    if not bool(torch.isfinite(noisy).all()):   # the API edge: read once, before the loop
        raise ValueError("noisy holds NaN or inf coordinates")
    return noisy


def _check_sigma(process: Any, name: str, sigma: Any) -> float:
    check_positive(name, sigma)
    low, high = float(process.sigma_min), float(process.sigma_max)
    if not low * (1 - 1e-9) <= sigma <= high * (1 + 1e-9):
        raise ValueError(f"{name} must lie in the process's noise range [{low:.4g}, {high:.4g}], got {name}={sigma!r}")
    return float(sigma)


def _check_sigmas(process: Any, sigma: Any, batch: int) -> float | np.ndarray:
    """A float, or one level per cloud (host float64 (B,)) when they differ."""
    if isinstance(sigma, (int, float, np.integer, np.floating)) and not isinstance(sigma, bool):
        return _check_sigma(process, "sigma", sigma)
    levels = np.asarray(sigma.detach().cpu() if isinstance(sigma, torch.Tensor) else sigma, dtype=np.float64)
    if levels.shape != (batch,):
        raise ValueError(f"sigma must be a number or one level per cloud ({batch},), got shape {levels.shape}")
    checked = np.array([_check_sigma(process, "sigma", float(v)) for v in levels])
    return float(checked[0]) if np.all(checked == checked[0]) else checked


def patch_denoiser(D: Callable[..., torch.Tensor], k: int) -> Callable[..., torch.Tensor]:
    """A whole-cloud denoiser from a patch denoiser ``D`` (a model trained on ``k``-point patches).

    ``D_patch(x, sigma)`` for clouds (B, N, 3): the patch of every point (its ``k`` nearest
    neighbours, centred on their mean and turned into their principal axes:
    :func:`ddpmkit.data.pointsets.knn_patches`) is denoised by ``D`` and turned and moved back; a point's estimate is the mean over the N patches that hold it (at
    least its own). ``sigma``: a float or one level per cloud (B,). The neighbourhoods follow the
    current x, so they are recomputed at every call.
    """
    def denoise(x: torch.Tensor, sigma: float | torch.Tensor, **cond: Any) -> torch.Tensor:
        if cond:
            raise ValueError(f"a patch denoiser takes no condition, got {sorted(cond)}")
        batch, n, dim = x.shape
        patches, centres, frames, index = knn_patches(x, k)
        level = sigma if isinstance(sigma, float) else sigma.repeat_interleave(n)
        local = D(patches.reshape(batch * n, k, dim), level).reshape(batch, n, k, dim)
        estimates = local @ frames.transpose(-1, -2) + centres
        flat = (index + n * torch.arange(batch, device=x.device)[:, None, None]).reshape(-1)
        total = torch.zeros(batch * n, dim, dtype=x.dtype, device=x.device).index_add_(0, flat, estimates.reshape(-1, dim))
        count = torch.zeros(batch * n, dtype=x.dtype, device=x.device).index_add_(0, flat, torch.ones_like(flat, dtype=x.dtype))
        return (total / count[:, None]).reshape(batch, n, dim)

    return denoise


@torch.no_grad()
def denoise_points(
    process: Any,
    model: Callable[..., torch.Tensor],
    noisy: torch.Tensor,
    *,
    sigma: float,
    steps: int = 30,
    step_size: float = 0.2,
    decay: float = 0.95,
    method: str = "ascent",
    anneal: float | None = None,
    cond: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    patch_points: int | None = None,
) -> torch.Tensor:
    """Denoise point clouds ``noisy`` (B, N, 3) with a diffusion model's learned score.

    Args:
        process: any process on the noise-level contract (``denoiser``, ``sigma_min``, ``sigma_max``).
        model: the network, ``model(x, t, **cond)``.
        sigma: the noise level the denoiser is asked about, in the data's units (e.g. 0.02 for
            2% noise on clouds of unit scale), or one per cloud (B,) (ascent and ode); it must lie
            in the process's range.
        steps: ascent steps, or (langevin) noise levels of the geometric grid, or (ode) the ODE's
            Euler steps after the Tweedie step (5 measured as good as 30 on the shapes).
        step_size: ``a_0`` of the ascent (``step_size = 1``, ``steps = 1`` is one Tweedie step);
            for langevin the drift fraction per step, in (0, 2).
        decay: the ascent's step decay per step (1 keeps the step fixed); ignored by langevin.
        method: "ascent" (Luo & Hu), "langevin" (annealed Langevin, then one denoising step) or
            "ode" (one Tweedie step, then the probability-flow ODE from ``anneal sigma`` to 0; per-cloud
            levels are run one cloud at a time, each with its own grid).
        anneal: the last noise level as a fraction of ``sigma``, reached geometrically over the
            steps (ascent: default 1/4, measured better than Luo & Hu's fixed level (anneal = 1)
            on the generated shapes by benchmarks/pointclouds.py; langevin: default 1/4; both
            defaults stop at the process's ``sigma_min``); for "ode" the ODE's first level
            (default 1/2, at least ``sigma_min``).
        cond: the model's condition, e.g. ``{"partial": ...}``.
        generator: langevin's noise.
        progress: a progress bar.
        patch_points: the patch size of a model trained on patches (``data.patch_points``):
            denoise by patches (:func:`patch_denoiser`); None: the model sees whole clouds.

    Returns:
        The denoised clouds, same shape and dtype.
    """
    noisy = _check_cloud(noisy)
    if anneal is not None:
        check_positive("anneal", anneal)
        if anneal > 1:
            raise ValueError(f"anneal must be in (0, 1] (the last level as a fraction of sigma), got anneal={anneal!r}")
    if method not in DENOISE_METHODS:
        raise ValueError(f"method must be one of {list(DENOISE_METHODS)}, got method={method!r}")
    sigma = _check_sigmas(process, sigma, noisy.shape[0])
    check_positive("steps", steps, integer=True)
    check_positive("step_size", step_size)
    check_positive("decay", decay)
    if decay > 1:
        raise ValueError(f"decay must be in (0, 1], got decay={decay!r}")
    cond = dict(cond or {})
    D = process.denoiser(model)
    if patch_points is not None:
        check_positive("patch_points", patch_points, integer=True)
        if not 2 <= patch_points <= noisy.shape[1]:
            raise ValueError(f"patch_points must be in [2, {noisy.shape[1]}] (the points per cloud), got "
                             f"patch_points={patch_points!r}")
        D = patch_denoiser(D, int(patch_points))
    if method == "langevin":
        if not isinstance(sigma, float):
            raise ValueError("method='langevin' needs one sigma for the batch (its grid is shared); denoise "
                             "clouds of different noise levels in separate calls")
        if step_size >= 2:
            raise ValueError(f"step_size must be < 2 for langevin (the step is step_size sigma^2 < 2 sigma^2), "
                             f"got step_size={step_size!r}")
        end = max(sigma * LANGEVIN_ANNEAL, float(process.sigma_min)) if anneal is None else sigma * anneal
        end = _check_sigma(process, "anneal * sigma", end)
        levels = np.geomspace(sigma, end, steps) if steps > 1 and end < sigma else np.array([sigma])
        grid = np.append(levels, 0.0)
        opts = SampleOptions(generator=generator, progress=progress, cond=cond)
        return ald(D, noisy, grid, opts, steps_per_level=1, eps=step_size * float(levels[-1]) ** 2)
    if method == "ode":
        base = np.asarray(sigma, dtype=np.float64)
        tops = np.maximum(base * ODE_START, float(process.sigma_min)) if anneal is None else base * anneal
        _check_sigma(process, "anneal * sigma", float(tops.min()))
        x = _tweedie_then_ode(D, noisy, sigma, tops, int(steps), float(process.sigma_min), cond)
        if not bool(torch.isfinite(x).all()):   # read once, after the solve
            raise FloatingPointError("denoise_points: the ODE produced NaN or inf")
        return x
    base = np.asarray(sigma, dtype=np.float64)
    ends = np.maximum(base * ASCENT_ANNEAL, float(process.sigma_min)) if anneal is None else base * anneal
    _check_sigma(process, "anneal * sigma", float(ends.min()))   # the lowest level, in range too
    fractions = np.arange(steps) / max(steps - 1, 1)
    x = noisy
    for a, f in tqdm(list(zip(ascent_steps(steps, step_size, decay).tolist(), fractions.tolist())), desc="denoise",
                     disable=not progress, leave=False):
        levels = base * (ends / base) ** f
        level = float(levels) if base.ndim == 0 else torch.from_numpy(levels).to(noisy)
        x = x + a * (D(x, level, **cond) - x)
    if not bool(torch.isfinite(x).all()):   # read once, after the loop
        raise FloatingPointError(f"denoise_points: the ascent produced NaN or inf (step_size={step_size:g}, "
                                 f"{steps} steps)")
    return x

