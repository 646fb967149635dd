"""The continuous-time (VP SDE) view of a discrete diffusion (Song et al. 2021, sec. 3-4, app. B).

Time. The continuous time ``tau`` is measured in units of the *original* discrete index, so the
model sees the same kind of ``t`` it was trained on: ``tau = k`` is the training step ``k``
(the paper's step ``k + 1``), and fractional ``tau`` lies between two training steps. Between
the schedule's steps ``log alpha_bar`` is interpolated piecewise-linearly. That is the VP SDE

    dx = -1/2 beta(tau) x dtau + sqrt(beta(tau)) dw,    beta(tau) = -d log alpha_bar / dtau,

with ``beta`` constant on each interval, ``beta = -log(1 - beta_k)`` on ``(k-1, k]``: its
marginals ``q(x_tau | x_0) = N(sqrt(alpha_bar(tau)) x_0, (1 - alpha_bar(tau)) I)`` equal the
discrete process's at every step, exactly. (Song et al.'s ``s in (0, 1]`` is ``(tau + 1) / T``.)
On a respaced schedule the knots are its kept steps, still in original units.

Variables. The samplers integrate in the variables of DDIM (eq. 14) and EDM:
``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` and ``y = x / sqrt(alpha_bar) = x_0 + sigma eps``.
Itô's rule turns the VP SDE into ``dy = sqrt(d sigma^2) dw`` (a VE SDE in ``y``: the same
process, not an approximation), whose probability-flow ODE is ``dy / dsigma = eps_hat(x, tau)``
and whose score is ``grad_y log p = -eps_hat / sigma``. In ``x`` the score is
``-eps_hat / sqrt(1 - alpha_bar)``.

The model is called at ``tau`` as a tensor: ``long`` when every ``tau`` of the call is an
integer (a training step, so embedding-table networks and integer-only oracles work on the
grids made of training steps) and floating otherwise (sinusoidal time embeddings accept any real ``t``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .diffusion import GaussianDiffusion, x0_eps_from_prediction_at

__all__ = ["ContinuousVP", "x0_eps_from_prediction"]

Model = Callable[..., torch.Tensor]


def x0_eps_from_prediction(prediction: str, x: torch.Tensor, alpha_bar: torch.Tensor | float,
                           pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from an eps / x0 / v prediction at a real-valued ``alpha_bar``.

    The same relations as :meth:`GaussianDiffusion.to_x0_eps` (DDPM eq. 4; Salimans & Ho 2022
    for v), written for an ``alpha_bar`` that is not a table entry (a fractional time).
    """
    alpha_bar = torch.as_tensor(alpha_bar, dtype=x.dtype, device=x.device)
    return x0_eps_from_prediction_at(prediction, x, pred, alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt())


