"""EDM (Karras et al. 2022): s = 1, sigma(t) = t, and the preconditioned denoiser.

The network F is apart from the wrapper (EDM eq. 7 and Table 1):

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)),
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),   c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2),            c_noise = ln(sigma) / 4.

Training: ln sigma ~ N(P_mean, P_std^2) (-1.2, 1.2), loss weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2;
sampling from N(0, sigma_max^2 I) at sigma_max = 80 down to sigma_min = 0.002.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .continuous import SigmaIsTime, check_number
from .score_losses import EDM_P_MEAN, EDM_P_STD, lognormal_sigmas

__all__ = ["EDM"]


class EDM(SigmaIsTime):
    """The EDM process and preconditioning (Karras et al. 2022, Table 1). ``prediction`` is
    ``"edm"``: the network outputs F above. Time t is sigma itself, on [sigma_min, sigma_max].

    Args:
        sigma_data: the data's standard deviation (0.5 for images in [-1, 1]).
        sigma_min, sigma_max: the sampling range (the network's training range is the lognormal).
        p_mean, p_std: the training distribution of ln sigma.
    """

    predictions = ("edm",)
    weightings = ("edm", "ncsn", "min_snr")
    default_weighting = "edm"
    default_grid = "karras"

    def __init__(self, sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 p_mean: float = EDM_P_MEAN, p_std: float = EDM_P_STD, prediction: str = "edm"):
        self.sigma_data = check_number("sigma_data", sigma_data)
        self.t_min = check_number("sigma_min", sigma_min)
        self.t_max = check_number("sigma_max", sigma_max)
        if not self.t_min < self.t_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
        self.p_mean = check_number("p_mean", p_mean, positive=False)
        self.p_std = check_number("p_std", p_std)
        self.prediction = self._check_prediction(prediction)

    def preconditioning(self, sigma: float | torch.Tensor) -> tuple[Any, Any, Any, Any]:
        """(c_in, c_skip, c_out, c_noise) of EDM Table 1."""
        sd2 = self.sigma_data**2
        if isinstance(sigma, torch.Tensor):
            root = torch.sqrt(sigma * sigma + sd2)
            c_noise = 0.25 * torch.log(sigma)
        else:
            root = math.sqrt(sigma * sigma + sd2)
            c_noise = 0.25 * math.log(sigma)
        return 1.0 / root, sd2 / (sigma * sigma + sd2), sigma * self.sigma_data / root, c_noise

    def training_sigmas(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                        dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, sigma) with t = sigma and ln sigma ~ N(p_mean, p_std^2) (EDM Table 1)."""
        sigma = lognormal_sigmas(batch, generator, device, dtype, self.p_mean, self.p_std)
        return sigma, sigma

    def __repr__(self) -> str:
        return (f"EDM(sigma_data={self.sigma_data:g}, sigma_min={self.t_min:g}, sigma_max={self.t_max:g}, "
                f"p_mean={self.p_mean:g}, p_std={self.p_std:g})")
