"""Training objectives and timestep samplers.

- L_simple (DDPM eq. 14): mean squared error on the prediction target.
- L_t, the terms of the variational bound (DDPM eq. 5): KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
  for t > 0 and the decoder -log p(x_0|x_1) at t = 0 (discretized Gaussian, DDPM section 3.3).
  They are reported in **bits per dimension** (mean over the non-batch dimensions / log 2),
  as in improved-diffusion.
- L_vlb estimated from one sampled t as T * L_t; L_hybrid = L_simple + lambda * L_vlb with
  lambda = 0.001 and a stop-gradient on the mean inside L_vlb (iDDPM section 3.1).
- Timestep samplers: uniform, and iDDPM's importance sampling with p_t proportional to
  sqrt(E[L_t^2]) (iDDPM eq. 18), with 1/(T p_t) weights that keep the loss unbiased.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from .diffusion import GaussianDiffusion
from .gaussian import (
    continuous_gaussian_log_likelihood,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)

__all__ = [
    "OBJECTIVES",
    "training_losses",
    "vlb_term",
    "UniformSampler",
    "ImportanceSampler",
    "make_timestep_sampler",
]

OBJECTIVES = ("simple", "vlb", "hybrid")
LN2 = math.log(2.0)


def vlb_term(process: GaussianDiffusion, out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
             t: torch.Tensor, levels: int | None = 256, clip_x0: bool = False) -> torch.Tensor:
    """L_t per example in bits/dim, from a raw model output at (x_t, t).

    t > 0: KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)).
    t = 0: -log p_theta(x_0 | x_1), with the discretized Gaussian decoder on ``levels`` bins for
    data in [-1, 1], or a continuous Gaussian density when ``levels`` is None (then the value is
    a density and may be negative).
    """
    p = process.p_from_output(out, x_t, t, clip_x0=clip_x0)
    true_mean, _, true_log_variance = process.q_posterior(x0, x_t, t)
    kl = mean_flat(normal_kl(true_mean, true_log_variance, p.mean, p.log_variance)) / LN2
    half_log_scale = 0.5 * p.log_variance
    if levels is None:
        nll = -continuous_gaussian_log_likelihood(x0, p.mean, half_log_scale)
    else:
        nll = -discretized_gaussian_log_likelihood(x0, p.mean, half_log_scale, levels=levels)
    decoder = mean_flat(nll) / LN2
    return torch.where(t == 0, decoder, kl)


def training_losses(
    process: GaussianDiffusion,
    model: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    objective: str = "simple",
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    levels: int | None = 256,
    hybrid_lambda: float = 0.001,
    **cond: Any,
) -> dict[str, torch.Tensor]:
    """Per-example losses for a batch: ``{"loss", "mse", "vlb", "t"}`` (each shape (B,)).

    ``t`` defaults to uniform draws; pass the timesteps of a :class:`ImportanceSampler` and
    multiply ``loss`` by its weights for importance sampling. ``vlb`` is L_t in bits/dim
    (always computed for reporting; its gradient reaches only the variance in ``hybrid``).
    ``objective="vlb"`` optimises T * L_t, an unbiased estimate of the whole bound (iDDPM's
    rescaled KL). ``levels`` is the number of quantisation levels of the data (None:
    continuous data).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got objective={objective!r}")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or infinite values")
    B = x0.shape[0]
    if t is None:
        t = torch.randint(0, process.T, (B,), device=x0.device, generator=generator)
    t = process.check_t(t, x0)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = process.q_sample(x0, t, noise)
    out = process.model_output(model, x_t, t, **cond)
    pred, var_values = process.split_output(out)
    mse = mean_flat((process.target(x0, noise, t) - pred.float()) ** 2)

    if objective == "hybrid" and var_values is not None:
        frozen = torch.cat([pred.detach(), var_values], dim=1)   # stop-gradient on the mean
    elif objective == "hybrid":
        frozen = out.detach()   # fixed variance: nothing in L_vlb to learn beyond L_simple
    else:
        frozen = out
    vlb = vlb_term(process, frozen.float(), x0.float(), x_t.float(), t, levels=levels)

    if objective == "simple":
        loss = mse
    elif objective == "vlb":
        loss = vlb * process.T
    else:
        loss = mse + hybrid_lambda * process.T * vlb
    return {"loss": loss, "mse": mse, "vlb": vlb.detach() if objective == "simple" else vlb, "t": t}


class UniformSampler:
    """t ~ Uniform{0, ..., T-1}; weights are all 1."""

    def __init__(self, T: int):
        self.T = T

    def probabilities(self) -> np.ndarray:
        return np.full(self.T, 1.0 / self.T)

    def sample(self, batch_size: int, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, weights): timesteps and the importance weights 1 / (T p_t)."""
        p = torch.from_numpy(self.probabilities())
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.T * p[t])
        return t.to(device), weights.float().to(device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses (unused by the uniform sampler)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ImportanceSampler(UniformSampler):
    """iDDPM's importance sampling of t: p_t proportional to sqrt(E[L_t^2]) (iDDPM eq. 18).

    Keeps the last ``history`` losses of each t. Until every t has a full history, t is drawn
    uniformly. A small ``uniform_prob`` is mixed in so that every t stays reachable.
    """

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(T)
        self.history = history
        self.uniform_prob = uniform_prob
        self.losses = np.zeros((T, history), dtype=np.float64)
        self.counts = np.zeros(T, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool((self.counts >= self.history).all())

    def probabilities(self) -> np.ndarray:
        if not self.warmed_up():
            return np.full(self.T, 1.0 / self.T)
        w = np.sqrt(np.mean(self.losses**2, axis=-1))
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.T

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        for ti, li in zip(t.tolist(), losses.detach().float().cpu().tolist()):
            if self.counts[ti] >= self.history:
                self.losses[ti, :-1] = self.losses[ti, 1:]
                self.losses[ti, -1] = li
            else:
                self.losses[ti, self.counts[ti]] = li
            self.counts[ti] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"losses": self.losses.tolist(), "counts": self.counts.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = np.asarray(state["losses"], dtype=np.float64)
        self.counts = np.asarray(state["counts"], dtype=np.int64)


def make_timestep_sampler(name: str, T: int) -> UniformSampler:
    """``"uniform"`` or ``"importance"``."""
    if name == "uniform":
        return UniformSampler(T)
    if name == "importance":
        return ImportanceSampler(T)
    raise ValueError(f"timestep sampler must be 'uniform' or 'importance', got {name!r}")
