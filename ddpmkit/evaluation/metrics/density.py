"""Mean log-density of samples under a known true density (toy data with a closed-form p)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["LogDensity", "mean_log_density"]


@dataclass(frozen=True)
class LogDensity:
    """Mean of log p_data(x) over the samples, its standard error, and the sample count (nats)."""

    mean: float
    stderr: float
    count: int


@torch.no_grad()
def mean_log_density(samples: torch.Tensor, log_density: Callable[[torch.Tensor], torch.Tensor]) -> LogDensity:
    """E_{x ~ model} log p_data(x), estimated on ``samples`` (N, ...) with the true ``log_density``.

    ``log_density`` maps a batch to N log-densities in nats. Higher means the samples sit where
    the data has mass; it does not see missing modes (pair it with recall or MMD). The value for
    samples drawn from p_data itself, -H(p_data), is the reference.
    """
    if samples.ndim < 1 or samples.shape[0] < 2:
        raise ValueError(f"samples needs at least 2 rows, got shape {tuple(samples.shape)}")
    values = log_density(samples).detach().to(torch.float64).reshape(-1)
    if values.shape[0] != samples.shape[0]:
        raise ValueError(f"log_density returned {values.shape[0]} values for {samples.shape[0]} samples")
    if not torch.isfinite(values).all():
        raise ValueError("log_density returned NaN or inf (a sample outside the support?)")
    return LogDensity(float(values.mean()), float(values.std() / math.sqrt(values.shape[0])),
                      int(values.shape[0]))
