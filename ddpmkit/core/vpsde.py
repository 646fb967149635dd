"""The continuous-time (VP SDE) view of a discrete diffusion, on the noise-level contract.

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

The noise-level contract (Karras et al. 2022, "EDM", sec. 2 and Table 1). The process writes
``x = s(t) (x_0 + sigma(t) eps)`` with ``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` and
``s = sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2)``. A *denoiser* ``D(x_hat, sigma, **cond)`` returns
the estimate of x_0 for ``x_hat = x / s = x_0 + sigma eps``: :meth:`ContinuousVP.denoiser`
turns a network trained on the process (eps, x0 or v prediction; learned-range variance too:
its variance half is not needed) into one. Itô's rule turns the VP SDE into
``dx_hat = sqrt(d sigma^2) dw`` (a VE SDE in ``x_hat``: the same process, not an
approximation), whose probability-flow ODE is ``dx_hat / dsigma = (x_hat - D) / sigma`` (DDIM
eq. 14). Every sampler of :mod:`ddpmkit.sampling` integrates in these variables.

Host and device. ``sigma``, ``scale`` and ``t_of_sigma`` are float64 NumPy maps on the host.
A denoiser called with a Python float ``sigma`` (as the samplers do, from their host grid)
computes the network's time and the conversion coefficients on the host: the model gets a
``long`` tensor where the time is a training step, float32 between steps, and nothing is read
back from the device. Called with a tensor ``sigma`` (per example, e.g. from k-diffusion), the
time is interpolated on the device in float32.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch

from .predictions import DenoiserBase, batch_sigma, time_dtype, x0_eps_from_prediction_at

if TYPE_CHECKING:   # the process is only used through its attributes (no import cycle)
    from .diffusion import GaussianDiffusion

__all__ = ["ContinuousVP", "VPDenoiser", "x0_eps_from_prediction"]

Model = Callable[..., torch.Tensor]


def x0_eps_from_prediction(prediction: str, x: torch.Tensor, alpha_bar: torch.Tensor | float,
                           pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from an eps / x0 / v prediction at a real-valued ``alpha_bar`` (float or tensor)."""
    if isinstance(alpha_bar, torch.Tensor):
        alpha_bar = alpha_bar.to(dtype=x.dtype, device=x.device)
        return x0_eps_from_prediction_at(prediction, x, pred, alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt())
    return x0_eps_from_prediction_at(prediction, x, pred, math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar))


