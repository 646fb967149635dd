"""Shared helpers of the metrics: input checking and chunked kernel sums, in float64."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

KernelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def as_float64(x: torch.Tensor | np.ndarray, name: str, ndim: int | None = None) -> torch.Tensor:
    """``x`` as a finite float64 tensor (on its device; MPS, which has no float64, goes to CPU)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.device.type == "mps":
        x = x.cpu()
    x = x.detach().to(torch.float64)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def as_feature_matrix(x: torch.Tensor | np.ndarray, name: str, min_rows: int = 1) -> torch.Tensor:
    """A (N, D) float64 feature matrix; a (N,) vector is read as N one-dimensional points."""
    x = as_float64(x, name)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) matrix, got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")
    return x


def same_width(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} has {a.shape[1]} features but {name_b} has {b.shape[1]}")
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}")


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """The given generator, or a fresh CPU one seeded with 0 (so results are reproducible)."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return generator


def rows_per_chunk(columns: int, chunk: int | None = None) -> int:
    """Rows of a (rows, columns) float64 block to build at once: ``chunk``, or ~16M entries (128 MB)."""
    if chunk is not None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        return chunk
    return max(1, min(8192, (1 << 24) // max(columns, 1)))


def kernel_sums(kernel: KernelFn, x: torch.Tensor, y: torch.Tensor | None = None,
                chunk: int | None = None) -> tuple[float, float]:
    """Sum of every entry of ``kernel(x, y)`` and, when ``y`` is None (``y = x``), of its diagonal.

    The Gram matrix is built ``chunk`` rows at a time (default: :func:`rows_per_chunk`).
    """
    other = x if y is None else y
    chunk = rows_per_chunk(other.shape[0], chunk)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    diagonal = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = kernel(x[start:start + chunk], other)
        total += block.sum()
        if y is None:
            diagonal += block[:, start:start + chunk].diagonal().sum()
    return float(total), float(diagonal)


def mmd2_from_kernel(kernel: KernelFn, x: torch.Tensor, y: torch.Tensor, unbiased: bool = True,
                     chunk: int | None = None) -> float:
    """MMD^2 between the samples ``x`` (m) and ``y`` (n) under ``kernel`` (Gretton et al. 2012).

    Unbiased (the U-statistic, eq. 3 there): within-set sums leave out the diagonal,
        sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1)) - 2 sum k(x_i, y_j) / (mn);
    biased (the V-statistic, eq. 5): diagonals kept, every mean over m^2 / n^2; it is the squared
    RKHS distance between the empirical mean embeddings, so >= 0 and 0 for identical sets.
    """
    m, n = x.shape[0], y.shape[0]
    sum_xx, diag_xx = kernel_sums(kernel, x, chunk=chunk)
    sum_yy, diag_yy = kernel_sums(kernel, y, chunk=chunk)
    sum_xy, _ = kernel_sums(kernel, x, y, chunk=chunk)
    if unbiased:
        if m < 2 or n < 2:
            raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {m} and {n}")
        return ((sum_xx - diag_xx) / (m * (m - 1)) + (sum_yy - diag_yy) / (n * (n - 1))
                - 2.0 * sum_xy / (m * n))
    return sum_xx / m**2 + sum_yy / n**2 - 2.0 * sum_xy / (m * n)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances (len(a), len(b)), clamped at 0 against rounding."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_(min=0.0)
