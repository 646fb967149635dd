"""Negative log-likelihood in bits/dim by the full variational bound (DDPM eq. 5, iDDPM sec. 3).

    L = L_T + sum_{t>1} L_{t-1} + L_0
      = KL(q(x_T|x_0) || N(0, I)) + sum_t KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) - log p(x_0|x_1)

Every term is evaluated (no Monte Carlo over t), each at one draw of x_t ~ q(x_t | x_0).
The exact likelihood by the probability-flow ODE lives in :mod:`ddpmkit.likelihood.ode`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..core.diffusion import GaussianDiffusion, check_finite
from ..core.gaussian import mean_flat, normal_kl
from ..core.losses import vlb_from_prediction, check_levels

__all__ = ["VLBResult", "vlb_bpd", "prior_bpd"]

LN2 = math.log(2.0)


@dataclass(frozen=True)
class VLBResult:
    """Per-example bound in bits/dim and its breakdown.

    ``total[b] = prior[b] + terms[b].sum()``; ``terms[:, 0]`` is the decoder -log p(x_0|x_1) and
    ``terms[:, t]`` for t > 0 the KL at step t. ``mse[b, t]`` is the eps-prediction error. All are
    float64 CPU tensors, whatever the device of the data.
    ``discrete`` says whether the decoder was discretized (then ``total`` bounds the
    negative log-probability of the quantised data) or a continuous density.
    """

    total: torch.Tensor   # (B,)
    prior: torch.Tensor   # (B,)
    terms: torch.Tensor   # (B, T)
    mse: torch.Tensor     # (B, T)
    levels: int | None

    @property
    def decoder(self) -> torch.Tensor:
        return self.terms[:, 0]

    @property
    def discrete(self) -> bool:
        return self.levels is not None


def prior_bpd(process: GaussianDiffusion, x0: torch.Tensor) -> torch.Tensor:
    """KL(q(x_T | x_0) || N(0, I)) in bits/dim, per example (the prior term L_T)."""
    t = torch.full((x0.shape[0],), process.T - 1, device=x0.device, dtype=torch.long)
    mean, _, log_variance = process.q_mean_variance(x0, t)
    zeros = torch.zeros_like(x0)
    return mean_flat(normal_kl(mean, log_variance, zeros, zeros)) / LN2


@torch.no_grad()
def vlb_bpd(
    process: GaussianDiffusion,
    model: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    levels: int | None = 256,
    generator: torch.Generator | None = None,
    clip_x0: bool = False,
    t_batch: int = 1,
    progress: bool = True,
    **cond: Any,
) -> VLBResult:
    """The full variational bound of each example in bits/dim, with every term.

    Args:
        levels: quantisation levels of the data in [-1, 1] (256 for 8-bit images, 17 for the
            scikit-learn digits); None for continuous data (a Gaussian density decoder).
        t_batch: how many timesteps to evaluate in one network call (the batch is repeated
            ``t_batch`` times): larger is faster where memory allows.
        progress: show a progress bar over the T steps.
        clip_x0: clip the predicted x_0 to [-1, 1] in every term (improved-diffusion's
            ``image_nll.py`` does by default; off here, as it changes the model being bounded).
    """
    if not isinstance(x0, torch.Tensor) or x0.dim() < 1:
        raise ValueError(f"x0 must be a batch tensor (B, ...), got {type(x0).__name__}")
    check_finite("x0", x0)
    check_levels(levels, x0)
    if isinstance(t_batch, bool) or not isinstance(t_batch, int) or t_batch < 1:
        raise ValueError(f"t_batch must be an integer >= 1, got t_batch={t_batch!r}")
    B, T = x0.shape[0], process.T
    # the float64 tables stay on the host (some devices have no float64): one copy per chunk
    terms = torch.zeros(B, T, dtype=torch.float64)
    mse = torch.zeros(B, T, dtype=torch.float64)
    starts = range(T - 1, -1, -t_batch)
    for start in tqdm(starts, desc="vlb", disable=not progress, leave=False):
        ts = list(range(start, max(start - t_batch, -1), -1))
        k = len(ts)
        x_rep = x0.repeat((k,) + (1,) * (x0.dim() - 1))
        t = torch.tensor(ts, device=x0.device).repeat_interleave(B)
        noise = torch.randn(x_rep.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = process.q_sample(x_rep, t, noise, validate=False)
        c = {n: (v.repeat((k,) + (1,) * (v.dim() - 1)) if isinstance(v, torch.Tensor) else v)
             for n, v in cond.items()}
        out = process.model_output(model, x_t, t, validate=False, **c)
        p = process.p_from_output(out, x_t, t, clip_x0, validate=False)
        values = vlb_from_prediction(process, p.mean, p.log_variance, x_rep, x_t, t, levels).detach().cpu()
        err = mean_flat((p.pred_eps - noise) ** 2).detach().cpu()
        for j, tj in enumerate(ts):
            terms[:, tj] = values[j * B:(j + 1) * B].double()
            mse[:, tj] = err[j * B:(j + 1) * B].double()
    prior = prior_bpd(process, x0).detach().cpu().double()
    return VLBResult(total=prior + terms.sum(dim=1), prior=prior, terms=terms, mse=mse, levels=levels)
