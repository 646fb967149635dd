"""Rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2023) on the noise-level contract.

The straight path between data and noise, ``x_t = (1 - t) x_0 + t eps`` on t in [0, 1], is the
contract ``x = s(t) (x_0 + sigma(t) eps)`` with

    s(t) = 1 - t,   sigma(t) = t / (1 - t),   t(sigma) = sigma / (1 + sigma),
    d sigma^2 / dt = 2 sigma (1 + sigma)^2     (d sigma / dt = 1 / (1 - t)^2 = (1 + sigma)^2).

Velocity prediction. The network F(x_t, t) predicts v = eps - x_0 = dx_t / dt. Since
``x_t - t v = x_0``, the x_0 estimate is D = x - t F in x coordinates; in x_hat = x / s
(x_hat = x_0 + sigma eps, x = x_hat / (1 + sigma), t = sigma / (1 + sigma)):

    D(x_hat, sigma) = x_hat / (1 + sigma) - sigma / (1 + sigma) F(x_hat / (1 + sigma), t),
    so c_in = c_skip = 1 / (1 + sigma),  c_out = -sigma / (1 + sigma) = -t,  c_noise = time_scale t.

The other outputs: ``"eps"`` (x_0 = x_hat - sigma F: c_skip = 1, c_out = -sigma) and ``"x0"``
(c_skip = 0, c_out = 1), both with c_in = 1 / (1 + sigma): the network always sees x_t itself.

The conditional flow-matching loss is a weighted x_0 loss. With v_pred = (x - D) / t and the
target v = (x - x_0) / t (both from x = (1 - t) x_0 + t eps):

    || v_pred - (eps - x_0) ||^2 = || x_0 - D ||^2 / t^2,   lambda(sigma) = 1 / t^2 = (1 + 1 / sigma)^2,

the ``"flow"`` weighting, whatever the output (for ``"v"`` it is the plain velocity MSE).

Time sampling (Esser et al. 2024, "SD3", sec. 3.1): ``"uniform"`` t ~ U[t_min, t_max] (Liu et al.)
or ``"logit_normal"``: logit(t) ~ N(m, s^2). Because logit(t) = log(t / (1 - t)) = log sigma,
that is ln sigma ~ N(p_mean, p_std^2), EDM's log-normal draw with (m, s) = (p_mean, p_std)
(SD3: 0, 1), clipped to [t_min, t_max]. ``"steps"``: t uniform on the grid of the k-step Euler
sampler, t_j = t_max - j (t_max - t_min) / k, j = 0..k-1 (k = ``distill_steps``; the levels of
:func:`flow_sigmas` but the final 0): Liu et al. 2022's k-step distillation (sec. 2.3; their code's
integer ``reflow_t_schedule`` k draws t = randint(0, k) (1 - eps) / k + eps, noise at t = 0, the same
points). ``"start"``: every draw at t_max, the start of the
sampling path: Liu et al. 2022's one-step (k = 1) distillation (sec. 2.3, "Distillation"; their
L = E || (X_1 - X_0) - v(X_0, 0) ||^2 with noise at their t = 0, our t = 1). On a reflow's (z, x)
pairs the point trained is x_t = (1 - t_max) x + t_max z, the target v = z - x, and one Euler step
of ``sigmas_to_zero(1)`` from there returns x_t - t_max v = x exactly when v = z - x. A sample
starts from t_max z, not x_t: it lands on t_max x, the (1 - t_max) x = 1e-3 x share dropped, as at
every start (the ends, below). Such a process is a one-step generator, not an ODE over [0, 1]: its
velocity is trained at t_max only. ``"steps"`` with k = 1 is ``"start"``; with k > 1 each of the k
Euler steps t_j -> t_{j+1} of a pair's straight interpolant moves it by (t_{j+1} - t_j)(z - x), so
from t_max z the k-step Euler sampler lands on t_max x when v = z - x at the k grid times.

The ends. sigma(1) is infinite: x_hat = x / 0 has no value, so the process stops at
``t_max = 1 - 1e-3`` (sigma_max = 999) and starts its samples from ``N(0, t_max^2 I)``, the
marginal at t_max of data with zero mean and variance (the data's part, (1 - t_max) x_0, is a
1e-3 fraction: the mean it drops shifts the samples by 1e-3 x the data mean at most, below any
test's sampling error). At t_min = 1e-3 the (1 / t)^2 weight stays finite in float32. Every
sampler's first step from sigma_max is the flow's Euler step from t_max: Euler in x_hat over
sigma, ``x_hat' = D + (sigma' / sigma) (x_hat - D)``, is in x exactly ``x' = x + (t' - t) v``,
so one Euler step from t_max to 0 returns D = x - t_max v. :func:`flow_sigmas` gives the grid
uniform in t that ends at t = 0 (Liu et al.'s N-step Euler).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .process import Process, check_number
from .predictions import check_choice
from .score_losses import lognormal_sigmas

__all__ = ["RectifiedFlow", "TIME_SAMPLINGS", "flow_weight", "flow_sigmas", "flow_times"]

TIME_SAMPLINGS = ("uniform", "logit_normal", "start", "steps")


def flow_weight(sigma: torch.Tensor) -> torch.Tensor:
    """lambda = (1 + 1 / sigma)^2 = 1 / t^2: the flow-matching velocity error as an x_0 error."""
    return (1.0 + 1.0 / sigma) ** 2


class RectifiedFlow(Process):
    """The rectified-flow process x_t = (1 - t) x_0 + t eps (Liu et al. 2022, eq. 1).

    Args:
        prediction: ``"v"`` (velocity eps - x_0, the default), ``"eps"`` or ``"x0"``.
        t_min, t_max: the time range trained and sampled, 0 < t_min < t_max < 1.
        time_sampling: ``"uniform"``, ``"logit_normal"`` (logit t ~ N(p_mean, p_std^2)) or
            ``"start"`` (t = t_max always: one-step distillation on reflow pairs, Liu et al. 2022 sec. 2.3)
            or ``"steps"`` (t uniform on the ``distill_steps``-step Euler grid: k-step distillation).
        distill_steps: k of ``"steps"`` (1 for ``"start"``), an integer >= 1.
        rollout: k-step distillation (``"steps"``, k >= 2) on the sampler's own states: the trainer
            trains level j > 0 at the point the student's own j Euler steps reach from the pair's
            start, not at the pair's straight interpolant (:mod:`ddpmkit.training.rollout`; the
            process's own :meth:`loss_terms` is the plain k-step loss).
        p_mean, p_std: the logit-normal's mean and std (SD3: 0 and 1).
        time_scale: the network sees ``time_scale * t`` (999: the scale of training steps
            that ddpmkit's sinusoidal embeddings expect, as the VP process).
    """

    predictions = ("v", "eps", "x0")
    weightings = ("flow", "ncsn", "likelihood", "min_snr")
    default_weighting = "flow"
    default_grid = "uniform_open"   # uniform in t down to 0, n calls for n steps (Liu et al.; flow_sigmas)

    def __init__(self, prediction: str = "v", t_min: float = 1e-3, t_max: float = 1.0 - 1e-3,
                 time_sampling: str = "uniform", p_mean: float = 0.0, p_std: float = 1.0,
                 time_scale: float = 999.0, distill_steps: int = 1, rollout: bool = False):
        self.prediction = self._check_prediction(prediction)
        self.t_min = check_number("t_min", t_min)
        self.t_max = check_number("t_max", t_max)
        if not self.t_min < self.t_max < 1.0:
            raise ValueError(f"t_max must lie in (t_min, 1), got t_min={t_min!r}, t_max={t_max!r}")
        self.time_sampling = check_choice("time_sampling", time_sampling, TIME_SAMPLINGS)
        self.p_mean = check_number("p_mean", p_mean, positive=False)
        self.p_std = check_number("p_std", p_std)
        self.time_scale = check_number("time_scale", time_scale)
        if isinstance(distill_steps, bool) or not isinstance(distill_steps, (int, np.integer)) or distill_steps < 1:
            raise ValueError(f"distill_steps must be an integer >= 1, got distill_steps={distill_steps!r}")
        if self.time_sampling == "start" and distill_steps != 1:
            raise ValueError(f"time_sampling='start' trains at t_max only (k = 1), got distill_steps={distill_steps!r}; "
                             f"use time_sampling='steps'")
        self.distill_steps = int(distill_steps)
        if not isinstance(rollout, bool):
            raise ValueError(f"rollout must be true or false, got rollout={rollout!r}")
        if rollout and (self.time_sampling != "steps" or self.distill_steps < 2):
            raise ValueError(f"rollout trains the later steps of a k-step student on its own states: it needs "
                             f"time_sampling='steps' and distill_steps >= 2, got time_sampling="
                             f"{self.time_sampling!r}, distill_steps={self.distill_steps}")
        self.rollout = rollout
        t_grid = flow_times(self.t_min, self.t_max, self.distill_steps)[:-1]   # float64, host: the k-step Euler grid's calls
        self._grid_levels = np.stack([t_grid, t_grid / (1.0 - t_grid)])   # (t, sigma) rows, cast once per batch

    @property
    def prior_std(self) -> float:
        """The std of x at t_max for zero-mean, zero-variance data: t_max (see the module notes)."""
        return self.t_max

    # ------------------------------------------------------------------ closed forms
    def _sigma(self, t: Any, xp: Any) -> Any:
        return t / (1.0 - t)

    def _scale(self, t: Any, xp: Any) -> Any:
        return 1.0 - t

    def _t_of_sigma(self, sigma: Any, xp: Any) -> Any:
        return sigma / (1.0 + sigma)

    def _dsigma2_dt(self, t: Any, xp: Any) -> Any:
        return 2.0 * t / (1.0 - t) ** 3

    def preconditioning(self, sigma: float | torch.Tensor) -> tuple[Any, Any, Any, Any]:
        """(c_in, c_skip, c_out, c_noise): c_in = 1 / (1 + sigma) (the network sees x_t);
        v: c_skip = 1 / (1 + sigma), c_out = -t; eps: 1, -sigma; x0: 0, 1; c_noise = time_scale t."""
        c_in = 1.0 / (1.0 + sigma)
        t = sigma * c_in
        c_noise = self.time_scale * t
        if self.prediction == "v":
            return c_in, c_in, -t, c_noise
        if self.prediction == "eps":
            return c_in, 1.0, -sigma, c_noise
        return c_in, 0.0, 1.0, c_noise

    # ------------------------------------------------------------------ training
    def training_sigmas(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                        dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, sigma), each (B,): t ~ U[t_min, t_max], or logit t = ln sigma ~ N(p_mean, p_std^2)
        clipped to [t_min, t_max] (SD3, sec. 3.1), or ``"start"`` / ``"steps"``: t uniform on the k-step
        Euler grid t_max - j (t_max - t_min) / k, j = 0..k-1 (Liu et al. 2022's k-step distillation; see the module
        notes), t and sigma from the float64 host levels cast once; k = 1 (``"start"``) draws nothing."""
        if self.time_sampling in ("start", "steps"):
            return self._grid_draw(batch, generator, device, dtype)[1:]
        if self.time_sampling == "uniform":
            return super().training_sigmas(batch, generator, device, dtype)
        sigma = lognormal_sigmas(batch, generator, device, dtype, self.p_mean, self.p_std)
        t = self.t_of_sigma_on(sigma).clamp(self.t_min, self.t_max)
        return t, self.sigma_on(t)

    def _grid_draw(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(j, t_j, sigma_j), each (B,): the k-step grid level j of each example, uniform on 0..k-1
        (all 0 for k = 1, no draw), and its time and noise level from the float64 host table."""
        levels = torch.as_tensor(self._grid_levels, dtype=dtype).to(device)
        if self.distill_steps == 1:
            index = torch.zeros(batch, dtype=torch.long, device=device)
        else:
            index = torch.randint(0, self.distill_steps, (batch,), generator=generator, device=device)
        return index, levels[0, index], levels[1, index]

    def draw_levels(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                    dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """``{"t", "sigma"}`` (:meth:`training_sigmas`); with ``rollout`` also ``"level"``, each
        example's grid index j (the same one draw)."""
        if not self.rollout:
            return super().draw_levels(batch, generator, device, dtype)
        index, t, sigma = self._grid_draw(batch, generator, device, dtype)
        return {"t": t, "sigma": sigma, "level": index}

    def loss_weight(self, weighting: str, sigma: torch.Tensor, t: torch.Tensor, snr_gamma: float = 5.0) -> torch.Tensor:
        """``"flow"``: (1 + 1 / sigma)^2 (the flow-matching loss); else the base weightings."""
        if check_choice("weighting", weighting, self.weightings) == "flow":
            return flow_weight(sigma)
        return super().loss_weight(weighting, sigma, t, snr_gamma)

    def sigmas_to_zero(self, steps: int) -> np.ndarray:
        """The flow's own grid down to t = 0: :func:`flow_sigmas`."""
        return flow_sigmas(self, steps)

    def __repr__(self) -> str:
        return (f"RectifiedFlow(prediction={self.prediction!r}, t_min={self.t_min:g}, t_max={self.t_max:g}, "
                f"time_sampling={self.time_sampling!r}, p_mean={self.p_mean:g}, p_std={self.p_std:g}, "
                f"time_scale={self.time_scale:g}, distill_steps={self.distill_steps}, rollout={self.rollout})")


def flow_sigmas(process: RectifiedFlow, steps: int) -> np.ndarray:
    """The sigma grid of ``steps`` Euler steps uniform in t down to 0 (Liu et al. 2022, sec. 2.3):
    the times of :func:`flow_times` as sigma = t / (1 - t), ending in 0 (float64, host). It is the
    flow's default sampling grid, ``"uniform_open"`` of :func:`ddpmkit.sampling.grids.continuous_sigmas`,
    bit for bit: unlike ``"uniform"`` (t_max ... t_min, then 0) every one of its ``steps`` network
    calls moves a 1 / steps share of t."""
    t = flow_times(process.t_min, process.t_max, steps)
    return t / (1.0 - t)


def flow_times(t_min: float, t_max: float, steps: int) -> np.ndarray:
    """The times of :func:`flow_sigmas`: t_k = t_max - k (t_max - t_min) / steps, k = 0..steps-1, then
    exactly 0 (float64, host; ``np.linspace(t_max, t_min, steps + 1)`` without its last level, as the
    open grids are built, so the sampler calls the network at the very levels trained); the k-step
    distillation (``time_sampling="steps"``) trains at all but the last."""
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got steps={steps!r}")
    return np.append(np.linspace(float(t_max), float(t_min), int(steps) + 1)[:int(steps)], 0.0)
