"""The discrete chain's time axis on the noise-level contract: the part of the protocol that the
discrete chain (:class:`ddpmkit.core.diffusion.GaussianDiffusion`) shares with every other process.

Time. The continuous time ``t`` is measured in units of the *original* discrete index, so the
model sees the same kind of ``t`` it was trained on: ``t = k`` is the training step ``k``
(the paper's step ``k + 1``), and fractional ``t`` lies between two training steps. Between
the schedule's steps ``log alpha_bar`` is interpolated piecewise-linearly. That is the VP SDE
(Song et al. 2021, sec. 3-4, app. B)

    dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,    beta(t) = -d log alpha_bar / dt,

with ``beta`` constant on each interval, ``beta = -log(1 - beta_k)`` on ``(k-1, k]``: its
marginals ``q(x_t | x_0) = N(sqrt(alpha_bar(t)) x_0, (1 - alpha_bar(t)) I)`` equal the
discrete process's at every step, exactly. (Song et al.'s ``s in (0, 1]`` is ``(t + 1) / T``.)
On a respaced schedule the knots are its kept steps, still in original units.

The noise-level contract (Karras et al. 2022, "EDM", sec. 2 and Table 1): ``sigma =
sqrt((1 - alpha_bar) / alpha_bar)`` and ``s = sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2)``; the
preconditioning is EDM's ``iDDPMPrecond`` (c_in = 1 / sqrt(1 + sigma^2), eps: c_skip = 1,
c_out = -sigma; x0 and v likewise affine), with c_noise the (fractional) time of sigma. Itô's
rule turns the VP SDE into ``dx_hat = sqrt(d sigma^2) dw`` (a VE SDE in ``x_hat``: the same
process, not an approximation), whose probability-flow ODE is ``dx_hat / dsigma = (x_hat - D) /
sigma`` (DDIM eq. 14). Every sampler of :mod:`ddpmkit.sampling` integrates in these variables.

Host and device. A denoiser called with a Python float ``sigma`` (as the samplers do, from their
host grid) computes the network's time and the coefficients on the host in float64: the model
gets a ``long`` tensor where the time is a training step, float32 between steps, and nothing is
read back from the device. Called with a tensor ``sigma`` (per example, e.g. from k-diffusion),
the time is interpolated on the device in float32.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .predictions import time_dtype, x0_eps_from_prediction
from .process import Process

__all__ = ["DiscreteTimeProcess"]

Model = Callable[..., torch.Tensor]


def _interp_on(u: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (xs, ys) at u, clamped at the ends, on u's device."""
    if xs.numel() == 1:
        return ys.expand_as(u).clone()
    idx = torch.searchsorted(xs, u.contiguous()).clamp(1, xs.numel() - 1)
    x_lo, x_hi, y_lo, y_hi = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
    w = ((u - x_lo) / (x_hi - x_lo)).clamp(0.0, 1.0)
    return y_lo + w * (y_hi - y_lo)


