"""Improved precision and recall by k-NN manifolds (Kynkaanniemi et al. 2019, sec. 3).

Each feature set's manifold is the union of balls around its points, each ball reaching the
point's k-th nearest neighbour in the same set. Precision: the fraction of generated samples
inside the real manifold; recall: the fraction of real samples inside the generated manifold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._common import as_feature_matrix, rows_per_chunk, same_width, squared_distances

__all__ = ["PrecisionRecall", "knn_radii", "fraction_in_manifold", "precision_recall"]


def knn_radii(points: torch.Tensor | np.ndarray, k: int = 3, chunk: int | None = None) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set, shape (N,).

    The point itself (distance 0) is not counted; duplicates of it are.
    """
    p = as_feature_matrix(points, "points")
    if not 1 <= k < p.shape[0]:
        raise ValueError(f"k must be in [1, {p.shape[0] - 1}] for {p.shape[0]} points, got k={k}")
    radii, chunk = [], rows_per_chunk(p.shape[0], chunk)
    for start in range(0, p.shape[0], chunk):
        d2 = squared_distances(p[start:start + chunk], p)
        rows = torch.arange(d2.shape[0], device=p.device)
        d2[rows, rows + start] = -1.0  # the point itself sorts first, whatever rounding says
        radii.append(d2.topk(k + 1, dim=1, largest=False).values[:, k].sqrt())
    return torch.cat(radii)


def fraction_in_manifold(queries: torch.Tensor | np.ndarray, support: torch.Tensor | np.ndarray,
                         radii: torch.Tensor, chunk: int | None = None) -> float:
    """Fraction of ``queries`` within distance ``radii[j]`` of some ``support[j]`` (ball edge included)."""
    q = as_feature_matrix(queries, "queries")
    s = as_feature_matrix(support, "support")
    same_width(q, s, "queries", "support")
    r2 = radii.to(device=s.device, dtype=torch.float64) ** 2
    if r2.shape != (s.shape[0],):
        raise ValueError(f"radii must have shape ({s.shape[0]},), got {tuple(radii.shape)}")
    inside, chunk = 0, rows_per_chunk(s.shape[0], chunk)
    for start in range(0, q.shape[0], chunk):
        d2 = squared_distances(q[start:start + chunk], s)
        inside += int((d2 <= r2[None, :]).any(dim=1).sum())
    return inside / q.shape[0]


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    k: int


def precision_recall(reference: torch.Tensor | np.ndarray, candidate: torch.Tensor | np.ndarray,
                     k: int = 3) -> PrecisionRecall:
    """Improved precision and recall of ``candidate`` (generated) against ``reference`` (real).

    Kynkaanniemi et al. 2019, eq. 1-3, with k = 3 as in the paper.
    """
    ref = as_feature_matrix(reference, "reference")
    cand = as_feature_matrix(candidate, "candidate")
    same_width(ref, cand, "reference", "candidate")
    precision = fraction_in_manifold(cand, ref, knn_radii(ref, k))
    recall = fraction_in_manifold(ref, cand, knn_radii(cand, k))
    return PrecisionRecall(precision, recall, k)