class ContinuousVP:
    """A discrete :class:`GaussianDiffusion` seen as a VP SDE in continuous time ``tau``.

    Knots: ``tau_k = schedule.timesteps[k]`` (original units) with ``log alpha_bar_k``; in
    between, linear interpolation of ``log alpha_bar``. Time runs over ``[tau_min, tau_max]``
    (``[0, T-1]`` on a full schedule); below ``tau_min`` the network was never trained, so
    samplers stop there and take one final denoising step to ``sigma = 0``.
    """

    def __init__(self, process: GaussianDiffusion):
        if not isinstance(process, GaussianDiffusion):
            raise ValueError(f"process must be a ddpmkit.GaussianDiffusion, got {type(process).__name__}")
        self.process = process
        self.knots = process.schedule.timesteps.astype(np.float64)
        self.log_alpha_bar_knots = np.log(process.schedule.alpha_bar)

    # ------------------------------------------------------------------ time <-> noise level
    @property
    def tau_min(self) -> float:
        return float(self.knots[0])

    @property
    def tau_max(self) -> float:
        return float(self.knots[-1])

    def _check_tau(self, tau: np.ndarray) -> np.ndarray:
        tau = np.asarray(tau, dtype=np.float64)
        eps = 1e-9 * max(1.0, self.tau_max)
        if np.any(~np.isfinite(tau)) or np.any(tau < self.tau_min - eps) or np.any(tau > self.tau_max + eps):
            raise ValueError(f"tau must lie in [{self.tau_min:g}, {self.tau_max:g}], got tau in "
                             f"[{np.min(tau):g}, {np.max(tau):g}]")
        return tau

    def log_alpha_bar(self, tau: np.ndarray | float) -> np.ndarray:
        """log alpha_bar(tau), piecewise linear between the knots (float64)."""
        return np.interp(self._check_tau(tau), self.knots, self.log_alpha_bar_knots)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at (integer or fractional) original timesteps ``t``, as a float64 tensor."""
        values = np.exp(self.log_alpha_bar(t.detach().double().cpu().numpy()))
        return torch.from_numpy(values).to(t.device)

    def beta(self, tau: np.ndarray | float) -> np.ndarray:
        """beta(tau) = -d log alpha_bar / dtau: constant on each interval (the left limit)."""
        tau = self._check_tau(tau)
        slopes = -np.diff(self.log_alpha_bar_knots) / np.diff(self.knots) if self.knots.size > 1 else np.zeros(0)
        k = np.clip(np.searchsorted(self.knots, tau, side="left") - 1, 0, max(slopes.size - 1, 0))
        return slopes[k] if slopes.size else np.zeros_like(tau)

    def sigma(self, tau: np.ndarray | float) -> np.ndarray:
        """sigma(tau) = sqrt((1 - alpha_bar) / alpha_bar) = sqrt(exp(-log alpha_bar) - 1)."""
        return np.sqrt(np.expm1(-self.log_alpha_bar(tau)))

    def tau_of_sigma(self, sigma: np.ndarray | float) -> np.ndarray:
        """The inverse of :meth:`sigma` on ``[sigma(tau_min), sigma(tau_max)]``."""
        sigma = np.asarray(sigma, dtype=np.float64)
        minus_log_ab = np.log1p(sigma**2)
        return np.interp(minus_log_ab, -self.log_alpha_bar_knots, self.knots)

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(self.tau_min))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(self.tau_max))

    def alpha_at(self, tau: float) -> float:
        """1 - beta of the schedule step at or after ``tau`` (the alpha_i of Song et al. alg. 5)."""
        k = int(np.clip(np.searchsorted(self.knots, tau - 1e-9, side="left"), 0, self.knots.size - 1))
        return float(self.process.schedule.alphas[k])

    # ------------------------------------------------------------------ the model
    def model_time(self, tau: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``tau`` as the model's ``t`` (B,): long where integral, else ``like``'s float dtype."""
        t = torch.as_tensor(tau, dtype=torch.float64, device=like.device)
        t = t.expand(like.shape[0]) if t.dim() == 0 else t
        if torch.all(t == torch.round(t)):
            return t.round().long()
        return t.to(like.dtype)

    def predict(self, model: Model, x: torch.Tensor, tau: float, cond: Mapping[str, Any] | None = None,
                clip_x0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One network call at time ``tau``: (x0_hat, eps_hat) for x = x_tau.

        Works for every prediction type; a learned-range model contributes only the first half
        of its channels (the mean); ``clip_x0`` clips x0_hat to [-1, 1] and re-derives eps_hat.
        """
        out = model(x, self.model_time(tau, x), **dict(cond or {}))
        expected = self.process.output_shape(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model output must have shape {expected}, got {got}")
        pred, _ = self.process.split_output(out)
        alpha_bar = float(np.exp(self.log_alpha_bar(tau)))
        x0, eps = x0_eps_from_prediction(self.process.prediction, x, alpha_bar, pred)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1.0 - alpha_bar)
        return x0, eps

    def score(self, model: Model, x: torch.Tensor, tau: float, cond: Mapping[str, Any] | None = None) -> torch.Tensor:
        """grad_x log p_tau(x) = -eps_hat / sqrt(1 - alpha_bar(tau)) (Song et al. 2021, eq. 7 / app. B)."""
        _, eps = self.predict(model, x, tau, cond)
        return -eps / math.sqrt(-math.expm1(float(self.log_alpha_bar(tau))))

    def eps_in_y(self, model: Model, y: torch.Tensor, sigma: float, tau: float,
                 cond: Mapping[str, Any] | None = None, clip_x0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) at y = x / sqrt(alpha_bar): the PF-ODE's dy/dsigma is eps_hat."""
        return self.predict(model, y / math.sqrt(1.0 + sigma * sigma), tau, cond, clip_x0)
