"""The parameterisations of a Gaussian diffusion model's output, and the argument checks they share.

With a = sqrt(alpha_bar) and s = sqrt(1 - alpha_bar), x_t = a x_0 + s eps (DDPM eq. 4) and
v = a eps - s x_0 (Salimans & Ho 2022). Each conversion is written once here and used by the
discrete process (table entries gathered at integer t) and by the continuous view and its
denoiser (values at any noise level).
"""
from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["PREDICTIONS", "DenoiserBase", "time_dtype", "batch_sigma", "per_example", "check_choice", "check_finite", "check_same_shape", "x0_from_eps_at",
           "eps_from_x0_at", "v_from_at", "x0_from_v_at", "eps_from_v_at", "x0_eps_from_prediction_at",
           "x0_eps_from_prediction"]

PREDICTIONS = ("eps", "x0", "v")


def check_choice(name: str, value: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {name}={value!r}")
    return value


def check_finite(name: str, x: torch.Tensor) -> None:
    """One-line ValueError if ``x`` holds NaN or inf."""
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values (shape {tuple(x.shape)})")


def check_same_shape(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """One-line ValueError unless ``x`` has exactly ``ref``'s shape (no silent broadcasting)."""
    if not isinstance(x, torch.Tensor) or x.shape != ref.shape:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {got}")


# ---------------------------------------------------------------------- the conversions, once
# a and s are tensors (table entries gathered for integer t) or Python floats (a noise level
# computed on the host in float64 by the discrete chain in continuous time, ddpmkit.core.discrete_time).
def x0_from_eps_at(x_t: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (x_t - s * eps) / a


def eps_from_x0_at(x_t: torch.Tensor, x0: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (x_t - a * x0) / s


def v_from_at(x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return a * eps - s * x0


def x0_from_v_at(x_t: torch.Tensor, v: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return a * x_t - s * v


def eps_from_v_at(x_t: torch.Tensor, v: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return s * x_t + a * v


def x0_eps_from_prediction_at(prediction: str, x_t: torch.Tensor, pred: torch.Tensor, a: torch.Tensor,
                              s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from an eps / x0 / v prediction, given a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar)."""
    if prediction == "eps":
        return x0_from_eps_at(x_t, pred, a, s), pred
    if prediction == "x0":
        return pred, eps_from_x0_at(x_t, pred, a, s)
    if prediction == "v":
        return x0_from_v_at(x_t, pred, a, s), eps_from_v_at(x_t, pred, a, s)
    raise ValueError(f"prediction must be one of {list(PREDICTIONS)}, got prediction={prediction!r}")


def x0_eps_from_prediction(prediction: str, x: torch.Tensor, alpha_bar: torch.Tensor | float,
                           pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from an eps / x0 / v prediction at a real-valued ``alpha_bar`` (float or tensor)."""
    if isinstance(alpha_bar, torch.Tensor):
        alpha_bar = alpha_bar.to(dtype=x.dtype, device=x.device)
        return x0_eps_from_prediction_at(prediction, x, pred, alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt())
    return x0_eps_from_prediction_at(prediction, x, pred, math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar))


# ---------------------------------------------------------------------- what every denoiser shares
def time_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of noise levels and network times for data of ``dtype``: float32, or float64 for
    float64 data, never a half precision (t = 937.3 would be 936 in bfloat16)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-example values (B,) as a column (B, 1, ..., 1) in ``like``'s dtype, to scale a batch shaped as ``like``."""
    return values.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)


def batch_sigma(sigma: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """A tensor ``sigma`` of shape () or (B,) as (B,) on x_hat's device in :func:`time_dtype`."""
    batch = x_hat.shape[0]
    sigma_b = sigma.to(device=x_hat.device, dtype=time_dtype(x_hat.dtype)).reshape(-1)
    if sigma_b.numel() not in (1, batch):
        raise ValueError(f"sigma must be a float or a tensor of shape () or ({batch},), got shape {tuple(sigma.shape)}")
    return sigma_b.expand(batch) if sigma_b.numel() == 1 else sigma_b


class DenoiserBase:
    """What every denoiser ``D(x_hat, sigma, **cond)`` shares: its process (for the noise-level
    range), the network, and the optional clip of the x_0 estimate to [-1, 1] (images)."""

    def __init__(self, process: Any, model: Any, clip_x0: bool = False):
        self.process, self.model, self.clip_x0 = process, model, bool(clip_x0)

    @property
    def sigma_min(self) -> float:
        return self.process.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.process.sigma_max

    def finish(self, x0: torch.Tensor) -> torch.Tensor:
        return x0.clamp(-1.0, 1.0) if self.clip_x0 else x0
