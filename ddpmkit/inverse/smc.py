"""Sequential Monte Carlo for linear inverse problems: SMCDiff (Trippe et al. 2023, Alg. 1),
extended from masks to any A with A A^T = c I, asymptotically exact as particles grow.

The observed part is given a whole forward trajectory y_sigma, drawn *backwards* as the
Brownian bridge of the forward process pinned at y (the forward chain in x_hat variables is
y_{sigma'} = y_sigma + sqrt(sigma'^2 - sigma^2) A eps; going down, given y_sigma and y,
y_{sigma'} ~ N(y + (sigma'^2 / sigma^2)(y_sigma - y), sigma'^2 (1 - sigma'^2 / sigma^2) c I),
which is the ancestral step with the exact denoiser y). Because the forward noise acts on
each coordinate independently, q(x_0 | y_{0:T}) integrated over this trajectory is q(x_0 | y).

``particles`` particles per observation follow the model's ancestral kernel
N(m, v I), m = D + (sigma'^2 / sigma^2)(x - D), v = sigma_up^2. Isotropic, it splits into the
observed part A x' ~ N(A m, v c I) and an independent rest; so each step is *fully adapted*:
weight by p(y_{sigma'} | x) = N(y_{sigma'}; A m, v c I), resample (systematic), then draw x'
from the kernel and set its observed part to y_{sigma'}. With one particle this is replacement
sampling with a bridged (instead of independently noised) observation. For a noisy observation
y = A x_0 + noise_std n, y is the observation at level sigma_y = noise_std / sqrt(c) (which the
grid should contain): the bridge is pinned there and below it the particles run unconditioned.

Resampling happens on the device when the effective sample size of a group falls below
``ess_threshold`` * particles (decided by ``torch.where``; no host reads), and the one sample
returned per observation is drawn from its particles' final weights.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..sampling.loop import Denoiser, SampleOptions, run_steps
from ..sampling.stochastic import ancestral_split, toward_denoised
from .operators import LinearOperator

__all__ = ["smc", "systematic_resample"]


def systematic_resample(log_w: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Ancestor indices (n, P) in [0, P) for log-weights (n, P): systematic resampling
    (Kitagawa 1996; Douc et al. 2005), one uniform draw per row, on the weights' device."""
    n, P = log_w.shape
    cdf = torch.cumsum(torch.softmax(log_w, dim=1), dim=1)
    u = (torch.rand((n, 1), generator=generator, device=log_w.device, dtype=log_w.dtype)
         + torch.arange(P, device=log_w.device, dtype=log_w.dtype)) / P
    return torch.searchsorted(cdf.contiguous(), u.contiguous()).clamp_max(P - 1)


@torch.no_grad()
def smc(D: Denoiser, x: torch.Tensor, sigmas: np.ndarray, opts: SampleOptions, operator: LinearOperator,
        y: torch.Tensor, particles: int, sigma_y: float = 0.0, ess_threshold: float = 0.5) -> torch.Tensor:
    """SMCDiff over ``particles`` particles per observation (module docstring).

    ``x``: (n * particles, ...) at ``sigmas[0]``, the particles of observation j in rows
    j * particles ... (j + 1) * particles - 1; ``y``: (n, ...) or (1, ...). Returns (n, ...).
    """
    P = particles
    n = x.shape[0] // P
    flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
    y = y.expand((n,) + tuple(y.shape[1:])) if y.shape[0] == 1 else y
    obs_noise = lambda: operator(torch.randn((n,) + tuple(x.shape[1:]), generator=opts.generator,  # noqa: E731
                                             device=x.device, dtype=x.dtype))
    per = lambda t: t.repeat_interleave(P, dim=0)  # noqa: E731
    offsets = (torch.arange(n, device=x.device) * P)[:, None]
    log_w = torch.zeros((n, P), device=x.device, dtype=x.dtype)
    top = float(sigmas[0])
    state = {"y": y + math.sqrt(max(top**2 - sigma_y**2, 0.0)) * obs_noise() if top > sigma_y else y}
    if top >= sigma_y:
        x = operator.project(x, per(state["y"]))

    def resample(log_w: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.softmax(log_w, dim=1)
        low = 1.0 / (w * w).sum(dim=1, keepdim=True) < ess_threshold * P   # ESS below the threshold
        keep = torch.arange(P, device=x.device).expand(n, P)
        idx = torch.where(low, systematic_resample(log_w, opts.generator), keep)
        return torch.where(low, torch.zeros_like(log_w), log_w), mean[(idx + offsets).reshape(-1)]

    def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal log_w
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = D(x, sigma, **opts.cond)
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, 1.0)
        mean = toward_denoised(x, denoised, sigma, sigma_down)
        if sigma_next >= sigma_y and sigma_next > 0.0:
            # the observation one level down: its bridge pinned at (sigma_y, y), in variance time
            r = (sigma_next**2 - sigma_y**2) / (sigma**2 - sigma_y**2)
            std = math.sqrt(max((sigma_next**2 - sigma_y**2) * (1.0 - r), 0.0))
            state["y"] = y + r * (state["y"] - y) + std * obs_noise()
            target = per(state["y"])
            resid = flat(operator(mean) - target)
            log_w = log_w - (resid * resid).sum(dim=1).reshape(n, P) / (2.0 * sigma_up**2 * operator.gram)
            log_w = log_w - log_w.logsumexp(dim=1, keepdim=True)   # normalised, so float32 keeps their differences
            log_w, mean = resample(log_w, mean)
            x_next = operator.project(mean + sigma_up * opts.randn(mean), target)
        elif sigma_next == 0.0 and sigma_y == 0.0:   # the last step: the observation exactly
            x_next = operator.project(mean, per(y))
        else:                                           # below sigma_y: unconditioned
            x_next = mean + sigma_up * opts.randn(mean) if sigma_up > 0.0 else mean
        return x_next, denoised

    x = run_steps("smc", step, x, sigmas, opts)
    pick = torch.multinomial(torch.softmax(log_w, dim=1), 1, generator=opts.generator)
    return x[(pick + offsets).reshape(-1)].reshape((n,) + tuple(x.shape[1:]))
