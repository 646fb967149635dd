"""Denoising score matching for the continuous processes, as one weighted denoising loss.

Every process writes ``x = s(t) (x_0 + sigma eps)`` and turns its network into a denoiser D
(Karras et al. 2022, "EDM", sec. 2). Denoising score matching (Vincent 2011; Song & Ermon 2019,
eq. 2; Song et al. 2021, eq. 7) in any output parameterisation is then

    L(x_0) = lambda(sigma) * mean_dims (D(x_0 + sigma eps, sigma) - x_0)^2,

because each parameterisation's error is the x_0 error times a factor of sigma alone: in
x_hat coordinates the score error is (D - x_0) / sigma^2 and the eps error (x_0 - D) / sigma;
in x coordinates the score error is (D - x_0) / (s sigma^2) and the v error (VP) is
(x_0 - D) sqrt(1 + sigma^2) / sigma. The weightings, as lambda on the x_0 error:

* ``"ncsn"``: sigma^2 on the score error (Song & Ermon 2019, eq. 2; NCSNv2's lambda = sigma^2),
  i.e. lambda = 1 / sigma^2. This is also the eps error unweighted (DDPM's L_simple).
* ``"likelihood"``: g(t)^2 on the score error in x (Song et al. 2021b, "Maximum likelihood
  training of score-based diffusion models", Theorem 1), i.e. lambda = g^2 / (s^2 sigma^4)
  = (d sigma^2 / dt) / sigma^4, since g(t)^2 = s(t)^2 d sigma^2 / dt for every process here
  (VE: 2 sigma^2 ln(sigma_max / sigma_min); VP: beta(t); sub-VP: beta(t)(1 - alpha_bar^2)).
* ``"min_snr"``: min-SNR-gamma (Hang et al. 2023, gamma = 5) with SNR = 1 / sigma^2. Their
  weights min(SNR, gamma) / SNR on the eps error, min(SNR, gamma) / (SNR + 1) on the v error and
  min(SNR, gamma) on the x_0 error (:func:`min_snr_weights`) are all lambda = min(SNR, gamma).
* ``"edm"``: lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (EDM Table 1), with
  ln sigma ~ N(P_mean, P_std^2) (P_mean = -1.2, P_std = 1.2).

The losses are means over the non-batch dimensions, per example (B,), with no 1/2 factor.
``metric="pseudo_huber"`` replaces the weighted squared error by the pseudo-Huber distance of the
prediction's own error, sqrt(lambda ||D - x_0||^2 + c^2) - c over all of an example's dims, with
iCT's c = 0.00054 sqrt(dim) (Song & Dhariwal 2023, sec. 3.3; Lee et al. 2024 train rectified flows
with it): nearly the error's norm, so every example pulls with about the same strength instead of
in proportion to its error. Nothing here reads a tensor back to the host.
"""
from __future__ import annotations

from typing import Any, Callable

import math

import torch

__all__ = ["WEIGHTINGS", "METRICS", "MIN_SNR_GAMMA", "EDM_P_MEAN", "EDM_P_STD", "ncsn_weight", "likelihood_weight",
           "min_snr_weight", "edm_weight", "min_snr_weights", "denoising_loss", "lognormal_sigmas", "pseudo_huber",
           "ict_huber_c"]

METRICS = ("l2", "pseudo_huber")

WEIGHTINGS = ("ncsn", "likelihood", "min_snr", "edm")
MIN_SNR_GAMMA = 5.0
EDM_P_MEAN, EDM_P_STD = -1.2, 1.2


def ncsn_weight(sigma: torch.Tensor) -> torch.Tensor:
    """lambda = 1 / sigma^2: sigma^2 on the score error (Song & Ermon 2019, eq. 2)."""
    return sigma**-2


def likelihood_weight(sigma: torch.Tensor, dsigma2_dt: torch.Tensor) -> torch.Tensor:
    """lambda = (d sigma^2 / dt) / sigma^4: g(t)^2 on the score error (Song et al. 2021b, Thm. 1)."""
    return dsigma2_dt / sigma**4


def min_snr_weight(sigma: torch.Tensor, gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
    """lambda = min(SNR, gamma), SNR = 1 / sigma^2: min-SNR-gamma on the x_0 error (Hang et al. 2023)."""
    return torch.clamp(sigma**-2, max=float(gamma))


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (EDM Table 1)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def min_snr_weights(snr: torch.Tensor, gamma: float = MIN_SNR_GAMMA, prediction: str = "eps") -> torch.Tensor:
    """Hang et al. 2023's min-SNR-gamma weights on the *prediction target's* error, as in
    diffusers' training scripts: min(SNR, gamma) / SNR for eps, min(SNR, gamma) / (SNR + 1) for
    v, min(SNR, gamma) for x0. (Times the target's factor they are all :func:`min_snr_weight`.)"""
    clipped = torch.clamp(snr, max=float(gamma))
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1.0)
    if prediction == "x0":
        return clipped
    raise ValueError(f"prediction must be one of ['eps', 'x0', 'v'], got prediction={prediction!r}")


def lognormal_sigmas(batch: int, generator: torch.Generator | None, device: torch.device | str,
                     dtype: torch.dtype, p_mean: float = EDM_P_MEAN, p_std: float = EDM_P_STD) -> torch.Tensor:
    """ln sigma ~ N(p_mean, p_std^2), shape (B,) (EDM Table 1, training)."""
    return torch.exp(p_mean + p_std * torch.randn(batch, generator=generator, device=device, dtype=dtype))


def ict_huber_c(dim: int) -> float:
    """iCT's pseudo-Huber constant for examples of ``dim`` numbers: c = 0.00054 sqrt(dim) (sec. 3.3)."""
    return 0.00054 * math.sqrt(dim)


def pseudo_huber(squared_norm: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(||e||^2 + c^2) - c of per-example squared norms (B,) (Charbonnier 1994; iCT sec. 3.3)."""
    return torch.sqrt(squared_norm + c * c) - c


def denoising_loss(D: Callable[..., torch.Tensor], x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                   weight: torch.Tensor, metric: str = "l2", **cond: Any) -> torch.Tensor:
    """weight * mean_dims (D(x0 + sigma noise, sigma) - x0)^2 per example (B,); ``metric="pseudo_huber"``:
    sqrt(weight * sum_dims (D - x0)^2 + c^2) - c, c = :func:`ict_huber_c` of the example's size.

    ``sigma`` and ``weight`` are (B,) tensors on ``x0``'s device; the error is computed in at
    least float32. ``D`` gets ``x_hat`` in ``x0``'s dtype and the (B,) tensor ``sigma``.
    """
    work = torch.promote_types(x0.dtype, torch.float32)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    x_hat = (x0.to(work) + sigma.to(work).reshape(shape) * noise.to(work)).to(x0.dtype)
    error = ((D(x_hat, sigma, **cond).to(work) - x0.to(work)) ** 2).reshape(x0.shape[0], -1)
    if metric == "pseudo_huber":
        return pseudo_huber(weight.to(work) * error.sum(dim=1), ict_huber_c(error.shape[1]))
    return weight.to(work) * error.mean(dim=1)
