"""Exact ("oracle") denoisers for data whose every posterior quantity has a closed form.

Data: x_0 ~ sum_k w_k N(m_k, diag(s_k^2)) (one component: a Gaussian). Then x_t given
alpha_bar is the mixture of N(sqrt(ab) m_k, ab s_k^2 + 1 - ab), and with the responsibilities
r_k(x_t) of the components

    E[x_0 | x_t] = sum_k r_k (m_k + sqrt(ab) s_k^2 (x_t - sqrt(ab) m_k) / (ab s_k^2 + 1 - ab)),
    E[eps | x_t] = (x_t - sqrt(ab) E[x_0 | x_t]) / sqrt(1 - ab),

which for one component is sqrt(1 - ab) (x_t - sqrt(ab) m) / (ab s^2 + 1 - ab). These formulas
are written here from scratch (not with ddpmkit's conversions) so that tests comparing the two
can fail. Everything is computed in float64 and cast to the input's dtype.

An oracle is a model under the ddpmkit contract, ``oracle(x_t, t) -> output``, where ``t`` is a
timestep of the *training* schedule it was built on: integer, or real-valued between two of
its steps (then log alpha_bar is interpolated linearly, as in ddpmkit.core.discrete_time).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

import ddpmkit as dk

__all__ = ["MixtureOracle", "gaussian_oracle", "mixture_oracle"]


def _f64(x: torch.Tensor | float | Sequence[float]) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


class MixtureOracle:
    """The exact denoiser of a diagonal Gaussian mixture, as a ddpmkit model.

    Args:
        schedule: the schedule the "network" was trained on (its ``timesteps`` are the times
            the oracle accepts; a respaced schedule works too).
        means: (K, *event_shape) component means.
        stds: component standard deviations, broadcastable to ``means`` (0 gives point masses).
        weights: (K,) mixture weights (normalised here); default uniform.
        prediction: the output: ``"eps"``, ``"x0"`` or ``"v"`` (the posterior mean of each).
        var_values: for a ``learned_range`` process, the second half of the output: None (no
            second half), a constant v, or ``"exact"``: the v whose variance is the optimal
            beta_tilde_t + c_t^2 Var(x_0 | x_t) (c_t the x_0 coefficient of the posterior mean),
            i.e. the true reverse variance (diagonal part), for integer t only.
    """

    def __init__(self, schedule: dk.Schedule, means, stds, weights=None, prediction: str = "eps",
                 var_values: float | str | None = None):
        self.schedule = schedule
        self.means = _f64(means)
        if self.means.dim() < 2:
            raise ValueError(f"means must have shape (K, *event_shape), got {tuple(self.means.shape)}")
        self.stds = torch.broadcast_to(_f64(stds), self.means.shape).clone()
        K = self.means.shape[0]
        w = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else _f64(weights)
        if w.shape != (K,) or (w < 0).any():
            raise ValueError(f"weights must be (K,) = ({K},) and non-negative, got {w.tolist()}")
        self.log_weights = torch.log(w / w.sum())
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"prediction must be 'eps', 'x0' or 'v', got {prediction!r}")
        self.prediction = prediction
        self.var_values = var_values
        self._knots = schedule.timesteps.astype(np.float64)
        self._log_alpha_bar = np.log(schedule.alpha_bar)

    # ------------------------------------------------------------------ data facts
    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def data_mean(self) -> torch.Tensor:
        """E[x_0] (event shape)."""
        return torch.einsum("k,k...->...", self.weights, self.means)

    def data_variance(self) -> torch.Tensor:
        """Var[x_0] per dimension (event shape)."""
        second = torch.einsum("k,k...->...", self.weights, self.stds**2 + self.means**2)
        return second - self.data_mean() ** 2

    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """n draws of x_0 (CPU)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n,) + self.event_shape, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k] * z).to(dtype)

    # ------------------------------------------------------------------ time
    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at training timesteps ``t`` (B,), float64, interpolated between steps."""
        tau = np.asarray(torch.as_tensor(t).detach().cpu(), dtype=np.float64).reshape(-1)
        if tau.min() < self._knots[0] - 1e-9 or tau.max() > self._knots[-1] + 1e-9:
            raise ValueError(f"t must lie in [{self._knots[0]:g}, {self._knots[-1]:g}], got {tau.min():g}..{tau.max():g}")
        return torch.from_numpy(np.exp(np.interp(tau, self._knots, self._log_alpha_bar)))

    def _index(self, t: torch.Tensor) -> np.ndarray:
        """The schedule index of integer training timesteps."""
        tau = np.asarray(torch.as_tensor(t).detach().cpu()).reshape(-1)
        idx = np.searchsorted(self.schedule.timesteps, tau)
        idx = np.clip(idx, 0, self.schedule.T - 1)
        if not np.array_equal(self.schedule.timesteps[idx], tau):
            raise ValueError(f"var_values='exact' needs timesteps of the schedule, got {tau.tolist()[:8]}")
        return idx

    # ------------------------------------------------------------------ posterior
    def _components(self, x_t: torch.Tensor, alpha_bar: torch.Tensor):
        """Responsibilities (B, K) and per-component E[x0|x_t,k], Var[x0|x_t,k] (B, K, *event)."""
        if tuple(x_t.shape[1:]) != self.event_shape:
            raise ValueError(f"x_t must have shape (B, {self.event_shape}), got {tuple(x_t.shape)}")
        x = x_t.detach().to(torch.float64)
        ab = _f64(alpha_bar).to(x.device).reshape(-1)
        ab = ab.expand(x.shape[0]) if ab.numel() == 1 else ab
        ab = ab.reshape((-1, 1) + (1,) * len(self.event_shape))
        m, s2 = self.means.to(x.device)[None], self.stds.to(x.device)[None] ** 2
        xk = x[:, None]
        var_t = ab * s2 + 1.0 - ab
        log_pdf = -0.5 * (torch.log(2 * math.pi * var_t) + (xk - ab.sqrt() * m) ** 2 / var_t)
        log_r = log_pdf.flatten(2).sum(-1) + self.log_weights.to(x.device)
        resp = torch.softmax(log_r, dim=1)
        post_mean = m + ab.sqrt() * s2 * (xk - ab.sqrt() * m) / var_t
        post_var = s2 * (1.0 - ab) / var_t
        return resp, post_mean, post_var, log_r

    def x0_mean(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_t] (float64)."""
        resp, post_mean, _, _ = self._components(x_t, alpha_bar)
        return torch.einsum("bk,bk...->b...", resp, post_mean)

    def x0_variance(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """Var[x_0 | x_t] per dimension (float64): within- plus between-component variance."""
        resp, post_mean, post_var, _ = self._components(x_t, alpha_bar)
        second = torch.einsum("bk,bk...->b...", resp, post_var + post_mean**2)
        return second - torch.einsum("bk,bk...->b...", resp, post_mean) ** 2

    def eps(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """E[eps | x_t] (float64)."""
        ab = self._broadcast(alpha_bar, x_t)
        return (x_t.double() - ab.sqrt() * self.x0_mean(x_t, alpha_bar)) / (1.0 - ab).sqrt()

    def score(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """grad log q_t(x_t) = -E[eps | x_t] / sqrt(1 - ab) (float64)."""
        ab = self._broadcast(alpha_bar, x_t)
        return -self.eps(x_t, alpha_bar) / (1.0 - ab).sqrt()

    def log_prob(self, x: torch.Tensor, alpha_bar: torch.Tensor | float = 1.0) -> torch.Tensor:
        """log q_t(x) in nats per example (B,); alpha_bar = 1 is the data density itself."""
        _, _, _, log_r = self._components(x, _f64(alpha_bar))
        return torch.logsumexp(log_r, dim=1)

    def _broadcast(self, alpha_bar: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ab = _f64(alpha_bar).to(x.device).reshape(-1)
        ab = ab.expand(x.shape[0]) if ab.numel() == 1 else ab
        return ab.reshape((-1,) + (1,) * (x.dim() - 1))

    # ------------------------------------------------------------------ the model contract
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        ab = self.alpha_bar(t)
        abx = self._broadcast(ab, x_t)
        x0 = self.x0_mean(x_t, ab)
        eps = (x_t.double() - abx.sqrt() * x0) / (1.0 - abx).sqrt()
        if self.prediction == "eps":
            out = eps
        elif self.prediction == "x0":
            out = x0
        else:
            out = abx.sqrt() * eps - (1.0 - abx).sqrt() * x0
        if self.var_values is not None:
            out = torch.cat([out, self._var_output(x_t, t, ab)], dim=1)
        return out.to(x_t.dtype)

    def _var_output(self, x_t: torch.Tensor, t: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        if self.var_values != "exact":
            return torch.full(x_t.shape, float(self.var_values), dtype=torch.float64, device=x_t.device)
        idx = self._index(t)
        sched = self.schedule
        coef_x0 = torch.from_numpy(sched.posterior_mean_coef_x0[idx])
        beta_tilde = torch.from_numpy(sched.posterior_variance[idx])
        min_log = torch.from_numpy(sched.posterior_log_variance[idx])
        max_log = torch.from_numpy(sched.log_betas[idx])
        b = lambda v: self._broadcast(v, x_t)  # noqa: E731
        variance = b(beta_tilde) + b(coef_x0) ** 2 * self.x0_variance(x_t, ab)
        return 2.0 * (torch.log(variance) - b(min_log)) / (b(max_log) - b(min_log)) - 1.0


def gaussian_oracle(schedule: dk.Schedule, mean, std, prediction: str = "eps",
                    var_values: float | str | None = None) -> MixtureOracle:
    """The exact denoiser of x_0 ~ N(mean, diag(std^2)); ``mean`` has the event shape."""
    mean = _f64(mean)
    return MixtureOracle(schedule, mean[None], torch.broadcast_to(_f64(std), mean.shape)[None],
                         prediction=prediction, var_values=var_values)


def mixture_oracle(schedule: dk.Schedule, means, stds, weights=None, prediction: str = "eps",
                   var_values: float | str | None = None) -> MixtureOracle:
    """The exact denoiser of a diagonal Gaussian mixture; see :class:`MixtureOracle`."""
    return MixtureOracle(schedule, means, stds, weights, prediction=prediction, var_values=var_values)
