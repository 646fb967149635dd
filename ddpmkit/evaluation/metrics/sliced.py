"""Exact 1-D Wasserstein distances between samples and the sliced Wasserstein distance.

    W_p^p(mu, nu) = int_0^1 |F^{-1}(u) - G^{-1}(u)|^p du            (1-D, quantile functions)
    SW_p^p(mu, nu) = E_{theta ~ U(sphere)} W_p^p(theta . mu, theta . nu)   (Bonneel et al. 2015)
"""
from __future__ import annotations

import numpy as np
import torch

from ._common import as_feature_matrix, default_generator, same_width

__all__ = ["wasserstein_1d", "sliced_wasserstein", "random_directions"]


def _quantile_pieces(n: int, m: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pieces on which both empirical quantile functions (n and m equal-weight atoms) are constant.

    Returns the row each piece takes in the sorted first and second sample, and its width.
    """
    edges = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                       torch.arange(1, m + 1, dtype=torch.float64) / m,
                       torch.zeros(1, dtype=torch.float64)])
    edges = torch.unique(edges)  # sorted; duplicates within rounding merge into zero-width pieces below
    widths = edges[1:] - edges[:-1]
    middles = (edges[1:] + edges[:-1]) / 2
    rows_first = torch.clamp((middles * n).floor().long(), max=n - 1)
    rows_second = torch.clamp((middles * m).floor().long(), max=m - 1)
    return rows_first.to(device), rows_second.to(device), widths.to(device)


def wasserstein_1d(u: torch.Tensor | np.ndarray, v: torch.Tensor | np.ndarray, p: float = 2.0) -> torch.Tensor:
    """W_p^p between the empirical distributions of the columns of ``u`` (N, L) and ``v`` (M, L).

    Exact for any N and M (the quantile functions are compared piece by piece). A (N,) vector
    is one column. Returns the L values of W_p^p (not their p-th root), float64.
    """
    if p < 1:
        raise ValueError(f"p must be >= 1, got p={p}")
    a = as_feature_matrix(u, "u")
    b = as_feature_matrix(v, "v")
    same_width(a, b, "u", "v")
    a, b = a.sort(dim=0).values, b.sort(dim=0).values
    rows_a, rows_b, widths = _quantile_pieces(a.shape[0], b.shape[0], a.device)
    return (widths[:, None] * (a[rows_a] - b[rows_b]).abs() ** p).sum(0)


def random_directions(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` directions uniform on the unit sphere in R^dim, as columns (dim, count), float64."""
    directions = torch.randn(dim, count, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=0, keepdim=True)


def sliced_wasserstein(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    num_projections: int = 256,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> float:
    """SW_p between point sets (N, D) and (M, D): (mean over random directions of W_p^p)^(1/p).

    Directions are drawn from ``generator`` (default: a CPU generator seeded 0). For D = 1 the
    only directions are +-1 and the result is the exact W_p.
    """
    a = as_feature_matrix(x, "x")
    b = as_feature_matrix(y, "y")
    same_width(a, b, "x", "y")
    if num_projections < 1:
        raise ValueError(f"num_projections must be >= 1, got {num_projections}")
    directions = random_directions(a.shape[1], num_projections, default_generator(generator)).to(a.device)
    per_direction = wasserstein_1d(a @ directions, b @ directions, p=p)
    return float(per_direction.mean() ** (1.0 / p))
