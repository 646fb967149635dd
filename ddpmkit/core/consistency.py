"""Consistency models (Song et al. 2023) as a process on the noise-level contract.

A consistency function maps any point of a probability-flow ODE trajectory to its start,
``f(x_hat, sigma) = x_hat(sigma_min)``. It is parameterised so that the boundary condition
``f(x, sigma_min) = x`` holds exactly (Song et al. 2023, eq. 5 and app. C):

    f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)),
    c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2),
    c_out  = sigma_data (sigma - sigma_min) / sqrt(sigma_data^2 + sigma^2),

so c_skip(sigma_min) = 1 and c_out(sigma_min) = 0. The function has the denoiser's signature and
meaning (an x_0 estimate from ``x_hat = x_0 + sigma eps``), so :class:`Consistency` is one more
process: ``process.denoiser(model)`` is f, one Euler step from sigma_max to 0 is the one-step
sample f(x_T, sigma_max), and :func:`ddpmkit.sampling.consistency.consistency` is the multistep
sampler (Song et al. 2023, Alg. 1). Time is sigma itself (s = 1, t = sigma, EDM's convention).

What the network sees (``prediction``):

* ``"edm"``: EDM's c_in = 1 / sqrt(sigma^2 + sigma_data^2) and c_noise = ln(sigma) / 4 (iCT, ECT);
* ``"v"``: the discrete chain's v-prediction network (``schedule``): c_in = 1 / sqrt(1 + sigma^2),
  c_noise = the chain's (fractional) step t(sigma), and F = -v. With sigma_data = 1 the
  coefficients are those of the chain's own denoiser, D = x / (1 + sigma^2) - sigma / sqrt(1 +
  sigma^2) v, up to the shift by sigma_min: a trained v-prediction network *is* a consistency
  model's initialisation (ECT, Geng et al. 2024), f - D = O(sigma_min).

For Gaussian data N(mu, s^2) the probability-flow ODE is affine and the exact consistency function
is known: :func:`gaussian_consistency` (the tests' oracle).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .continuous import SigmaIsTime, check_number
from .schedules import Schedule
from .diffusion import GaussianDiffusion

__all__ = ["Consistency", "consistency_coefficients", "gaussian_consistency", "gaussian_denoiser", "ICT_P_MEAN",
           "ICT_P_STD"]

ICT_P_MEAN, ICT_P_STD = -1.1, 2.0
"""iCT's lognormal noise draw, ln sigma ~ N(-1.1, 2.0^2) (Song & Dhariwal 2023, sec. 3.5)."""


def consistency_coefficients(sigma: Any, sigma_min: float, sigma_data: float) -> tuple[Any, Any]:
    """(c_skip, c_out) of Song et al. 2023 (app. C) at ``sigma`` (float or tensor): exactly (1, 0)
    at sigma_min."""
    shifted = sigma - sigma_min
    sd2 = sigma_data * sigma_data
    root = torch.sqrt(sigma * sigma + sd2) if isinstance(sigma, torch.Tensor) else math.sqrt(sigma * sigma + sd2)
    return sd2 / (shifted * shifted + sd2), sigma_data * shifted / root


def gaussian_denoiser(x_hat: torch.Tensor, sigma: Any, mean: float, std: float) -> torch.Tensor:
    """E[x_0 | x_hat] for x_0 ~ N(mean, std^2) per dimension: mean + std^2 / (std^2 + sigma^2) (x_hat - mean)."""
    sigma = sigma.reshape((-1,) + (1,) * (x_hat.dim() - 1)) if isinstance(sigma, torch.Tensor) else sigma
    return mean + std**2 / (std**2 + sigma * sigma) * (x_hat - mean)


def gaussian_consistency(x_hat: torch.Tensor, sigma: Any, mean: float, std: float, sigma_min: float) -> torch.Tensor:
    """The exact consistency function of N(mean, std^2) data: the probability-flow ODE carries the
    marginal N(mean, std^2 + sigma^2) affinely, so f = mean + sqrt(std^2 + sigma_min^2) /
    sqrt(std^2 + sigma^2) (x_hat - mean)."""
    sigma = sigma.reshape((-1,) + (1,) * (x_hat.dim() - 1)) if isinstance(sigma, torch.Tensor) else sigma
    ratio = math.sqrt(std**2 + sigma_min**2) / (std**2 + sigma * sigma) ** 0.5
    return mean + ratio * (x_hat - mean)


