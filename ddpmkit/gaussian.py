"""Gaussian densities and divergences, each written once (DDPM section 3.3, iDDPM section 2).

All functions work elementwise; callers reduce over dimensions. Values are in nats.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "continuous_gaussian_log_likelihood",
    "mean_flat",
]


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch dimension: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor,
              mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF by the tanh approximation used in DDPM's and iDDPM's code.

    Kept for comparison with their numbers; :func:`discretized_gaussian_log_likelihood` uses
    the exact CDF (``torch.special.ndtr``) by default.
    """
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, levels: int = 256,
    exact_cdf: bool = True,
) -> torch.Tensor:
    """log p(x) for data in [-1, 1] quantised to ``levels`` values (DDPM eq. 13).

    Each value owns a bin of width 2 / (levels - 1) centred on it; the two extreme bins reach
    to -inf and +inf. ``log_scale`` is the log standard deviation. Elementwise, in nats.
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got levels={levels}")
    half_bin = 1.0 / (levels - 1)
    cdf = torch.special.ndtr if exact_cdf else approx_standard_normal_cdf
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = cdf(inv_std * (centered + half_bin))
    cdf_minus = cdf(inv_std * (centered - half_bin))
    # log(cdf_plus) for the lowest bin; log(1 - cdf_minus) for the highest; log of the
    # difference elsewhere. log_ndtr keeps precision far in the tails.
    if exact_cdf:
        log_cdf_plus = torch.special.log_ndtr(inv_std * (centered + half_bin))
        log_one_minus_cdf_minus = torch.special.log_ndtr(-inv_std * (centered - half_bin))
    else:
        log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
        log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    lowest = -1.0 + half_bin   # x below this is the lowest level
    highest = 1.0 - half_bin   # x above this is the highest level
    return torch.where(x < lowest, log_cdf_plus,
                       torch.where(x > highest, log_one_minus_cdf_minus, log_delta))


def continuous_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """log N(x; mean, exp(log_scale)^2), elementwise, in nats (a density, not a probability)."""
    return -0.5 * math.log(2 * math.pi) - log_scale - 0.5 * ((x - mean) * torch.exp(-log_scale)) ** 2
