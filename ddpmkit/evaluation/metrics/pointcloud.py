"""Point-cloud distances and the PointFlow generation protocol (batched torch, chunked, CPU-friendly).

Conventions, as in PointFlow (Yang et al. 2019, metrics/evaluation_metrics.py) and Luo & Hu 2021:

* Chamfer distance, squared: CD(A, B) = mean_a min_b |a - b|^2 + mean_b min_a |a - b|^2 (the sum
  of the two directional means of squared nearest-neighbour distances, not their average).
* EMD for equal sizes: the assignment minimising the total Euclidean distance, exact (scipy's
  ``linear_sum_assignment``, Crouse 2016), reported as the mean distance of the matched pairs
  (PointFlow's ``match_cost / N``, there with an approximate matcher).
* MMD = mean over references of the distance to the nearest sample; COV = the fraction of
  references that are the nearest reference of at least one sample; 1-NNA = the accuracy of the
  leave-one-out 1-nearest-neighbour classifier on the union of references and samples (0.5 is
  ideal, 1 means the sets are told apart, below 0.5 means samples sit on references, e.g. copies).
  Ties go to the first index in (references, samples) order.

Squared distances come from one matmul of augmented coordinates, [x, |x|^2, 1] . [-2y, 1, |y|^2],
in the inputs' floating dtype (float32 clouds of unit scale: about 1e-6 absolute rounding; pass
float64 for reference values), on the inputs' device, in blocks of about ``chunk`` entries.
Exact EMD costs O(N^3) per pair (about 1 s for N = 2048 on one CPU core), so
``generation_metrics`` can compute it on ``emd_points`` random points per cloud.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from tqdm.auto import tqdm

__all__ = ["chamfer", "emd", "pairwise_chamfer", "pairwise_emd", "mmd_cov", "one_nna", "label_mix",
           "generation_metrics", "POINT_METRICS"]

POINT_METRICS = ("cd", "emd")
DEFAULT_CHUNK = 1 << 24          # entries of a block of squared distances (64 MB in float32)


def _as_clouds(x: Any, name: str) -> torch.Tensor:
    """``x`` as a (B, N, 3) floating tensor (numpy accepted), checked once at the API edge."""
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    if not x.is_floating_point():
        x = x.to(torch.float32)
    if x.ndim != 3 or x.shape[-1] != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be point clouds of shape (B, N, 3), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x.detach()


def _pair(a: Any, b: Any, name_a: str, name_b: str, same_size: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_clouds(a, name_a), _as_clouds(b, name_b)
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}")
    if same_size and a.shape[1] != b.shape[1]:
        raise ValueError(f"EMD needs equal cloud sizes, got {name_a} with {a.shape[1]} points "
                         f"and {name_b} with {b.shape[1]}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def _augment(x: torch.Tensor, other: bool) -> torch.Tensor:
    """[x, |x|^2, 1] (or [-2y, 1, |y|^2] for ``other``): their dot product is |x - y|^2."""
    sq, one = (x * x).sum(-1, keepdim=True), torch.ones_like(x[..., :1])
    return torch.cat([-2.0 * x, one, sq] if other else [x, sq, one], dim=-1)


def _chamfer_of(squared: torch.Tensor) -> torch.Tensor:
    """Chamfer from squared distances (..., N, M): both directional means of the minima."""
    return (squared.amin(-1).clamp_(min=0).mean(-1) + squared.amin(-2).clamp_(min=0).mean(-1))


def chamfer(a: Any, b: Any, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Squared Chamfer distance of paired clouds a (B, N, 3) and b (B, M, 3) -> (B,)."""
    a, b = _pair(a, b, "a", "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"chamfer pairs clouds: a has {a.shape[0]} clouds, b has {b.shape[0]}")
    step = max(1, chunk // (a.shape[1] * b.shape[1]))
    xa, ya = _augment(a, False), _augment(b, True)
    return torch.cat([_chamfer_of(torch.bmm(xa[i:i + step], ya[i:i + step].transpose(1, 2)))
                      for i in range(0, len(a), step)])


def _emd_pair(x: np.ndarray, y: np.ndarray) -> float:
    cost = cdist(x, y)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def emd(a: Any, b: Any) -> torch.Tensor:
    """Exact EMD of paired equal-size clouds a, b (B, N, 3) -> (B,): mean matched Euclidean distance."""
    a, b = _pair(a, b, "a", "b", same_size=True)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"emd pairs clouds: a has {a.shape[0]} clouds, b has {b.shape[0]}")
    x, y = a.cpu().double().numpy(), b.cpu().double().numpy()
    return torch.tensor([_emd_pair(x[i], y[i]) for i in range(len(x))], dtype=a.dtype, device=a.device)


def _blocks(rows: int, cols: int, per_pair: int, chunk: int, symmetric: bool):
    """(row slice, col slice) blocks of at most ~chunk entries; upper triangle only when symmetric."""
    q = min(cols, max(1, chunk // per_pair))
    p = max(1, chunk // (per_pair * q))
    for r0 in range(0, rows, p):
        for c0 in range(r0 if symmetric else 0, cols, q):
            yield slice(r0, min(rows, r0 + p)), slice(c0, min(cols, c0 + q))


def pairwise_chamfer(x: Any, y: Any = None, chunk: int = DEFAULT_CHUNK,
                     progress: bool = False) -> torch.Tensor:
    """Chamfer distances of every pair: x (P, N, 3), y (Q, M, 3) -> (P, Q); y=None means x vs x
    (computed on one triangle, diagonal exactly 0)."""
    symmetric = y is None
    x, y = (_as_clouds(x, "x"),) * 2 if symmetric else _pair(x, y, "x", "y")
    xa, ya = _augment(x, False), _augment(y, True)
    out = torch.zeros(len(x), len(y), dtype=x.dtype, device=x.device)
    blocks = list(_blocks(len(x), len(y), x.shape[1] * y.shape[1], chunk, symmetric))
    for rows, cols in tqdm(blocks, desc="pairwise chamfer", disable=not progress):
        out[rows, cols] = _chamfer_of(torch.einsum("pnd,qmd->pqnm", xa[rows], ya[cols]))
    if symmetric:
        out = torch.triu(out, diagonal=1)
        out = out + out.T
    return out


def pairwise_emd(x: Any, y: Any = None, progress: bool = False) -> torch.Tensor:
    """Exact EMD of every pair of equal-size clouds: (P, N, 3), (Q, N, 3) -> (P, Q); y=None means
    x vs x (one triangle, diagonal 0)."""
    symmetric = y is None
    x, y = (_as_clouds(x, "x"),) * 2 if symmetric else _pair(x, y, "x", "y", same_size=True)
    xs, ys = x.cpu().double().numpy(), y.cpu().double().numpy()
    pairs = [(i, j) for i in range(len(xs)) for j in range(i + 1 if symmetric else 0, len(ys))]
    out = np.zeros((len(xs), len(ys)))
    for i, j in tqdm(pairs, desc="pairwise emd", disable=not progress):
        out[i, j] = _emd_pair(xs[i], ys[j])
    if symmetric:
        out = out + out.T
    return torch.from_numpy(out).to(dtype=x.dtype, device=x.device)


def mmd_cov(dist: Any) -> tuple[float, float]:
    """(MMD, COV) from distances (S samples, R references) (PointFlow's ``lgan_mmd_cov``)."""
    d = np.asarray(torch.as_tensor(dist).detach().cpu().double())
    if d.ndim != 2 or 0 in d.shape:
        raise ValueError(f"mmd_cov needs a (samples, references) matrix, got shape {d.shape}")
    return float(d.min(axis=0).mean()), len(np.unique(d.argmin(axis=1))) / d.shape[1]


def one_nna(d_rr: Any, d_rs: Any, d_ss: Any) -> float:
    """Leave-one-out 1-NN accuracy over references (R) and samples (S): (R, R), (R, S), (S, S)."""
    rr, rs, ss = (np.asarray(torch.as_tensor(m).detach().cpu().double()) for m in (d_rr, d_rs, d_ss))
    r, s = rs.shape
    if rr.shape != (r, r) or ss.shape != (s, s):
        raise ValueError(f"one_nna needs (R, R), (R, S), (S, S), got {rr.shape}, {rs.shape}, {ss.shape}")
    union = np.block([[rr, rs], [rs.T, ss]])
    np.fill_diagonal(union, np.inf)
    label = np.r_[np.ones(r), np.zeros(s)]
    return float((label[union.argmin(axis=1)] == label).mean())


def label_mix(dist: Any, labels: Any, num_labels: int) -> tuple[np.ndarray, float]:
    """Which kinds of cloud a model makes: (mix, total variation) from distances (L labelled clouds,
    S samples), e.g. ``pairwise_chamfer(train, samples)``, and the labelled clouds' integer labels.

    ``mix[k]`` is the fraction of samples whose nearest labelled cloud has label k (1-NN labelling,
    ties to the first index); the total variation 0.5 sum_k |mix[k] - share[k]| compares it with
    the labels' own shares among the labelled clouds (0: the same mix; 1: disjoint). COV misses a
    dropped mode only where the references hold it; this names the mode. A real draw of S clouds
    scores above 0 by chance alone: compare with the floor's own value (the same S real clouds).
    """
    d = np.asarray(torch.as_tensor(dist).detach().cpu().double())
    y = np.asarray(torch.as_tensor(labels).detach().cpu()).astype(np.int64).ravel()
    if d.ndim != 2 or 0 in d.shape or len(y) != d.shape[0]:
        raise ValueError(f"label_mix needs an (L, S) distance matrix and L labels, got shape {d.shape} and "
                         f"{len(y)} labels")
    if num_labels < 1 or y.min() < 0 or y.max() >= num_labels:
        raise ValueError(f"labels must lie in [0, {num_labels}), got labels from {y.min()} to {y.max()}")
    mix = np.bincount(y[d.argmin(axis=0)], minlength=num_labels) / d.shape[1]
    share = np.bincount(y, minlength=num_labels) / len(y)
    return mix, float(0.5 * np.abs(mix - share).sum())


def generation_metrics(samples: Any, refs: Any, metrics: Sequence[str] = POINT_METRICS, *,
                       emd_points: int | None = None, seed: int = 0, chunk: int = DEFAULT_CHUNK,
                       progress: bool = False) -> dict[str, float]:
    """PointFlow's protocol: ``mmd-cd``, ``cov-cd``, ``1-nna-cd`` (and ``-emd``) as plain floats.

    ``samples`` (S, N, 3) and ``refs`` (R, N', 3). ``emd_points`` subsamples every cloud to that many
    points (a seeded random subset) for EMD only; None uses all points (equal sizes needed).
    """
    unknown = [m for m in metrics if m not in POINT_METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {POINT_METRICS}, got {list(metrics)}")
    samples, refs = _pair(samples, refs, "samples", "refs")
    if len(samples) < 2 or len(refs) < 2:
        raise ValueError(f"generation metrics need >= 2 samples and refs, got {len(samples)} and {len(refs)}")
    results: dict[str, float] = {}
    for name in metrics:
        sam, ref = samples, refs
        if name == "emd" and emd_points is not None:
            sam, ref = _subsample(samples, emd_points, seed), _subsample(refs, emd_points, seed + 1)
        if name == "cd":
            d_rs = pairwise_chamfer(ref, sam, chunk, progress)
            d_rr, d_ss = pairwise_chamfer(ref, None, chunk, progress), pairwise_chamfer(sam, None, chunk, progress)
        else:
            if sam.shape[1] != ref.shape[1]:
                raise ValueError(f"EMD needs equal cloud sizes, got samples with {sam.shape[1]} points and "
                                 f"refs with {ref.shape[1]}: pass emd_points")
            d_rs = pairwise_emd(ref, sam, progress)
            d_rr, d_ss = pairwise_emd(ref, None, progress), pairwise_emd(sam, None, progress)
        results[f"mmd-{name}"], results[f"cov-{name}"] = mmd_cov(d_rs.T)
        results[f"1-nna-{name}"] = one_nna(d_rr, d_rs, d_ss)
    return results


def _subsample(clouds: torch.Tensor, points: int, seed: int) -> torch.Tensor:
    if not 1 <= points <= clouds.shape[1]:
        raise ValueError(f"emd_points must be in [1, {clouds.shape[1]}], got {points}")
    generator = torch.Generator().manual_seed(seed)
    index = torch.argsort(torch.rand(clouds.shape[:2], generator=generator), dim=1)[:, :points]
    return torch.gather(clouds, 1, index.to(clouds.device)[..., None].expand(-1, -1, 3))
