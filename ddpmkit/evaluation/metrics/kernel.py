"""Kernel two-sample distances: KID (Binkowski et al. 2018) and the RBF-kernel MMD (Gretton et al. 2012)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ._common import (as_feature_matrix, default_generator, mmd2_from_kernel, same_width,
                      squared_distances)

__all__ = ["KIDResult", "polynomial_kernel", "kernel_inception_distance", "rbf_mmd2",
           "median_heuristic_bandwidth"]


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3,
                      coef0: float = 1.0) -> torch.Tensor:
    """k(x, y) = (x . y / d + coef0) ** degree, KID's cubic kernel (Binkowski et al. 2018, sec. 3)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


@dataclass(frozen=True)
class KIDResult:
    """KID: the mean and standard deviation (ddof=1) over subsets of the unbiased MMD^2."""

    mean: float
    std: float
    num_subsets: int
    subset_size: int


def kernel_inception_distance(
    reference: torch.Tensor | np.ndarray,
    candidate: torch.Tensor | np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> KIDResult:
    """KID between two feature sets (Binkowski et al. 2018, "Demystifying MMD GANs", sec. 3).

    The unbiased MMD^2 with the cubic polynomial kernel, averaged over ``num_subsets`` random
    subsets of ``subset_size`` rows drawn without replacement from each set (the size is cut to
    the smaller set's size). Unlike FID it is unbiased in the number of samples, so its floor
    between two samples of one distribution is 0 (up to noise). ``generator`` (default: seeded 0)
    draws the subsets.
    """
    ref = as_feature_matrix(reference, "reference", min_rows=2)
    cand = as_feature_matrix(candidate, "candidate", min_rows=2)
    same_width(ref, cand, "reference", "candidate")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    generator = default_generator(generator)
    size = min(subset_size, ref.shape[0], cand.shape[0])
    values = []
    for _ in range(num_subsets):
        rows_ref = torch.randperm(ref.shape[0], generator=generator)[:size].to(ref.device)
        rows_cand = torch.randperm(cand.shape[0], generator=generator)[:size].to(cand.device)
        values.append(mmd2_from_kernel(polynomial_kernel, ref[rows_ref], cand[rows_cand]))
    spread = float(np.std(values, ddof=1)) if num_subsets > 1 else float("nan")
    return KIDResult(float(np.mean(values)), spread, num_subsets, size)


def median_heuristic_bandwidth(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray | None = None,
                               max_points: int = 2000) -> float:
    """The median pairwise Euclidean distance in ``x`` pooled with ``y`` (Gretton et al. 2012, sec. 8).

    With ``y=None`` only ``x`` is used: a kernel fixed by the reference data alone keeps scores
    of different models comparable. Beyond ``max_points`` points an evenly spaced subset is used.
    """
    pooled = as_feature_matrix(x, "x")
    if y is not None:
        pooled = torch.cat([pooled, as_feature_matrix(y, "y").to(pooled.device)])
    if pooled.shape[0] < 2:
        raise ValueError(f"median_heuristic_bandwidth needs at least 2 points, got {pooled.shape[0]}")
    if pooled.shape[0] > max_points:
        pooled = pooled[torch.linspace(0, pooled.shape[0] - 1, max_points).round().long()]
    rows, cols = torch.triu_indices(pooled.shape[0], pooled.shape[0], offset=1)
    distances = squared_distances(pooled, pooled)[rows, cols].sqrt()
    bandwidth = float(distances.median())
    if bandwidth <= 0.0:
        raise ValueError("median_heuristic_bandwidth: the median pairwise distance is 0; pass bandwidths")
    return bandwidth


def rbf_mmd2(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    bandwidths: float | Sequence[float] | None = None,
    unbiased: bool = False,
) -> float:
    """MMD^2 with the Gaussian kernel k(a, b) = mean_s exp(-|a - b|^2 / (2 s^2)) (Gretton et al. 2012).

    ``bandwidths``: one s or several (the kernel is their average); None takes the median
    heuristic. ``unbiased=False`` (default) gives the V-statistic, the squared distance between
    the empirical mean embeddings: >= 0 and exactly 0 for identical sets. ``unbiased=True`` gives
    the U-statistic, whose expectation is the population MMD^2 (it can be slightly negative).
    Works on raw coordinates (2-D points, vectors) or on features.
    """
    a = as_feature_matrix(x, "x")
    b = as_feature_matrix(y, "y")
    same_width(a, b, "x", "y")
    if bandwidths is None:
        bandwidths = [median_heuristic_bandwidth(a, b)]
    elif isinstance(bandwidths, (int, float)):
        bandwidths = [float(bandwidths)]
    scales = torch.tensor([float(s) for s in bandwidths], dtype=torch.float64, device=a.device)
    if scales.numel() == 0 or not bool((scales > 0).all()):
        raise ValueError(f"bandwidths must be positive numbers, got {list(bandwidths)}")

    def kernel(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        d2 = squared_distances(p, q)
        return torch.exp(-d2[..., None] / (2.0 * scales**2)).mean(-1)

    return mmd2_from_kernel(kernel, a, b, unbiased=unbiased)
