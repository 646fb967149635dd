"""Training objectives and timestep samplers.

- L_simple (DDPM eq. 14): mean squared error on the prediction target, averaged over dimensions.
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
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from .predictions import check_finite, check_same_shape
if TYPE_CHECKING:   # losses take the process as an argument; diffusion.py imports this module
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
    "check_levels",
    "UniformSampler",
    "ImportanceSampler",
    "make_timestep_sampler",
]

OBJECTIVES = ("simple", "vlb", "hybrid")
LN2 = math.log(2.0)


def check_levels(levels: int | None, x0: torch.Tensor) -> None:
    """``levels`` must be None (continuous data) or an integer >= 2 with x0 inside [-1, 1]."""
    if levels is None:
        return
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be None or an integer >= 2, got levels={levels!r}")
    lo, hi = float(x0.min()), float(x0.max())
    if lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
        raise ValueError(
            f"x0 must lie in [-1, 1] for a discretized decoder (levels={levels}), got values in "
            f"[{lo:.4g}, {hi:.4g}]; pass levels=None for continuous data")


def _working_dtype(x: torch.Tensor) -> torch.dtype:
    """At least float32 (half-precision model outputs are promoted), float64 stays float64."""
    return torch.promote_types(x.dtype, torch.float32)


def vlb_term(process: GaussianDiffusion, out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
             t: torch.Tensor, levels: int | None = 256, clip_x0: bool = False) -> torch.Tensor:
    """L_t per example in bits/dim, from a raw model output at (x_t, t).

    t > 0: KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)).
    t = 0: -log p_theta(x_0 | x_1), with the discretized Gaussian decoder on ``levels`` bins for
    data in [-1, 1], or a continuous Gaussian density when ``levels`` is None (then the value is
    a density and may be negative).
    """
    t = process.check_t(t, x_t)
    check_same_shape("x0", x0, "x_t", x_t)
    p = process.p_from_output(out, x_t, t, clip_x0=clip_x0)
    return vlb_from_prediction(process, p.mean, p.log_variance, x0, x_t, t, levels)


def vlb_from_prediction(process: GaussianDiffusion, mean: torch.Tensor, log_variance: torch.Tensor,
                         x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                         levels: int | None) -> torch.Tensor:
    true_mean, _, true_log_variance = process.q_posterior(x0, x_t, t, validate=False)
    kl = mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance)) / LN2
    half_log_scale = 0.5 * log_variance
    if levels is None:
        nll = -continuous_gaussian_log_likelihood(x0, mean, half_log_scale)
    else:
        nll = -discretized_gaussian_log_likelihood(x0, mean, half_log_scale, levels=levels)
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
    validate: bool = True,
    **cond: Any,
) -> dict[str, torch.Tensor]:
    """Per-example losses for a batch: ``{"loss", "mse", "vlb", "t"}`` (each shape (B,)).

    ``t`` defaults to uniform draws; pass the timesteps of a :class:`ImportanceSampler` and
    multiply ``loss`` by its weights for importance sampling. ``vlb`` is L_t in bits/dim
    (always computed for reporting; in ``hybrid`` its gradient reaches only the variance
    half of a learned_range output). ``objective="vlb"`` optimises T * L_t, an unbiased
    estimate of the whole bound (improved-diffusion's "rescaled KL"); ``hybrid`` adds
    ``hybrid_lambda * T * L_t`` to L_simple (iDDPM: L_simple + 0.001 L_vlb). ``levels`` is the
    number of quantisation levels of the data (None: continuous data); with ``vlb`` or
    ``hybrid`` and a level count, x0 must lie in [-1, 1]. ``validate=False`` skips the argument
    checks that read values back to the host (finite inputs, t in range, x0 in [-1, 1]): a
    trainer checks its data once and then calls this in its hot loop without a host sync.
    """
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got objective={objective!r}")
    if not isinstance(x0, torch.Tensor) or x0.dim() < 1:
        raise ValueError(f"x0 must be a batch tensor (B, ...), got {type(x0).__name__}")
    if validate:
        check_finite("x0", x0)
        if objective != "simple":
            check_levels(levels, x0)
    B = x0.shape[0]
    if t is None:
        t = torch.randint(0, process.T, (B,), device=x0.device, generator=generator)
    t = process.check_t(t, x0) if validate else t.long()
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif validate:
        check_finite("noise", noise)
    x_t = process.q_sample(x0, t, noise, validate=False)   # t and x0 checked above; q_sample checks the shape
    out = process.model_output(model, x_t, t, validate=False, **cond)
    pred, var_values = process.split_output(out)
    dtype = _working_dtype(out)
    mse = mean_flat((process.target(x0, noise, t, validate=False).to(dtype) - pred.to(dtype)) ** 2)

    if objective == "hybrid" and var_values is not None:
        frozen = torch.cat([pred.detach(), var_values], dim=1)   # stop-gradient on the mean
    elif objective == "hybrid":
        frozen = out.detach()   # fixed variance: nothing in L_vlb to learn beyond L_simple
    else:
        frozen = out
    p = process.p_from_output(frozen.to(dtype), x_t.to(dtype), t, validate=False)
    vlb = vlb_from_prediction(process, p.mean, p.log_variance, x0.to(dtype), x_t.to(dtype), t, levels)

    if objective == "simple":
        loss = mse
    elif objective == "vlb":
        loss = vlb * process.T
    else:
        loss = mse + hybrid_lambda * process.T * vlb
    return {"loss": loss, "mse": mse, "vlb": vlb.detach() if objective == "simple" else vlb, "t": t}


def _host_array(x: Any) -> np.ndarray:
    """``x`` flattened as a numpy array, in one device-to-host copy (none for a CPU tensor)."""
    x = torch.as_tensor(x).detach().reshape(-1)
    return (x if x.device.type == "cpu" else x.cpu()).numpy()


class UniformSampler:
    """t ~ Uniform{0, ..., T-1}; weights are all 1."""

    def __init__(self, T: int):
        if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"T must be an integer >= 1, got T={T!r}")
        self.T = int(T)

    def probabilities(self) -> np.ndarray:
        return np.full(self.T, 1.0 / self.T)

    def sample(self, batch_size: int, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, weights): timesteps drawn from p, and the importance weights 1 / (T p_t)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got batch_size={batch_size!r}")
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
    uniformly. A small ``uniform_prob`` is mixed in so that every t stays reachable. Multiply
    the per-example loss by the returned weights 1 / (T p_t): then E_t~p[w_t L_t] equals the
    uniform average (1/T) sum_t L_t, so the objective is unchanged, only its variance.
    """

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(T)
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be an integer >= 1, got history={history!r}")
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must lie in [0, 1], got uniform_prob={uniform_prob!r}")
        self.history = history
        self.uniform_prob = uniform_prob
        self.losses = np.zeros((self.T, history), dtype=np.float64)
        self.counts = np.zeros(self.T, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool((self.counts >= self.history).all())

    def probabilities(self) -> np.ndarray:
        if not self.warmed_up():
            return np.full(self.T, 1.0 / self.T)
        w = np.sqrt(np.mean(self.losses**2, axis=-1))
        if not w.sum() > 0:   # every recorded loss is 0: nothing to prefer
            return np.full(self.T, 1.0 / self.T)
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.T

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the per-example losses of the timesteps ``t`` (both shape (B,)).

        Each argument reaches the host in one transfer (none for CPU tensors, which a trainer's
        ``t`` and its gathered losses are); every check then runs in numpy, with no tensor read."""
        t_host = _host_array(t)
        loss_host = _host_array(torch.as_tensor(losses).detach().double())
        if t_host.shape != loss_host.shape:
            raise ValueError(f"losses must have the shape of t {t_host.shape}, got {loss_host.shape}")
        if np.issubdtype(t_host.dtype, np.floating) or (t_host.size and (t_host.min() < 0 or t_host.max() >= self.T)):
            raise ValueError(f"t must hold integer timesteps in [0, {self.T}), got t={t_host.tolist()[:8]}")
        if not np.isfinite(loss_host).all():
            raise ValueError("losses contains NaN or infinite values")
        for ti, li in zip(t_host.tolist(), loss_host.tolist()):
            if self.counts[ti] >= self.history:   # full: drop the oldest
                self.losses[ti, :-1] = self.losses[ti, 1:]
                self.losses[ti, -1] = li
            else:
                self.losses[ti, self.counts[ti]] = li
            self.counts[ti] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"losses": self.losses.tolist(), "counts": self.counts.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        losses = np.asarray(state["losses"], dtype=np.float64)
        counts = np.asarray(state["counts"], dtype=np.int64)
        if losses.shape != (self.T, self.history) or counts.shape != (self.T,):
            raise ValueError(
                f"state must hold losses of shape {(self.T, self.history)} and counts of shape "
                f"{(self.T,)}, got {losses.shape} and {counts.shape}")
        self.losses, self.counts = losses, counts


def make_timestep_sampler(name: str, T: int) -> UniformSampler:
    """``"uniform"`` or ``"importance"``."""
    if name == "uniform":
        return UniformSampler(T)
    if name == "importance":
        return ImportanceSampler(T)
    raise ValueError(f"timestep sampler must be 'uniform' or 'importance', got sampler={name!r}")