class Consistency(SigmaIsTime):
    """The consistency-model process: t = sigma on [sigma_min, sigma_max], s = 1, prior
    N(0, sigma_max^2 I), and the preconditioning above. Trained by
    :mod:`ddpmkit.training.consistency` (``ddpmkit distill`` or the ``digits-ct`` preset), never by
    denoising score matching.

    Args:
        sigma_data: the data's scale in c_skip / c_out (1 for ``prediction="v"``: the chain's own).
        sigma_min: the boundary epsilon, where f(x, sigma_min) = x exactly.
        sigma_max: the top level (the one-step sampler's start).
        prediction: ``"edm"`` or ``"v"`` (the network's input and time, see the module docstring).
        schedule: the discrete chain's schedule, for ``prediction="v"`` only.
        p_mean, p_std: the training draw of ln sigma (iCT, Song & Dhariwal 2023: -1.1, 2.0).
    """

    predictions = ("edm", "v")
    weightings = ()
    default_weighting = "consistency"
    default_grid = "karras"

    consistency_function = True   # denoiser(model) is f, with f(x, sigma_min) = x exactly

    def __init__(self, sigma_data: float | None = None, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 prediction: str = "edm", schedule: Schedule | None = None, p_mean: float = ICT_P_MEAN,
                 p_std: float = ICT_P_STD):
        self.p_mean = check_number("p_mean", p_mean, positive=False)
        self.p_std = check_number("p_std", p_std)
        self.prediction = self._check_prediction(prediction)
        self.sigma_data = check_number("sigma_data", 1.0 if sigma_data is None and prediction == "v"
                                       else 0.5 if sigma_data is None else sigma_data)
        self.t_min = check_number("sigma_min", sigma_min)
        self.t_max = check_number("sigma_max", sigma_max)
        if not self.t_min < self.t_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
        self.chain: GaussianDiffusion | None = None
        if prediction == "v":
            if not isinstance(schedule, Schedule):
                raise ValueError(f"schedule must be a ddpmkit.Schedule for prediction='v', got {type(schedule).__name__}")
            self.chain = GaussianDiffusion(schedule, "v")
            lo, hi = self.chain.sigma_min, self.chain.sigma_max
            if self.t_min < lo * (1 - 1e-9) or self.t_max > hi * (1 + 1e-9):
                raise ValueError(f"sigma_min, sigma_max must lie in the chain's range [{lo:.4g}, {hi:.4g}], got "
                                 f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
        elif schedule is not None:
            raise ValueError("schedule is for prediction='v' only, got a schedule with prediction='edm'")

    def preconditioning(self, sigma: float | torch.Tensor) -> tuple[Any, Any, Any, Any]:
        """(c_in, c_skip, c_out, c_noise): Song et al.'s c_skip / c_out, the network's c_in / c_noise."""
        c_skip, c_out = consistency_coefficients(sigma, self.t_min, self.sigma_data)
        tensor = isinstance(sigma, torch.Tensor)
        if self.chain is None:
            sd2 = self.sigma_data**2
            c_in = torch.rsqrt(sigma * sigma + sd2) if tensor else 1.0 / math.sqrt(sigma * sigma + sd2)
            c_noise = 0.25 * (torch.log(sigma) if tensor else math.log(sigma))
            return c_in, c_skip, c_out, c_noise
        c_in = torch.rsqrt(1.0 + sigma * sigma) if tensor else 1.0 / math.sqrt(1.0 + sigma * sigma)
        c_noise = self.chain.t_of_sigma_on(sigma) if tensor else float(self.chain.t_of_sigma(sigma))
        return c_in, c_skip, -c_out, c_noise

    def loss_weight(self, weighting: str, sigma: torch.Tensor, t: torch.Tensor, snr_gamma: float = 5.0) -> torch.Tensor:
        raise ValueError("process='consistency' is trained by a consistency objective (`ddpmkit distill` or the "
                         "digits-ct preset), not by denoising score matching")

    def loss_terms(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return {"loss": self.loss_weight("", torch.zeros(()), torch.zeros(()))}

    def __repr__(self) -> str:
        chain = "" if self.chain is None else f", schedule={self.chain.schedule!r}"
        return (f"Consistency(prediction={self.prediction!r}, sigma_data={self.sigma_data:g}, "
                f"sigma_min={self.t_min:g}, sigma_max={self.t_max:g}{chain})")

