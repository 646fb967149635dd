"""The variance-exploding process (SMLD / NCSN) and NCSNv2's rules for its noise levels.

VE SDE (Song et al. 2021, eq. 9 and 30): ``x = x_0 + sigma(t) eps`` (s = 1) with
``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` on t in [0, 1], so
``d sigma^2 / dt = g(t)^2 = 2 sigma(t)^2 ln(sigma_max / sigma_min)``, and prior N(0, sigma_max^2 I).

Predictions: ``"score"`` (the network outputs grad_x log p_t; D = x + sigma^2 F), ``"eps"``
(D = x - sigma F), ``"x0"`` (D = F). NCSNv2's technique 3 (Song & Ermon 2020, sec. 3.3):
``score_scaling=True`` takes the score as F(x, t) / sigma, so D = x + sigma F.

The network's time is ``time_scale * t`` with t in [0, 1] (``time_scale = 1``: t itself),
float32. ddpmkit's sinusoidal time embeddings resolve times on the scale of training steps,
so with them ``time_scale = 999`` (score_sde's convention for its VP models) is the better choice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .process import Process, check_number

__all__ = ["VE", "NCSNSigmas", "ncsn_sigmas", "max_pairwise_distance", "ncsn_gamma"]


class VE(Process):
    """The VE SDE of Song et al. 2021 (eq. 9, 30) on the noise-level contract.

    Args:
        sigma_min, sigma_max: the noise levels at t = 0 and t = 1 (score_sde's CIFAR-10: 0.01, 50).
        prediction: ``"score"``, ``"eps"`` or ``"x0"``.
        score_scaling: NCSNv2 technique 3, score = F / sigma (``"score"`` only).
        time_scale: the network sees ``time_scale * t`` (see the module notes).
    """

    predictions = ("score", "eps", "x0")
    default_grid = "logsnr"   # geometric levels, as NCSN / score_sde's VE
    t_min = 0.0
    t_max = 1.0

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, prediction: str = "score",
                 score_scaling: bool = False, time_scale: float = 1.0):
        self._sigma_min = check_number("sigma_min", sigma_min)
        self._sigma_max = check_number("sigma_max", sigma_max)
        if not self._sigma_min < self._sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
        self.prediction = self._check_prediction(prediction)
        if not isinstance(score_scaling, bool):
            raise ValueError(f"score_scaling must be True or False, got score_scaling={score_scaling!r}")
        if score_scaling and prediction != "score":
            raise ValueError(f"score_scaling divides a score output by sigma: it needs prediction='score', "
                             f"got prediction={prediction!r}")
        self.score_scaling = score_scaling
        self.time_scale = check_number("time_scale", time_scale)
        self.log_ratio = math.log(self._sigma_max / self._sigma_min)

    @property
    def sigma_min(self) -> float:
        return self._sigma_min

    @property
    def sigma_max(self) -> float:
        return self._sigma_max

    @property
    def prior_std(self) -> float:
        return self._sigma_max

    def _sigma(self, t: Any, xp: Any) -> Any:
        return self._sigma_min * xp.exp(self.log_ratio * t)

    def _scale(self, t: Any, xp: Any) -> Any:
        return xp.ones_like(t)

    def _t_of_sigma(self, sigma: Any, xp: Any) -> Any:
        return xp.log(sigma / self._sigma_min) / self.log_ratio

    def _dsigma2_dt(self, t: Any, xp: Any) -> Any:
        return 2.0 * self.log_ratio * self._sigma(t, xp) ** 2

    def preconditioning(self, sigma: float | torch.Tensor) -> tuple[Any, Any, Any, Any]:
        """c_in = 1; score: c_skip = 1, c_out = sigma^2 (sigma with score_scaling); eps: 1, -sigma;
        x0: 0, 1; c_noise = time_scale * t(sigma)."""
        if isinstance(sigma, torch.Tensor):
            c_noise = self.time_scale * self._t_of_sigma(sigma, torch)
        else:
            c_noise = self.time_scale * math.log(sigma / self._sigma_min) / self.log_ratio
        if self.prediction == "score":
            return 1.0, 1.0, (sigma if self.score_scaling else sigma * sigma), c_noise
        if self.prediction == "eps":
            return 1.0, 1.0, -sigma, c_noise
        return 1.0, 0.0, 1.0, c_noise

    @classmethod
    def from_data(cls, x_train: Any, sigma_min: float = 0.01, prediction: str = "score",
                  score_scaling: bool = True, time_scale: float = 1.0, verbose: bool = True) -> "VE":
        """A VE process with sigma_max from the data by NCSNv2's technique 1 (see :func:`ncsn_sigmas`),
        printing the choice when ``verbose``. The chosen :class:`NCSNSigmas` is kept as ``.ncsn``."""
        choice = ncsn_sigmas(x_train, sigma_min)
        if verbose:
            print(choice.description)
        process = cls(sigma_min, choice.sigma_max, prediction, score_scaling, time_scale)
        process.ncsn = choice
        return process

    def __repr__(self) -> str:
        return (f"VE(sigma_min={self._sigma_min:g}, sigma_max={self._sigma_max:g}, prediction={self.prediction!r}, "
                f"score_scaling={self.score_scaling}, time_scale={self.time_scale:g})")


# ---------------------------------------------------------------------- NCSNv2 techniques 1-2
@dataclass(frozen=True)
class NCSNSigmas:
    """NCSNv2's noise levels for a training set (Song & Ermon 2020, techniques 1 and 2).

    ``gamma`` (the ratio sigma_{i-1} / sigma_i) and ``levels`` (L) are None where the
    technique-2 equation has no root (D <= 4: sqrt(2 D) <= 3)."""

    sigma_max: float
    sigma_min: float
    gamma: float | None
    levels: int | None
    dim: int
    n_examples: int

    @property
    def description(self) -> str:
        head = (f"NCSNv2 noise levels: sigma_max = {self.sigma_max:.4g} (largest pairwise distance of "
                f"{self.n_examples} training examples, technique 1), sigma_min = {self.sigma_min:g}")
        if self.gamma is None:
            return head + f"; no geometric ratio: technique 2 has no root for D = {self.dim} (needs D >= 5)"
        return head + (f"; ratio gamma = {self.gamma:.6g} for D = {self.dim} (technique 2), "
                       f"so L = {self.levels} levels")

    def __str__(self) -> str:
        return self.description

    def sigmas(self) -> np.ndarray:
        """The L geometric levels from sigma_max down to sigma_min (float64)."""
        if self.levels is None:
            raise ValueError(f"no geometric levels for D = {self.dim}: technique 2 has no root")
        return np.geomspace(self.sigma_max, self.sigma_min, self.levels)


def max_pairwise_distance(x: torch.Tensor, chunk: int = 1024) -> float:
    """The largest Euclidean distance between two rows of ``x`` (N, ...), exact, in float64
    chunks of ``chunk`` rows (O(N^2 D) work)."""
    flat = x.reshape(x.shape[0], -1).to("cpu", torch.float64)
    best = 0.0
    for i in range(0, flat.shape[0], chunk):
        d = torch.cdist(flat[i:i + chunk], flat[i:])
        best = max(best, float(d.max()))
    return best


def ncsn_gamma(dim: int) -> float | None:
    """The ratio gamma > 1 with Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma)
    = 1/2 (NCSNv2 technique 2), by Brent's method; None when there is no root (D <= 4)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    root = math.sqrt(2.0 * dim)

    def f(gamma: float) -> float:
        return float(norm.cdf(root * (gamma - 1) + 3 * gamma) - norm.cdf(root * (gamma - 1) - 3 * gamma) - 0.5)

    if root <= 3.0:
        return None
    hi = 2.0
    while f(hi) > 0:
        hi = 1.0 + 2.0 * (hi - 1.0)
        if hi > 1e12:
            return None
    return float(brentq(f, 1.0, hi, xtol=1e-15, rtol=1e-15))


def ncsn_sigmas(x_train: Any, sigma_min: float = 0.01) -> NCSNSigmas:
    """NCSNv2's noise levels for ``x_train`` (N, ...): sigma_max = the largest pairwise distance
    (technique 1), gamma from technique 2 for D = prod(shape[1:]), L = ceil(ln(sigma_max / sigma_min)
    / ln gamma) + 1 levels (so consecutive ratios are at most gamma); sigma_min as given."""
    x = torch.as_tensor(np.asarray(x_train) if not isinstance(x_train, torch.Tensor) else x_train)
    if x.dim() < 2 or x.shape[0] < 2 or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"x_train must be an array of shape (N >= 2, ...), got shape {tuple(x.shape)}")
    x = x.to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("x_train contains NaN or infinite values")
    sigma_min = check_number("sigma_min", sigma_min)
    sigma_max = max_pairwise_distance(x)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_min must be < the largest pairwise distance {sigma_max:g}, got sigma_min={sigma_min:g}")
    dim = int(np.prod(x.shape[1:]))
    gamma = ncsn_gamma(dim)
    levels = None if gamma is None else int(math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma))) + 1
    return NCSNSigmas(sigma_max, sigma_min, gamma, levels, dim, int(x.shape[0]))
