"""The Gaussian diffusion process: forward marginals, posterior, parameterisations, p(x_{t-1}|x_t).

No network lives here: a model is any callable ``model(x_t, t, **cond)`` on a batch ``(B, ...)``.
Integer ``t`` in ``[0, T)`` is the paper's step ``t + 1`` (see :mod:`ddpmkit.schedules`). On a
respaced schedule the process hands the model the *original* timestep ``schedule.timesteps[t]``.

References: Ho et al. 2020 (DDPM) eqs. 4, 6, 7, 11; Nichol & Dhariwal 2021 (iDDPM) eq. 15;
Salimans & Ho 2022 for the v parameterisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from .schedules import Schedule

__all__ = ["GaussianDiffusion", "ModelPrediction", "PREDICTIONS", "VARIANCES"]

Model = Callable[..., torch.Tensor]
PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("fixed_small", "fixed_large", "learned_range")


@dataclass(frozen=True)
class ModelPrediction:
    """What p(x_{t-1} | x_t) needs from one network call, in every parameterisation."""

    mean: torch.Tensor          # posterior mean mu_theta(x_t, t)
    variance: torch.Tensor      # Sigma_theta(x_t, t) (broadcastable to x)
    log_variance: torch.Tensor
    pred_x0: torch.Tensor
    pred_eps: torch.Tensor
    var_values: torch.Tensor | None  # learned_range: the raw v in [-1, 1]-ish, else None


def _check_choice(name: str, value: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {name}={value!r}")
    return value


class GaussianDiffusion:
    """A discrete Gaussian diffusion with a fixed schedule and a model parameterisation.

    Args:
        schedule: the beta schedule (possibly respaced).
        prediction: what the network predicts: ``"eps"`` (DDPM), ``"x0"`` or ``"v"``.
        variance: ``"fixed_small"`` (beta_tilde_t), ``"fixed_large"`` (beta_t, with
            beta_tilde_1 at the first step as in iDDPM, for a better decoder) or
            ``"learned_range"`` (iDDPM eq. 15: the network outputs twice the channels on dim 1;
            the second half v gives log Sigma = frac log beta + (1 - frac) log beta_tilde with
            frac = (v + 1) / 2).
    """

    def __init__(self, schedule: Schedule, prediction: str = "eps", variance: str = "fixed_small"):
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a ddpmkit.Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.prediction = _check_choice("prediction", prediction, PREDICTIONS)
        self.variance = _check_choice("variance", variance, VARIANCES)

    # ------------------------------------------------------------------ basics
    @property
    def T(self) -> int:
        return self.schedule.T

    @property
    def learned_variance(self) -> bool:
        return self.variance == "learned_range"

    def respace(self, spec: int | str | Any) -> "GaussianDiffusion":
        """The same process on a respaced schedule (a new value; see Schedule.respace)."""
        return GaussianDiffusion(self.schedule.respace(spec), self.prediction, self.variance)

    def __repr__(self) -> str:
        return f"GaussianDiffusion({self.schedule!r}, prediction={self.prediction!r}, variance={self.variance!r})"

    def _g(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.schedule.gather(name, t, like)

    def check_t(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Validate integer timesteps: shape (B,) and values in [0, T)."""
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},) to match the batch, got t.shape={tuple(t.shape)}")
        if t.is_floating_point() or t.is_complex():
            raise ValueError(f"t must hold integer timesteps, got dtype {t.dtype}")
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= self.T:
            raise ValueError(f"t must lie in [0, {self.T}), got t in [{lo}, {hi}]")
        return t.long()

    # ------------------------------------------------------------------ forward process
    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (DDPM eq. 4)."""
        t = self.check_t(t, x0)
        mean = self._g("sqrt_alpha_bar", t, x0) * x0
        variance = (1.0 - self._g("alpha_bar", t, x0)).expand_as(x0)
        return mean, variance, torch.log(variance)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4)."""
        t = self.check_t(t, x0)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        return self._g("sqrt_alpha_bar", t, x0) * x0 + self._g("sqrt_one_minus_alpha_bar", t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I) (DDPM eqs. 6-7): mean, var, log var."""
        mean = self._g("posterior_mean_coef_x0", t, x_t) * x0 + self._g("posterior_mean_coef_xt", t, x_t) * x_t
        variance = self._g("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self._g("posterior_log_variance", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------ parameterisations
    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) (DDPM eq. 4 solved for x_0)."""
        return (x_t - self._g("sqrt_one_minus_alpha_bar", t, x_t) * eps) / self._g("sqrt_alpha_bar", t, x_t)

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar)."""
        return (x_t - self._g("sqrt_alpha_bar", t, x_t) * x0) / self._g("sqrt_one_minus_alpha_bar", t, x_t)

    def v_from(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022)."""
        return self._g("sqrt_alpha_bar", t, x0) * eps - self._g("sqrt_one_minus_alpha_bar", t, x0) * x0

    def x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._g("sqrt_alpha_bar", t, x_t) * x_t - self._g("sqrt_one_minus_alpha_bar", t, x_t) * v

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._g("sqrt_one_minus_alpha_bar", t, x_t) * x_t + self._g("sqrt_alpha_bar", t, x_t) * v

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of L_simple for this parameterisation."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return self.v_from(x0, noise, t)

    def to_x0_eps(self, x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert a network prediction (eps, x0 or v) into (x0, eps)."""
        if self.prediction == "eps":
            return self.x0_from_eps(x_t, t, pred), pred
        if self.prediction == "x0":
            return pred, self.eps_from_x0(x_t, t, pred)
        return self.x0_from_v(x_t, t, pred), self.eps_from_v(x_t, t, pred)

    # ------------------------------------------------------------------ the model
    def model_output(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        """Call ``model(x_t, t_original, **cond)`` and check the output's shape.

        The network sees the timesteps of the schedule it was trained on: on a respaced
        schedule, index ``t`` becomes ``schedule.timesteps[t]``.
        """
        t_model = self.schedule.table("timesteps", x_t.device)[t.to(x_t.device)]
        out = model(x_t, t_model, **cond)
        expected = list(x_t.shape)
        if self.learned_variance:
            expected[1] *= 2
        if not isinstance(out, torch.Tensor) or list(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            hint = " (learned_range needs twice the channels on dim 1)" if self.learned_variance else ""
            raise ValueError(f"model output must have shape {tuple(expected)}{hint}, got {got}")
        return out

    def split_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prediction, var_values) from a raw model output; var_values is None for fixed variance."""
        if self.learned_variance:
            pred, var_values = out.chunk(2, dim=1)
            return pred, var_values
        return out, None

    def variance_from(self, var_values: torch.Tensor | None, t: torch.Tensor, x_t: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigma_theta(x_t, t) and its log for this process's variance choice."""
        if self.variance == "learned_range":
            assert var_values is not None
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
                      clip_x0: bool = False) -> ModelPrediction:
        """p(x_{t-1} | x_t) = N(mu_theta, Sigma_theta) from a raw model output (DDPM eq. 11).

        The mean is the posterior mean at the predicted x_0 (optionally clipped to [-1, 1]),
        which for eps-prediction is exactly DDPM eq. 11.
        """
        pred, var_values = self.split_output(out)
        variance, log_variance = self.variance_from(var_values, t, x_t)
        pred_x0, pred_eps = self.to_x0_eps(x_t, t, pred)
        if clip_x0:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
            pred_eps = self.eps_from_x0(x_t, t, pred_x0)
        mean, _, _ = self.q_posterior(pred_x0, x_t, t)
        return ModelPrediction(mean, variance, log_variance, pred_x0, pred_eps, var_values)

    def p_mean_variance(self, model: Model, x_t: torch.Tensor, t: torch.Tensor,
                        clip_x0: bool = False, **cond: Any) -> ModelPrediction:
        """One network call turned into p(x_{t-1} | x_t)."""
        t = self.check_t(t, x_t)
        return self.p_from_output(self.model_output(model, x_t, t, **cond), x_t, t, clip_x0)

    # ------------------------------------------------------------------ losses
    def loss(self, model: Model, x0: torch.Tensor, objective: str = "simple", **kwargs: Any) -> torch.Tensor:
        """Per-example training loss; see :func:`ddpmkit.losses.training_losses` for the options."""
        from .losses import training_losses

        return training_losses(self, model, x0, objective=objective, **kwargs)["loss"]
