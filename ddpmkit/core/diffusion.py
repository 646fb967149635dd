"""The Gaussian diffusion process: forward marginals, posterior, parameterisations, p(x_{t-1}|x_t).

No network lives here: a model is any callable ``model(x_t, t, **cond)`` on a batch ``(B, ...)``.
Integer ``t`` in ``[0, T)`` is the paper's step ``t + 1`` (see :mod:`ddpmkit.core.schedules`). On a
respaced schedule the process hands the model the *original* timestep ``schedule.timesteps[t]``.

Every public method validates its input (timesteps in range, matching shapes, finite data) and
raises a one-line ``ValueError`` naming the argument; the private ``_`` methods hold each
formula once and trust their input, so a composite call (``p_mean_variance``) checks only once.

References: Ho et al. 2020 (DDPM) eqs. 4, 6, 7, 11; Nichol & Dhariwal 2021 (iDDPM) eq. 15;
Salimans & Ho 2022 for the v parameterisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .predictions import (PREDICTIONS, check_choice, check_finite, check_same_shape, eps_from_v_at,
                          eps_from_x0_at, v_from_at, x0_eps_from_prediction_at, x0_from_eps_at, x0_from_v_at)
from .discrete_time import DiscreteTimeProcess
from .losses import make_timestep_sampler, training_losses
from .schedules import Schedule

__all__ = ["GaussianDiffusion", "ModelPrediction", "PREDICTIONS", "VARIANCES", "check_finite", "check_same_shape"]

Model = Callable[..., torch.Tensor]
VARIANCES = ("fixed_small", "fixed_large", "learned_range")


@dataclass(frozen=True)
class ModelPrediction:
    """What p(x_{t-1} | x_t) needs from one network call, in every parameterisation.

    ``variance`` is Sigma_theta as used for sampling; ``log_variance`` is the one used by the
    bound. They differ only for ``fixed_small`` at t = 0, where the variance is beta_tilde_1 = 0
    (no noise on the last step) and the log variance is clipped to log beta_tilde_2 (iDDPM).
    """

    mean: torch.Tensor          # posterior mean mu_theta(x_t, t)
    variance: torch.Tensor      # Sigma_theta(x_t, t) (broadcastable to x)
    log_variance: torch.Tensor
    pred_x0: torch.Tensor
    pred_eps: torch.Tensor
    var_values: torch.Tensor | None  # learned_range: the raw v in [-1, 1]-ish, else None


class GaussianDiffusion(DiscreteTimeProcess):
    """A discrete Gaussian diffusion with a fixed schedule and a model parameterisation: one more
    process on the noise-level contract (:class:`ddpmkit.core.process.Process`), with what only it has
    (posterior variances, the learned range, the variational bound, DDPM's chain, respacing,
    importance sampling of t) as capabilities.

    Args:
        schedule: the beta schedule (possibly respaced).
        prediction: what the network predicts: ``"eps"`` (DDPM), ``"x0"`` or ``"v"``.
        variance: ``"fixed_small"`` (beta_tilde_t), ``"fixed_large"`` (beta_t, with
            beta_tilde_2 at the first step as in improved-diffusion, where the DDPM paper has
            beta_1) or ``"learned_range"`` (iDDPM eq. 15: the network outputs twice the
            channels on dim 1; the second half v gives log Sigma = frac log beta +
            (1 - frac) log beta_tilde with frac = (v + 1) / 2).
    """

    def __init__(self, schedule: Schedule, prediction: str = "eps", variance: str = "fixed_small"):
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a ddpmkit.Schedule, got schedule={type(schedule).__name__}")
        self.schedule = schedule
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        self.variance = check_choice("variance", variance, VARIANCES)
        self._set_knots(schedule.timesteps, schedule.alpha_bar, schedule.alphas)

    # ------------------------------------------------------------------ basics
    @property
    def T(self) -> int:
        return self.schedule.T

    @property
    def learned_variance(self) -> bool:
        return self.variance == "learned_range"

    # ------------------------------------------------------------------ capabilities (see Process)
    supports_bound = True
    logged_terms = ("mse", "vlb")

    @property
    def training_steps(self) -> int:
        """T: the network was trained at these steps only (sub-sequence grids and respacing apply)."""
        return self.schedule.T

    def timestep_sampler(self, name: str = "uniform") -> Any:
        """iDDPM's sampler of the training step: ``"uniform"`` or ``"importance"`` (eq. 18)."""
        return make_timestep_sampler(name, self.T)

    def draw_levels(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                    dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The first draw of :meth:`loss`: ``{"t"}``, uniform training steps (B,) in [0, T)."""
        return {"t": torch.randint(0, self.T, (batch,), device=device, generator=generator)}

    def respace(self, spec: int | str | Any) -> "GaussianDiffusion":
        """The same process on a respaced schedule (a new value; see Schedule.respace)."""
        return GaussianDiffusion(self.schedule.respace(spec), self.prediction, self.variance)

    def __repr__(self) -> str:
        return f"GaussianDiffusion({self.schedule!r}, prediction={self.prediction!r}, variance={self.variance!r})"

    def _g(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.schedule.gather(name, t, like)

    def check_t(self, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
        """Validate integer timesteps against the batch ``x``: shape (B,) (or a scalar, which is
        expanded) and values in [0, T). Returns them as ``long``."""
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, device=x.device)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"t must hold integer timesteps, got t.dtype={t.dtype}")
        if x.dim() == 0:
            raise ValueError("x must have a batch dimension, got a 0-d tensor")
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},) to match the batch, got t.shape={tuple(t.shape)}")
        if t.numel():
            lo, hi = torch.aminmax(t)
            lo, hi = int(lo), int(hi)
            if lo < 0 or hi >= self.T:
                raise ValueError(f"t must lie in [0, {self.T}), got t in [{lo}, {hi}]")
        return t.long()

    # ------------------------------------------------------------------ forward process
    # Each formula is one method. ``validate=True`` (the default, for a caller at the API edge) checks
    # the arguments, reading t's range and finiteness back from the device; the library's hot loops
    # pass ``validate=False`` once their inputs are valid by construction (integer t of shape (B,)
    # in [0, T), matching shapes), so nothing is read back.
    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (DDPM eq. 4)."""
        t = self.check_t(t, x0)
        check_finite("x0", x0)
        mean = self._g("sqrt_alpha_bar", t, x0) * x0
        variance = self._g("one_minus_alpha_bar", t, x0).expand_as(x0)
        return mean, variance, torch.log(variance)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, validate: bool = True) -> torch.Tensor:
        """Draw x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4); the noise's
        shape is checked even with ``validate=False`` (no host read)."""
        if validate:
            t = self.check_t(t, x0)
            check_finite("x0", x0)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        else:
            check_same_shape("noise", noise, "x0", x0)
            if validate:
                check_finite("noise", noise)
        return self._g("sqrt_alpha_bar", t, x0) * x0 + self._g("sqrt_one_minus_alpha_bar", t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, validate: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I) (DDPM eqs. 6-7): mean, var, log var.

        At t = 0 the posterior is the point mass at x_0 (variance 0); its log variance is
        clipped to log beta_tilde_2 as in improved-diffusion.
        """
        if validate:
            t = self.check_t(t, x_t)
            check_same_shape("x0", x0, "x_t", x_t)
            check_finite("x0", x0)
            check_finite("x_t", x_t)
        mean = self._g("posterior_mean_coef_x0", t, x_t) * x0 + self._g("posterior_mean_coef_xt", t, x_t) * x_t
        variance = self._g("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self._g("posterior_log_variance", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------ parameterisations
    def _a_s(self, t: torch.Tensor, like: torch.Tensor, other_name: str, other: torch.Tensor,
             validate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) broadcast to ``like``, after the checks."""
        if validate:
            check_same_shape(other_name, other, "x_t", like)
            t = self.check_t(t, like)
        return self._g("sqrt_alpha_bar", t, like), self._g("sqrt_one_minus_alpha_bar", t, like)

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) (DDPM eq. 4 solved for x_0)."""
        return x0_from_eps_at(x_t, eps, *self._a_s(t, x_t, "eps", eps, validate))

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar)."""
        return eps_from_x0_at(x_t, x0, *self._a_s(t, x_t, "x0", x0, validate))

    def v_from(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022)."""
        if validate:
            check_same_shape("eps", eps, "x0", x0)
        return v_from_at(x0, eps, *self._a_s(t, x0, "x0", x0, validate))

    def x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."""
        return x0_from_v_at(x_t, v, *self._a_s(t, x_t, "v", v, validate))

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v."""
        return eps_from_v_at(x_t, v, *self._a_s(t, x_t, "v", v, validate))

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """The regression target of L_simple for this parameterisation."""
        if validate:
            check_same_shape("noise", noise, "x0", x0)
            t = self.check_t(t, x0)
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return self.v_from(x0, noise, t, validate=False)

    def to_x0_eps(self, x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor, validate: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert a network prediction (eps, x0 or v) into (x0, eps)."""
        return x0_eps_from_prediction_at(self.prediction, x_t, pred, *self._a_s(t, x_t, "pred", pred, validate))

    # ------------------------------------------------------------------ the model
    def output_shape(self, x_t: torch.Tensor) -> tuple[int, ...]:
        """The shape a model output must have: x_t's, with twice the channels for learned_range."""
        expected = list(x_t.shape)
        if self.learned_variance:
            if x_t.dim() < 2:
                raise ValueError(
                    f"learned_range needs a channel dimension (dim 1), got x of shape {tuple(x_t.shape)}")
            expected[1] *= 2
        return tuple(expected)

    def prediction_part(self, out: Any, x: torch.Tensor) -> torch.Tensor:
        """The mean half of a learned-range output (all of a fixed-variance one), shape checked."""
        return self.split_output(super().prediction_part(out, x))[0]

    def model_output(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, validate: bool = True,
                     **cond: Any) -> torch.Tensor:
        """Call ``model(x_t, t_original, **cond)`` and check the output's shape (always: no host read).

        The network sees the timesteps of the schedule it was trained on: on a respaced
        schedule, index ``t`` becomes ``schedule.timesteps[t]``.
        """
        if validate:
            t = self.check_t(t, x_t)
        out = model(x_t, self.schedule.table("timesteps", x_t.device)[t.to(x_t.device)], **cond)
        super().prediction_part(out, x_t)
        return out

    def split_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prediction, var_values) from a raw model output; var_values is None for fixed variance.

        For learned_range the first half of the channels (dim 1) is the prediction and the
        second half the variance values v, as in improved-diffusion.
        """
        if self.learned_variance:
            if out.dim() < 2 or out.shape[1] % 2:
                raise ValueError(f"learned_range output needs an even channel count on dim 1, got shape {tuple(out.shape)}")
            pred, var_values = out.chunk(2, dim=1)
            return pred, var_values
        return out, None

    def variance_from(self, var_values: torch.Tensor | None, t: torch.Tensor, x_t: torch.Tensor,
                      validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigma_theta(x_t, t) and its log for this process's variance choice."""
        if validate:
            t = self.check_t(t, x_t)
            if self.learned_variance:
                check_same_shape("var_values", var_values, "x_t", x_t)
        if self.variance == "learned_range":
            min_log = self._g("posterior_log_variance", t, x_t)
            max_log = self._g("log_betas", t, x_t)
            frac = (var_values + 1.0) / 2.0
            log_variance = frac * max_log + (1.0 - frac) * min_log   # iDDPM eq. 15
            return torch.exp(log_variance), log_variance
        if self.variance == "fixed_small":
            log_variance = self._g("posterior_log_variance", t, x_t).expand_as(x_t)
            return self._g("posterior_variance", t, x_t).expand_as(x_t), log_variance
        log_variance = self._g("large_log_variance", t, x_t).expand_as(x_t)   # fixed_large
        return torch.exp(log_variance), log_variance

    def p_from_output(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                      clip_x0: bool = False, validate: bool = True) -> ModelPrediction:
        """p(x_{t-1} | x_t) = N(mu_theta, Sigma_theta) from a raw model output (DDPM eq. 11).

        The mean is the posterior mean at the predicted x_0 (optionally clipped to [-1, 1]),
        which for eps-prediction is exactly DDPM eq. 11. The output's shape is always checked (no
        host read).
        """
        super().prediction_part(out, x_t)
        if validate:
            t = self.check_t(t, x_t)
        pred, var_values = self.split_output(out)
        variance, log_variance = self.variance_from(var_values, t, x_t, validate=False)
        pred_x0, pred_eps = self.to_x0_eps(x_t, t, pred, validate=False)
        if clip_x0:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
            pred_eps = self.eps_from_x0(x_t, t, pred_x0, validate=False)
        mean, _, _ = self.q_posterior(pred_x0, x_t, t, validate=False)
        return ModelPrediction(mean, variance, log_variance, pred_x0, pred_eps, var_values)

    def p_mean_variance(self, model: Model, x_t: torch.Tensor, t: torch.Tensor,
                        clip_x0: bool = False, **cond: Any) -> ModelPrediction:
        """One network call turned into p(x_{t-1} | x_t)."""
        t = self.check_t(t, x_t)
        check_finite("x_t", x_t)
        out = self.model_output(model, x_t, t, validate=False, **cond)
        return self.p_from_output(out, x_t, t, clip_x0, validate=False)

    # ------------------------------------------------------------------ losses
    def loss_terms(self, model: Model, x0: torch.Tensor, objective: str = "simple", *,
                   generator: torch.Generator | None = None, draws: Mapping[str, torch.Tensor] | None = None,
                   t: torch.Tensor | None = None, noise: torch.Tensor | None = None, levels: int | None = 256,
                   hybrid_lambda: float = 0.001, validate: bool = True, **cond: Any) -> dict[str, torch.Tensor]:
        """Per-example ``{"loss", "mse", "vlb", "t"}`` (:func:`ddpmkit.core.losses.training_losses`).

        The draws, in this order from ``generator``: the training steps t (:meth:`draw_levels`),
        then the noise. ``draws``: ``{"t", "noise"}`` drawn beforehand (a trainer's global batch,
        whose t may come from an importance sampler), used instead; ``validate=False`` skips the
        checks that read the host (the trainer checks its data once). ``t`` / ``noise``: the same, one
        at a time."""
        draws = dict(draws or {})
        t = draws.get("t") if t is None else t
        noise = draws.get("noise") if noise is None else noise
        return training_losses(self, model, x0, objective=objective, t=t, noise=noise,
                               generator=generator, levels=levels, hybrid_lambda=hybrid_lambda, validate=validate,
                               **cond)
