"""The continuous VP and sub-VP SDEs (Song et al. 2021, eq. 11-12 and 32-33), on the noise-level contract.

Both have linear beta(t) = beta_min + (beta_max - beta_min) t on t in [t_min, 1] (t_min = 1e-5,
score_sde's eps) and ``alpha_bar(t) = exp(-c(t))`` with ``c(t) = beta_min t + (beta_max - beta_min) t^2 / 2``.

* VP (eq. 11, 32-33): x_t ~ N(sqrt(alpha_bar) x_0, (1 - alpha_bar) I), so
  s = sqrt(alpha_bar) = exp(-c/2), sigma = sqrt(1 / alpha_bar - 1) = sqrt(expm1(c)),
  d sigma^2 / dt = beta(t) / alpha_bar (= g^2 / s^2 with g^2 = beta).
* sub-VP (eq. 12, 33): mean sqrt(alpha_bar) x_0, std 1 - alpha_bar, so s = exp(-c/2) and
  sigma = (1 - alpha_bar) / sqrt(alpha_bar) = 2 sinh(c / 2), d sigma^2 / dt = 2 beta(t) sinh(c)
  (= g^2 / s^2 with g^2 = beta (1 - alpha_bar^2)).

In x_hat = x / s both are ``dx_hat = sqrt(d sigma^2 / dt) dw``, so their probability-flow ODE is
the generic ``dx_hat / dsigma = (x_hat - D) / sigma`` and every sampler on a sigma grid applies.
The inverses t(sigma) are closed-form: c = log1p(sigma^2) (VP) or 2 asinh(sigma / 2) (sub-VP),
then t = 2 c / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) c)), the stable root of the quadratic.

The network sees x = s x_hat and the time ``time_scale * t`` (default 999: score_sde's
``labels = t * 999`` for its continuous VP / sub-VP models, on the scale of training steps that
ddpmkit's sinusoidal embeddings expect), float32.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .process import Process, check_number

__all__ = ["VP", "SubVP"]


class _LinearBeta(Process):
    """Shared by VP and sub-VP: the linear beta schedule, c(t) and its inverse."""

    t_max = 1.0
    prior_std = 1.0
    default_grid = "uniform"   # uniform in t, as score_sde
    _name = ""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, prediction: str = "eps",
                 t_min: float = 1e-5, time_scale: float = 999.0):
        self.beta_min = check_number("beta_min", beta_min, positive=False)
        self.beta_max = check_number("beta_max", beta_max)
        if self.beta_min < 0 or not self.beta_min < self.beta_max:
            raise ValueError(f"beta_min must be >= 0 and < beta_max, got beta_min={beta_min!r}, beta_max={beta_max!r}")
        self.t_min = check_number("t_min", t_min)
        if not self.t_min < 1.0:
            raise ValueError(f"t_min must lie in (0, 1), got t_min={t_min!r}")
        self.prediction = self._check_prediction(prediction)
        self.time_scale = check_number("time_scale", time_scale)

    def beta(self, t: Any) -> Any:
        """beta(t) = beta_min + (beta_max - beta_min) t (host float64, or a tensor's device)."""
        t = t if isinstance(t, torch.Tensor) else self._check_t(t)
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def _c(self, t: Any) -> Any:
        """c(t) = -log alpha_bar(t) = int_0^t beta."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def _t_of_c(self, c: Any, xp: Any) -> Any:
        delta = self.beta_max - self.beta_min
        return 2.0 * c / (self.beta_min + xp.sqrt(self.beta_min**2 + 2.0 * delta * c))

    def _scale(self, t: Any, xp: Any) -> Any:
        return xp.exp(-0.5 * self._c(t))

    def _c_of_sigma(self, sigma: Any, xp: Any) -> Any:
        raise NotImplementedError

    def _t_of_sigma(self, sigma: Any, xp: Any) -> Any:
        return self._t_of_c(self._c_of_sigma(sigma, xp), xp)

    def _host_time(self, sigma: float) -> float:
        return float(self._t_of_sigma(np.float64(sigma), np))

    def __repr__(self) -> str:
        return (f"{self._name}(beta_min={self.beta_min:g}, beta_max={self.beta_max:g}, prediction={self.prediction!r}, "
                f"t_min={self.t_min:g}, time_scale={self.time_scale:g})")


class VP(_LinearBeta):
    """The continuous VP SDE (Song et al. 2021, eq. 11, 32-33). Predictions ``"eps"``, ``"x0"``, ``"v"``.

    With a = 1 / sqrt(1 + sigma^2): c_in = a; eps: D = x_hat - sigma F; x0: D = F;
    v (Salimans & Ho 2022): D = a^2 x_hat - sigma a F.
    """

    predictions = ("eps", "x0", "v")
    _name = "VP"

    def _sigma(self, t: Any, xp: Any) -> Any:
        return xp.sqrt(xp.expm1(self._c(t)))

    def _c_of_sigma(self, sigma: Any, xp: Any) -> Any:
        return xp.log1p(sigma * sigma)

    def _dsigma2_dt(self, t: Any, xp: Any) -> Any:
        return (self.beta_min + (self.beta_max - self.beta_min) * t) * xp.exp(self._c(t))

    def preconditioning(self, sigma: float | torch.Tensor) -> tuple[Any, Any, Any, Any]:
        if isinstance(sigma, torch.Tensor):
            a = torch.rsqrt(1.0 + sigma * sigma)
            c_noise = self.time_scale * self._t_of_sigma(sigma, torch)
        else:
            a = 1.0 / math.sqrt(1.0 + sigma * sigma)
            c_noise = self.time_scale * self._host_time(sigma)
        if self.prediction == "eps":
            return a, 1.0, -sigma, c_noise
        if self.prediction == "x0":
            return a, 0.0, 1.0, c_noise
        return a, a * a, -sigma * a, c_noise


class SubVP(_LinearBeta):
    """The sub-VP SDE (Song et al. 2021, eq. 12, 33). Predictions ``"eps"``, ``"x0"``.

    The network sees x = s x_hat with s = sqrt(alpha_bar) = 2 / (sigma + sqrt(sigma^2 + 4));
    eps (the noise of x = s x_0 + (1 - alpha_bar) eps): D = x_hat - sigma F; x0: D = F.
    """

    predictions = ("eps", "x0")
    _name = "SubVP"

    def _sigma(self, t: Any, xp: Any) -> Any:
        return 2.0 * xp.sinh(0.5 * self._c(t))

    def _c_of_sigma(self, sigma: Any, xp: Any) -> Any:
        return 2.0 * xp.arcsinh(0.5 * sigma)

    def _dsigma2_dt(self, t: Any, xp: Any) -> Any:
        return 2.0 * (self.beta_min + (self.beta_max - self.beta_min) * t) * xp.sinh(self._c(t))

    def preconditioning(self, sigma: float | torch.Tensor) -> tuple[Any, Any, Any, Any]:
        if isinstance(sigma, torch.Tensor):
            c_in = 2.0 / (sigma + torch.sqrt(sigma * sigma + 4.0))
            c_noise = self.time_scale * self._t_of_sigma(sigma, torch)
        else:
            c_in = 2.0 / (sigma + math.sqrt(sigma * sigma + 4.0))
            c_noise = self.time_scale * self._host_time(sigma)
        if self.prediction == "eps":
            return c_in, 1.0, -sigma, c_noise
        return c_in, 0.0, 1.0, c_noise