class ContinuousVP:
    """A discrete :class:`GaussianDiffusion` seen as a VP SDE in continuous time ``t``.

    Knots: ``t_k = schedule.timesteps[k]`` (original units) with ``log alpha_bar_k``; in
    between, linear interpolation of ``log alpha_bar``. Time runs over ``[t_min, t_max]``
    (``[0, T-1]`` on a full schedule); below ``t_min`` the network was never trained, so
    samplers stop there and take one final denoising step to ``sigma = 0``.
    """

    def __init__(self, process: "GaussianDiffusion"):
        if not hasattr(process, "schedule") or not hasattr(process, "split_output"):
            raise ValueError(f"process must be a ddpmkit.GaussianDiffusion, got {type(process).__name__}")
        self.process = process
        self.prediction = process.prediction
        self.knots = process.schedule.timesteps.astype(np.float64)
        self.log_alpha_bar_knots = np.log(process.schedule.alpha_bar)
        self._tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ time <-> noise level (host, float64)
    @property
    def t_min(self) -> float:
        return float(self.knots[0])

    @property
    def t_max(self) -> float:
        return float(self.knots[-1])

    def _check_t(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        tol = 1e-9 * max(1.0, self.t_max)
        if np.any(~np.isfinite(t)) or np.any(t < self.t_min - tol) or np.any(t > self.t_max + tol):
            raise ValueError(f"t must lie in [{self.t_min:g}, {self.t_max:g}], got t in "
                             f"[{np.min(t):g}, {np.max(t):g}]")
        return t

    def log_alpha_bar(self, t: np.ndarray | float) -> np.ndarray:
        """log alpha_bar(t), piecewise linear between the knots (float64)."""
        return np.interp(self._check_t(t), self.knots, self.log_alpha_bar_knots)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at (integer or fractional) original timesteps ``t``, as a float64 CPU tensor.

        A host-side helper (it reads ``t``); on a device use :meth:`alpha_bar_on`.
        """
        values = np.exp(self.log_alpha_bar(t.detach().double().cpu().numpy()))
        return torch.from_numpy(values)

    def beta(self, t: np.ndarray | float) -> np.ndarray:
        """beta(t) = -d log alpha_bar / dt: constant on each interval (the left limit)."""
        t = self._check_t(t)
        slopes = -np.diff(self.log_alpha_bar_knots) / np.diff(self.knots) if self.knots.size > 1 else np.zeros(0)
        k = np.clip(np.searchsorted(self.knots, t, side="left") - 1, 0, max(slopes.size - 1, 0))
        return slopes[k] if slopes.size else np.zeros_like(t)

    def sigma(self, t: np.ndarray | float) -> np.ndarray:
        """sigma(t) = sqrt((1 - alpha_bar) / alpha_bar) = sqrt(exp(-log alpha_bar) - 1)."""
        return np.sqrt(np.expm1(-self.log_alpha_bar(t)))

    def scale(self, t: np.ndarray | float) -> np.ndarray:
        """s(t) = sqrt(alpha_bar(t)): x_t = s(t) (x_0 + sigma(t) eps)."""
        return np.exp(0.5 * self.log_alpha_bar(t))

    def t_of_sigma(self, sigma: np.ndarray | float) -> np.ndarray:
        """The inverse of :meth:`sigma` on ``[sigma(t_min), sigma(t_max)]`` (clamped to it)."""
        minus_log_ab = np.log1p(np.asarray(sigma, dtype=np.float64) ** 2)
        return np.interp(minus_log_ab, -self.log_alpha_bar_knots, self.knots)

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(self.t_min))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(self.t_max))

    def alpha_at(self, t: float) -> float:
        """1 - beta of the schedule step at or after ``t`` (the alpha_i of Song et al. alg. 5)."""
        k = int(np.clip(np.searchsorted(self.knots, t - 1e-9, side="left"), 0, self.knots.size - 1))
        return float(self.process.schedule.alphas[k])

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

    _time_dtype = staticmethod(time_dtype)

    def _interp_on(self, u: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Piecewise-linear interpolation of (xs, ys) at u, clamped at the ends, on u's device."""
        if xs.numel() == 1:
            return ys.expand_as(u).clone()
        idx = torch.searchsorted(xs, u.contiguous()).clamp(1, xs.numel() - 1)
        x_lo, x_hi, y_lo, y_hi = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
        w = ((u - x_lo) / (x_hi - x_lo)).clamp(0.0, 1.0)
        return y_lo + w * (y_hi - y_lo)

    def t_of_sigma_on(self, sigma: torch.Tensor) -> torch.Tensor:
        """:meth:`t_of_sigma` on ``sigma``'s device (no host read): float32, or float64 for
        float64 ``sigma``."""
        dtype = self._time_dtype(sigma.dtype)
        u_knots, t_knots = self._device_tables(sigma.device, dtype)
        return self._interp_on(torch.log1p(sigma.to(dtype) ** 2), u_knots, t_knots)

    def alpha_bar_on(self, t: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """alpha_bar at times ``t`` on their device (no host read): float32, or float64 when ``t``
        (or the data ``like``) is float64."""
        dtype = self._time_dtype(like.dtype if like is not None and like.dtype == torch.float64 else t.dtype)
        u_knots, t_knots = self._device_tables(t.device, dtype)
        return torch.exp(-self._interp_on(t.to(dtype), t_knots, u_knots))

    # ------------------------------------------------------------------ the model
    def model_time(self, t: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``t`` as the model's time argument (B,): ``long`` at a training step, else float32
        (float64 when ``like`` is float64: never the data's lower precision, e.g. bf16).

        A Python number is decided on the host (within 1e-7 relative of an integer counts as
        the training step: ``t_of_sigma(sigma(k))`` returns k up to float64 rounding); a tensor is taken as it is (float32, or long if
        it already holds integers), so nothing is read back from a device.
        """
        batch = like.shape[0]
        if isinstance(t, torch.Tensor):
            t = t.to(like.device)
            t = t.expand(batch) if t.dim() == 0 else t
            return t if not t.is_floating_point() else t.to(self._time_dtype(t.dtype))
        if abs(float(t) - round(float(t))) <= 1e-7 * max(1.0, abs(float(t))):   # a training step
            return torch.full((batch,), int(round(float(t))), dtype=torch.long, device=like.device)
        return torch.full((batch,), float(t), dtype=self._time_dtype(like.dtype), device=like.device)

    def raw_output(self, model: Model, x: torch.Tensor, t: float | torch.Tensor,
                   cond: Mapping[str, Any] | None = None) -> torch.Tensor:
        """One network call at time ``t`` with the output's shape checked; the prediction half."""
        out = model(x, self.model_time(t, x), **dict(cond or {}))
        expected = self.process.output_shape(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model output must have shape {expected}, got {got}")
        return self.process.split_output(out)[0]

    def predict(self, model: Model, x: torch.Tensor, t: float, cond: Mapping[str, Any] | None = None,
                clip_x0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One network call at time ``t`` (host float): (x0_hat, eps_hat) for x = x_t.

        Works for every prediction type; a learned-range model contributes only the first half
        of its channels (the mean); ``clip_x0`` clips x0_hat to [-1, 1] and re-derives eps_hat.
        """
        alpha_bar = float(np.exp(self.log_alpha_bar(t)))
        x0, eps = x0_eps_from_prediction(self.prediction, x, alpha_bar, self.raw_output(model, x, t, cond))
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1.0 - alpha_bar)
        return x0, eps

    def score(self, model: Model, x: torch.Tensor, t: float, cond: Mapping[str, Any] | None = None) -> torch.Tensor:
        """grad_x log p_t(x) = -eps_hat / sqrt(1 - alpha_bar(t)) (Song et al. 2021, eq. 7 / app. B)."""
        _, eps = self.predict(model, x, t, cond)
        return -eps / math.sqrt(-math.expm1(float(self.log_alpha_bar(t))))

    def denoiser(self, model: Model, clip_x0: bool = False) -> "VPDenoiser":
        """The denoiser ``D(x_hat, sigma, **cond)`` of a network trained on this process."""
        return VPDenoiser(self, model, clip_x0)


class VPDenoiser(DenoiserBase):
    """``D(x_hat, sigma, **cond)``: the x_0 estimate for ``x_hat = x_0 + sigma eps`` (EDM Table 1, VP).

    The network sees ``x = x_hat / sqrt(1 + sigma^2)`` at the time ``t_of_sigma(sigma)``, and its
    eps / x0 / v prediction is converted to x_0. ``sigma`` is a Python float (host path: exact
    float64 coefficients, integer times stay ``long``) or a tensor of shape () or (B,) (device
    path: coefficients and times in float32, or float64 for float64 data, never in a half
    precision). ``clip_x0`` clips the estimate to [-1, 1] (images).
    """

    def __call__(self, x_hat: torch.Tensor, sigma: float | torch.Tensor, **cond: Any) -> torch.Tensor:
        if isinstance(sigma, torch.Tensor):
            sigma_b = batch_sigma(sigma, x_hat)
            shape = (-1,) + (1,) * (x_hat.dim() - 1)
            a = torch.rsqrt(1.0 + sigma_b**2).reshape(shape)            # sqrt(alpha_bar)
            s = (sigma_b.reshape(shape) * a)                             # sqrt(1 - alpha_bar)
            t: float | torch.Tensor = self.process.t_of_sigma_on(sigma_b)
        else:
            sigma = float(sigma)
            a = 1.0 / math.sqrt(1.0 + sigma * sigma)
            s = sigma * a
            t = float(self.process.t_of_sigma(sigma))
        x = (x_hat * a).to(x_hat.dtype)
        pred = self.process.raw_output(self.model, x, t, cond)
        x0 = x0_eps_from_prediction_at(self.process.prediction, x, pred, a, s)[0].to(x_hat.dtype)
        return self.finish(x0)