class DiscreteTimeProcess(Process):
    """A process given by ``log alpha_bar`` at knots (its training steps), interpolated in between.

    Subclasses set ``self.prediction`` and call :meth:`_set_knots` with the steps (original units)
    and their ``alpha_bar``. Time runs over ``[t_min, t_max]`` (``[0, T-1]`` on a full schedule);
    below ``t_min`` the network was never trained, so samplers stop there and take one final
    denoising step to ``sigma = 0``.
    """

    predictions = ("eps", "x0", "v")
    weightings = ()   # the discrete chain's objectives are its own (simple / vlb / hybrid)
    default_weighting = ""
    default_grid = "linspace"
    prior_std = 1.0
    """The prior N(0, I) of x_T (the marginal at the last step, up to sqrt(alpha_bar_T) x_0)."""

    def _set_knots(self, steps: np.ndarray, alpha_bar: np.ndarray, alphas: np.ndarray) -> None:
        """The knots (original-unit steps), their alpha_bar and the chain's 1 - beta per step."""
        self.knots = np.asarray(steps, dtype=np.float64)
        self.log_alpha_bar_knots = np.log(np.asarray(alpha_bar, dtype=np.float64))
        self.step_alphas = np.asarray(alphas, dtype=np.float64)
        self._tables: dict[str, tuple[torch.Tensor, ...]] = {}

    # ------------------------------------------------------------------ time <-> noise level (host, float64)
    @property
    def t_min(self) -> float:
        return float(self.knots[0])

    @property
    def t_max(self) -> float:
        return float(self.knots[-1])

    def _check_t(self, t: Any) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        tol = 1e-9 * max(1.0, self.t_max)
        if np.any(~np.isfinite(t)) or np.any(t < self.t_min - tol) or np.any(t > self.t_max + tol):
            raise ValueError(f"t must lie in [{self.t_min:g}, {self.t_max:g}], got t in "
                             f"[{np.min(t):g}, {np.max(t):g}]")
        return t

    def _log_alpha_bar(self, t: Any, xp: Any) -> Any:
        if xp is np:
            return np.interp(t, self.knots, self.log_alpha_bar_knots)
        u_knots, t_knots = self._device_tables(t.device, t.dtype)
        return -_interp_on(t, t_knots, u_knots)

    def _sigma(self, t: Any, xp: Any) -> Any:   # sqrt((1 - alpha_bar) / alpha_bar)
        return xp.sqrt(xp.expm1(-self._log_alpha_bar(t, xp)))

    def _scale(self, t: Any, xp: Any) -> Any:   # sqrt(alpha_bar)
        return xp.exp(0.5 * self._log_alpha_bar(t, xp))

    def _t_of_sigma(self, sigma: Any, xp: Any) -> Any:   # clamped to [t_min, t_max]
        if xp is np:
            return np.interp(np.log1p(sigma**2), -self.log_alpha_bar_knots, self.knots)
        u_knots, t_knots = self._device_tables(sigma.device, sigma.dtype)
        return _interp_on(torch.log1p(sigma**2), u_knots, t_knots)

    def _slopes(self) -> np.ndarray:
        """beta on each interval between knots: -d log alpha_bar / dt (float64)."""
        if self.knots.size < 2:
            return np.zeros(1)
        return -np.diff(self.log_alpha_bar_knots) / np.diff(self.knots)

    def _dsigma2_dt(self, t: Any, xp: Any) -> Any:   # d(1/alpha_bar - 1)/dt = beta(t) / alpha_bar(t)
        slopes = self._slopes()
        if xp is np:
            beta = slopes[np.clip(np.searchsorted(self.knots, t, side="left") - 1, 0, slopes.size - 1)]
        else:
            key = f"slopes/{t.device}/{t.dtype}"
            if key not in self._tables:
                self._tables[key] = (torch.from_numpy(self.knots).to(t.dtype).to(t.device),
                                     torch.from_numpy(slopes).to(t.dtype).to(t.device))
            knots, table = self._tables[key]
            beta = table[(torch.searchsorted(knots, t.contiguous(), side="left") - 1).clamp(0, table.numel() - 1)]
        return beta * xp.exp(-self._log_alpha_bar(t, xp))

    def log_alpha_bar(self, t: Any) -> np.ndarray:
        """log alpha_bar(t), piecewise linear between the knots (float64)."""
        return self._log_alpha_bar(self._check_t(t), np)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at (integer or fractional) original timesteps ``t``, as a float64 CPU tensor.

        A host-side helper (it reads ``t``); on a device use :meth:`alpha_bar_on`.
        """
        return torch.from_numpy(np.exp(self.log_alpha_bar(t.detach().double().cpu().numpy())))

    def beta(self, t: Any) -> np.ndarray:
        """beta(t) = -d log alpha_bar / dt: constant on each interval (the left limit)."""
        t = self._check_t(t)
        if self.knots.size < 2:
            return np.zeros_like(t)
        slopes = self._slopes()
        return slopes[np.clip(np.searchsorted(self.knots, t, side="left") - 1, 0, slopes.size - 1)]

    def alpha_at(self, t: float) -> float:
        """1 - beta of the schedule step at or after ``t`` (the alpha_i of Song et al. alg. 5)."""
        k = int(np.clip(np.searchsorted(self.knots, t - 1e-9, side="left"), 0, self.knots.size - 1))
        return float(self.step_alphas[k])

    def corrector_alphas(self, sigmas: Any) -> list[float]:
        """1 - beta of the schedule step at or after each level's time (Song et al. 2021, alg. 5)."""
        return [self.alpha_at(float(t)) for t in self.t_of_sigma(sigmas)]

    # ------------------------------------------------------------------ the same maps on a device
    def _device_tables(self, device: torch.device, dtype: torch.dtype = torch.float32
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(-log alpha_bar knots, time knots) on ``device`` (cast on the host once, cached)."""
        key = f"{device}/{dtype}"
        if key not in self._tables:
            u = torch.from_numpy(-self.log_alpha_bar_knots).to(dtype).to(device)
            t = torch.from_numpy(self.knots).to(dtype).to(device)
            self._tables[key] = (u, t)
        return self._tables[key]

    def alpha_bar_on(self, t: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """alpha_bar at times ``t`` on their device (no host read): float32, or float64 when ``t``
        (or the data ``like``) is float64."""
        dtype = time_dtype(like.dtype if like is not None and like.dtype == torch.float64 else t.dtype)
        return torch.exp(self._log_alpha_bar(t.to(dtype), torch))

    # ------------------------------------------------------------------ the model
    def preconditioning(self, sigma: float | torch.Tensor) -> tuple[Any, Any, Any, Any]:
        """(c_in, c_skip, c_out, c_noise) of EDM's iDDPMPrecond (Karras et al. 2022, Table 1) for
        each prediction: with a = 1 / sqrt(1 + sigma^2), eps: (a, 1, -sigma); x0: (a, 0, 1);
        v: (a, a^2, -sigma a). c_noise is the time of sigma (:meth:`t_of_sigma`)."""
        if isinstance(sigma, torch.Tensor):
            a = torch.rsqrt(1.0 + sigma**2)
            c_noise = self.t_of_sigma_on(sigma)
        else:
            a = 1.0 / math.sqrt(1.0 + sigma * sigma)
            c_noise = float(self.t_of_sigma(sigma))
        if self.prediction == "eps":
            return a, 1.0, -sigma, c_noise
        if self.prediction == "x0":
            return a, 0.0, 1.0, c_noise
        return a, a * a, -sigma * a, c_noise

    def network_time(self, c_noise: float, like: torch.Tensor) -> torch.Tensor:
        """``c_noise`` as the network's time (B,): ``long`` at a training step (within 1e-7 relative
        of an integer: ``t_of_sigma(sigma(k))`` returns k up to float64 rounding), else float32
        (float64 for float64 data: never the data's lower precision, e.g. bf16)."""
        if abs(c_noise - round(c_noise)) <= 1e-7 * max(1.0, abs(c_noise)):
            return torch.full((like.shape[0],), int(round(c_noise)), dtype=torch.long, device=like.device)
        return super().network_time(c_noise, like)

    def predict(self, model: Model, x: torch.Tensor, t: float, cond: Mapping[str, Any] | None = None,
                clip_x0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One network call at time ``t`` (host float): (x0_hat, eps_hat) for x = x_t.

        Works for every prediction type; a learned-range model contributes only the first half
        of its channels (the mean); ``clip_x0`` clips x0_hat to [-1, 1] and re-derives eps_hat.
        """
        alpha_bar = float(np.exp(self.log_alpha_bar(t)))
        raw = self.prediction_part(model(x, self.network_time(float(t), x), **dict(cond or {})), x)
        x0, eps = x0_eps_from_prediction(self.prediction, x, alpha_bar, raw)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1.0 - alpha_bar)
        return x0, eps

    def score(self, model: Model, x: torch.Tensor, t: float, cond: Mapping[str, Any] | None = None) -> torch.Tensor:
        """grad_x log p_t(x) = -eps_hat / sqrt(1 - alpha_bar(t)) (Song et al. 2021, eq. 7 / app. B)."""
        _, eps = self.predict(model, x, t, cond)
        return -eps / math.sqrt(-math.expm1(float(self.log_alpha_bar(t))))
