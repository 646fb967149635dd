"""The Frechet distance between Gaussians fitted to feature sets (Heusel et al. 2017, FID).

    FD = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2})

It is the squared 2-Wasserstein distance between N(mu_1, S_1) and N(mu_2, S_2) (Dowson &
Landau 1982). The trace term needs no non-symmetric matrix square root: with any factor
S_1 = H H^T, the products S_1 S_2 = H (H^T S_2) and H^T S_2 H share their non-zero eigenvalues,
and H^T S_2 H is symmetric PSD. So tr((S_1 S_2)^{1/2}) = sum_i sqrt(lambda_i(H^T S_2 H)), from
two symmetric eigen-decompositions in float64. H = V_r diag(sqrt(lambda_r)) keeps only the
eigenvectors of S_1 whose eigenvalues exceed rounding (numpy's rank tolerance), so a singular
S_1 (fewer samples than features) adds no sqrt-of-rounding noise and needs no epsilon.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._common import as_feature_matrix, as_float64

__all__ = ["FeatureStats", "frechet_distance", "frechet_distance_from_features", "sqrtm_psd"]


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigh route).

    Eigenvalues below zero (rounding) are set to zero.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * eigenvalues.clamp(min=0.0).sqrt()) @ eigenvectors.T


@dataclass(frozen=True)
class FeatureStats:
    """Mean and (unbiased, ddof=1) covariance of a feature set, and how many samples made them."""

    mean: np.ndarray        # (D,) float64
    covariance: np.ndarray  # (D, D) float64
    count: int

    @classmethod
    def from_features(cls, features: torch.Tensor | np.ndarray) -> "FeatureStats":
        """Fit the Gaussian to ``features`` of shape (N, D), N >= 2."""
        f = as_feature_matrix(features, "features", min_rows=2)
        centered = f - f.mean(0)
        covariance = centered.T @ centered / (f.shape[0] - 1)
        return cls(f.mean(0).cpu().numpy(), covariance.cpu().numpy(), int(f.shape[0]))

    def save(self, path: str | Path) -> None:
        """Write the statistics as a .npz file (plain arrays, no pickles)."""
        np.savez(path, mean=self.mean, covariance=self.covariance, count=np.int64(self.count))

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        """Read statistics written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"].astype(np.float64), data["covariance"].astype(np.float64),
                       int(data["count"]))


def frechet_distance(mean1: torch.Tensor | np.ndarray, cov1: torch.Tensor | np.ndarray,
                     mean2: torch.Tensor | np.ndarray, cov2: torch.Tensor | np.ndarray) -> float:
    """FD between N(mean1, cov1) and N(mean2, cov2) (Heusel et al. 2017, eq. 6), float64.

    The covariances must be symmetric positive semi-definite of matching size. The result is
    clamped at 0 (rounding can make identical inputs give -1e-13).
    """
    mu1 = as_float64(mean1, "mean1", ndim=1)
    mu2 = as_float64(mean2, "mean2", ndim=1).to(mu1.device)
    s1 = as_float64(cov1, "cov1", ndim=2).to(mu1.device)
    s2 = as_float64(cov2, "cov2", ndim=2).to(mu1.device)
    d = mu1.shape[0]
    for name, value, shape in (("mean2", mu2, (d,)), ("cov1", s1, (d, d)), ("cov2", s2, (d, d))):
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match mean1, got {tuple(value.shape)}")
    eigenvalues, eigenvectors = torch.linalg.eigh((s1 + s1.T) / 2)
    keep = eigenvalues > eigenvalues.abs().max() * d * torch.finfo(torch.float64).eps
    factor = eigenvectors[:, keep] * eigenvalues[keep].sqrt()  # S_1 = factor @ factor.T
    middle = factor.T @ s2 @ factor
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0.0).sqrt().sum()
    distance = ((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2.0 * cross
    return max(float(distance), 0.0)


def frechet_distance_from_features(features1: torch.Tensor | np.ndarray | FeatureStats,
                                   features2: torch.Tensor | np.ndarray | FeatureStats) -> float:
    """FD between Gaussians fitted to two feature sets (N, D) (or precomputed statistics)."""
    stats = [f if isinstance(f, FeatureStats) else FeatureStats.from_features(f)
             for f in (features1, features2)]
    return frechet_distance(stats[0].mean, stats[0].covariance, stats[1].mean, stats[1].covariance)
