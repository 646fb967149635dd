"""DDIM sampling and DDIM inversion (Song, Meng & Ermon 2020).

DDIM eq. 12 on a sub-sequence tau_1 < ... < tau_S of the training steps:

    x_{tau_{i-1}} = sqrt(a_{i-1}) x0_hat + sqrt(1 - a_{i-1} - sigma_i^2) eps_hat + sigma_i z,
    sigma_i^2 = eta^2 (1 - a_{i-1}) / (1 - a_i) (1 - a_i / a_{i-1})          (DDIM eq. 16)

with a_i = alpha_bar[tau_i] and a_0 = 1 before the first kept step. The sub-sequence is a
respaced process (:func:`ddpmkit.sampling.base.respaced_for`), whose ``alpha_bar_prev`` is
a_{i-1} and whose ``posterior_variance`` is exactly sigma_i^2 / eta^2, so the formula is written
once. With eta = 1 on all T steps the step is the DDPM posterior step with beta_tilde (fixed_small).

:func:`invert` runs the eta = 0 step backwards, from x_0 up the same sub-sequence, so that
``sample(..., sampler="ddim", steps=S, x_T=invert(..., x0, steps=S))`` returns x_0 (up to the
error of evaluating eps at the start of each inverse step; ``fixed_point_iters`` removes it).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.diffusion import GaussianDiffusion
from .base import SampleOptions, StepInfo, register, respaced_for

__all__ = ["ddim", "ddim_step", "invert"]

Model = Callable[..., torch.Tensor]


def _check_eta(eta: Any) -> float:
    ok = isinstance(eta, (int, float, np.integer, np.floating)) and not isinstance(eta, bool)
    if not ok or not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1], got eta={eta!r}")
    return float(eta)


def _ddim_combine(x0: torch.Tensor, eps: torch.Tensor, alpha_bar_to: float, sigma2: float = 0.0,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM eq. 12: sqrt(a) x0 + sqrt(1 - a - sigma^2) eps (+ sigma z when sigma > 0)."""
    x = math.sqrt(alpha_bar_to) * x0 + math.sqrt(max(1.0 - alpha_bar_to - sigma2, 0.0)) * eps
    if sigma2 > 0.0:
        x = x + math.sqrt(sigma2) * noise
    return x


def ddim_step(process: GaussianDiffusion, out: torch.Tensor, x_t: torch.Tensor, i: int,
              eta: float = 0.0, noise: torch.Tensor | None = None, clip_x0: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step from index ``i`` of ``process`` to index ``i - 1``: (x, predicted x_0).

    ``out`` is the raw model output at (x_t, i). ``noise`` is needed only when the step's
    sigma is positive (eta > 0 and i > 0).
    """
    t = torch.full((x_t.shape[0],), i, device=x_t.device, dtype=torch.long)
    p = process.p_from_output(out, x_t, t, clip_x0)
    schedule = process.schedule
    sigma2 = eta ** 2 * float(schedule.posterior_variance[i])
    x = _ddim_combine(p.pred_x0, p.pred_eps, float(schedule.alpha_bar_prev[i]), sigma2, noise)
    return x, p.pred_x0


@register("ddim")
def ddim(process: GaussianDiffusion, model: Model, x_T: torch.Tensor, steps: int,
         opts: SampleOptions, eta: float = 0.0, skip: str = "uniform") -> torch.Tensor:
    """DDIM sampling (DDIM eq. 12) over ``steps`` steps chosen by ``skip``.

    ``eta`` in [0, 1] scales the noise: 0 is the deterministic DDIM, 1 the DDPM posterior
    variance on the sub-sequence. One noise draw per step except the last, and none at eta = 0.
    """
    eta = _check_eta(eta)
    sub = respaced_for(process, steps, skip)
    n = sub.T
    original_t = sub.schedule.timesteps
    x = x_T
    for k in tqdm(range(n), desc="ddim", disable=not opts.progress, leave=False):
        i = n - 1 - k
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        out = sub.model_output(model, x, t, **opts.cond)
        noise = opts.randn(x.shape, x) if eta > 0.0 and i > 0 else None
        x, pred_x0 = ddim_step(sub, out, x, i, eta, noise, opts.clip_x0)
        opts.report(k, n, int(original_t[i]), x, pred_x0)
    return x


def _predicted_eps(process: GaussianDiffusion, model: Model, x: torch.Tensor, t: torch.Tensor,
                   cond: dict[str, Any]) -> torch.Tensor:
    pred, _ = process.split_output(process.model_output(model, x, t, **cond))
    return process.to_x0_eps(x, t, pred)[1]


@torch.no_grad()
def invert(process: GaussianDiffusion, model: Model, x0: torch.Tensor, steps: int = 50, *,
           skip: str = "uniform", fixed_point_iters: int = 0, cond: dict[str, Any] | None = None,
           callback: Callable[[StepInfo], None] | None = None, progress: bool = True
           ) -> torch.Tensor:
    """DDIM inversion: the deterministic map x_0 -> x_T that ``sample(sampler="ddim")`` undoes.

    For each kept step i = 1..S (indices tau_i as in sampling with the same ``steps`` and
    ``skip``) the eta = 0 step between levels a_{i-1} and a_i is run backwards with the model
    called at the step's own timestep tau_i, the one sampling uses for the same pair of levels:

        x0_hat = (x_{i-1} - sqrt(1 - a_{i-1}) eps) / sqrt(a_{i-1}),
        x_i = sqrt(a_i) x0_hat + sqrt(1 - a_i) eps,         eps = eps_theta(x_i, tau_i).

    eps is first evaluated at x_{i-1} (the usual explicit inversion); ``fixed_point_iters`` > 0
    re-evaluates it at the current estimate of x_i that many times, solving the implicit equation
    so that one DDIM step maps x_i back to x_{i-1}.
    """
    if not isinstance(x0, torch.Tensor) or x0.dim() < 1 or not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating-point tensor with a batch dimension, got x0={type(x0).__name__}")
    if not torch.isfinite(x0).all():
        raise ValueError(f"x0 contains NaN or infinite values (shape {tuple(x0.shape)})")
    if not isinstance(fixed_point_iters, int) or isinstance(fixed_point_iters, bool) or fixed_point_iters < 0:
        raise ValueError(f"fixed_point_iters must be an integer >= 0, got fixed_point_iters={fixed_point_iters!r}")
    sub = respaced_for(process, steps, skip)
    opts = SampleOptions(callback=callback, progress=progress, cond=dict(cond or {}))
    schedule, n = sub.schedule, sub.T
    x = x0
    for i in tqdm(range(n), desc="ddim inversion", disable=not progress, leave=False):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        a_from, a_to = float(schedule.alpha_bar_prev[i]), float(schedule.alpha_bar[i])
        x_next = x
        for _ in range(fixed_point_iters + 1):
            eps = _predicted_eps(sub, model, x_next, t, opts.cond)
            x0_hat = (x - math.sqrt(1.0 - a_from) * eps) / math.sqrt(a_from)
            x_next = _ddim_combine(x0_hat, eps, a_to)
        x = x_next
        opts.report(i, n, int(schedule.timesteps[i]), x, x0_hat)
    return x
