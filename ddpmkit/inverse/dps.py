"""Diffusion posterior sampling / reconstruction guidance (Chung et al. 2023; Ho et al. 2022).

After every step of an ordinary sampler the sample is moved down the gradient of the
observation's residual through the denoiser (DPS Alg. 1 and 2, their code's form):

    x_{i+1} <- x_{i+1} - zeta grad_{x_i} || y - A D(x_i, sigma_i) ||,

i.e. the gradient of ||y - A x0_hat||^2 with the step zeta / ||y - A x0_hat|| (one norm per
example). zeta is ``step_size``, taken in the process's own coordinates x_t = s x_hat as in DPS
(for VP: the DDPM sample; for VE / EDM s = 1): in x_hat this is a step of zeta / (s_i s_{i+1}).
Ho et al.'s reconstruction guidance (sec. 3.1) is the same gradient taken on the denoised
estimate. Works for any differentiable A; the norm stays a tensor (no host reads).
"""
from __future__ import annotations

import numpy as np
import torch

from ..sampling.loop import Denoiser, SampleOptions, run_steps
from .operators import LinearOperator
from .steps import Step, step_function

__all__ = ["dps", "residual_norm"]


def residual_norm(operator: LinearOperator, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """||y - A x|| per example (B,), safe to differentiate at 0."""
    r = (y - operator(x)).reshape(x.shape[0], -1)
    return torch.sqrt((r * r).sum(dim=1) + torch.finfo(r.dtype).tiny)


def dps(D: Denoiser, x: torch.Tensor, sigmas: np.ndarray, opts: SampleOptions, operator: LinearOperator,
        y: torch.Tensor, step: Step | None = None, step_size: float = 1.0,
        scales: np.ndarray | None = None) -> torch.Tensor:
    """DPS with any single-step sampler ``step`` (default ancestral, as in DPS Alg. 1).

    ``scales``: s(sigma) at each grid level (host float64; default 1: VE / EDM). ``step_size`` 0
    is the unconditional sampler. The denoiser is differentiated, so the model must be.
    """
    step = step or step_function("sde")
    s = np.ones(len(sigmas)) if scales is None else np.asarray(scales, dtype=np.float64)

    def move(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x_next, denoised = step(D, x_in, sigma, sigma_next, opts)
            norm = residual_norm(operator, y, denoised)
            grad, = torch.autograd.grad(norm.sum(), x_in)
        zeta = step_size / (s[i] * s[i + 1])
        return (x_next.detach() - zeta * grad), denoised.detach()

    return run_steps("dps", move, x, sigmas, opts)
