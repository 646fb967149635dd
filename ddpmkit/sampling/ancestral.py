"""Ancestral sampling: DDPM's reverse chain (Ho et al. 2020, Algorithm 2).

x_{t-1} = mu_theta(x_t, t) + Sigma_theta(x_t, t)^{1/2} z, z ~ N(0, I), with no noise on the
last step. mu_theta and Sigma_theta come from :meth:`GaussianDiffusion.p_mean_variance`, so every
parameterisation (eps / x0 / v) and variance (fixed_small / fixed_large / learned_range) works.

With fewer steps than the process has, the chain runs on the respaced process (Nichol &
Dhariwal 2021, section 4): its betas, beta_tilde and (for learned_range) the interpolation range
are those of the shorter schedule, while the network still sees the original timesteps.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import torch

from ..core.diffusion import GaussianDiffusion
from .loop import SampleOptions, run_steps

__all__ = ["ddpm", "ancestral_step"]


def ancestral_step(process: GaussianDiffusion, out: torch.Tensor, x_t: torch.Tensor, i: int,
                   noise: torch.Tensor | None, clip_x0: bool = False,
                   condition_mean: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDPM step from index ``i`` of ``process``: (x_{i-1}, predicted x_0).

    ``out`` is the raw model output at (x_t, i); ``noise`` is ignored (and may be None) at i = 0.
    ``condition_mean(mean, variance)``, if given, replaces mu_theta before the noise is added.
    """
    index = torch.full((x_t.shape[0],), i, device=x_t.device, dtype=torch.long)
    p = process.p_from_output(out, x_t, index, clip_x0, validate=False)   # checks out's shape (no host read)
    mean = p.mean if condition_mean is None else condition_mean(p.mean, p.variance)
    if i == 0:
        return mean, p.pred_x0
    return mean + torch.exp(0.5 * p.log_variance) * noise, p.pred_x0


@torch.no_grad()
def ddpm(process: GaussianDiffusion, model: Callable[..., torch.Tensor], x_T: torch.Tensor,
              opts: SampleOptions, condition_mean: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) over every step of ``process``.

    Pass a respaced process (``process.respace(...)``, or :func:`ddpmkit.sampling.sample` with
    ``steps`` and ``grid``) for fewer steps: iDDPM section 4; ``grid="linspace"`` is
    improved-diffusion's respacing, ``"uniform"`` diffusers' DDPMScheduler with
    ``timestep_spacing="leading"``. One noise draw per step except the last. The state is x_t
    itself (the process's scaling), and ``StepInfo.sigma`` is the step's noise level.

    ``condition_mean(mean, variance, x_t, t, **cond) -> mean`` (``t`` the original timesteps)
    may shift mu_theta at every step, e.g. classifier guidance (Dhariwal & Nichol 2021, Alg. 1;
    :class:`ddpmkit.sampling.guidance.ClassifierMeanShift`).
    """
    n = process.T
    sigmas = np.append(process.sigma(process.schedule.timesteps.astype(np.float64))[::-1], 0.0)
    timesteps = process.schedule.table("timesteps", x_T.device)

    def step(k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i = n - 1 - k
        index = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)   # of the respaced process
        out = process.model_output(model, x, index, validate=False, **opts.cond)
        noise = opts.randn(x) if i > 0 else None
        shift = None
        if condition_mean is not None:
            shift = partial(condition_mean, x_t=x, t=timesteps[index], **opts.cond)
        return ancestral_step(process, out, x, i, noise, opts.clip_x0, shift)

    return run_steps("ddpm", step, x_T, sigmas, opts, times=process.schedule.timesteps[::-1])
