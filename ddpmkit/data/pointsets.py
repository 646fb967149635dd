"""Point-cloud data sets for ``load_dataset``: the generated shapes and a user's point files.

    train = load_dataset(DataConfig("shapes", n=1000, points=1024, partial_points=512), "train")
    train.x                  # (750, 1024, 3) float32, each cloud normalised as ``make_shapes`` says
    train.cond["partial"]    # (750, 512, 3): the points on one side of a random plane (completion)

``shapes``: ``n`` clouds of :func:`ddpmkit.data.shapes.make_shapes` (seeded by ``seed``), split at
random (:func:`split_indices`, ``ceil(test_fraction n)`` for test); the labels are the families.
``points``: a directory of ``.npy`` / ``.npz`` / ``.ply`` files, one cloud each (read by
:func:`ddpmkit.data.pointfiles.read_points`), or one ``.npy`` / ``.npz`` array ``(S, N, 3)``;
each cloud is subsampled to ``points`` (seeded) and normalised per shape like the shapes.
The partial clouds are cut from every cloud before the split, so a cloud and its partial
always travel together and do not depend on the split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .config import DataConfig
from .dataset import ArrayDataset, split_indices
from .pointfiles import POINT_SUFFIXES, read_points
from .shapes import SHAPE_FAMILIES, cut_by_plane, make_shapes, normalize_clouds

__all__ = ["load_pointset", "DEFAULT_SHAPE_POINTS", "knn_patches", "missing_points"]

DEFAULT_SHAPE_POINTS = 2048   # PointFlow / Luo & Hu train on 2048 points per shape


def knn_patches(x: torch.Tensor, k: int, seeds: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local patches of clouds ``x`` (B, N, 3): for each seed point the ``k`` nearest points of its
    cloud (itself first; Luo & Hu 2021 denoise such patches), centred on their mean and turned
    into their principal axes (the eigenvectors of the patch's covariance, largest variance first,
    so the last axis is the estimated normal, as PCPNet-style denoisers align patches). Isotropic
    Gaussian noise stays isotropic Gaussian noise under the rotation.

    Args:
        seeds: (B, P) indices of the seed points; None: every point is a seed (P = N).

    Returns:
        ``(patches (B, P, k, 3), centres (B, P, 1, 3), frames (B, P, 3, 3), index (B, P, k))``:
        the patch's points are ``x[b, index[b, p]] = patches[b, p] @ frames[b, p].T + centres[b, p]``.
    """
    seed_points = x if seeds is None else torch.gather(x, 1, seeds[..., None].expand(-1, -1, x.shape[-1]))
    index = torch.cdist(seed_points, x).topk(k, dim=-1, largest=False, sorted=True).indices     # (B, P, k)
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None]
    points = x[batch, index]                                                                    # (B, P, k, 3)
    centres = points.mean(dim=2, keepdim=True)
    centred = points - centres
    covariance = centred.transpose(-1, -2) @ centred / k
    frames = torch.linalg.eigh(covariance).eigenvectors.flip(-1)                                # largest first
    return centred @ frames, centres, frames, index


def missing_points(clouds: np.ndarray, direction: np.ndarray, keep: int) -> np.ndarray:
    """The points of ``clouds`` (S, N, 3) that :func:`~ddpmkit.data.shapes.cut_by_plane` with
    plane normals ``direction`` (S, 3) leaves out of its ``keep``-point partial: the ``N - keep``
    lowest along the normal (the same stable order), in their original order."""
    height = np.einsum("snd,sd->sn", np.asarray(clouds, dtype=np.float64), direction)   # as cut_by_plane: float64
    index = np.sort(np.argsort(-height, axis=1, kind="stable")[:, keep:], axis=1)
    return np.take_along_axis(clouds, index[:, :, None], axis=1)


def _patches(clouds: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``N // k`` patches of ``k`` points per cloud, seeds drawn without replacement by (seed, 1, i)."""
    count, n = clouds.shape[0], clouds.shape[1]
    seeds = np.stack([np.random.default_rng([seed, 1, i]).choice(n, n // k, replace=False) for i in range(count)])
    patches = knn_patches(torch.from_numpy(clouds), k, torch.from_numpy(seeds))[0]
    return patches.reshape(-1, k, clouds.shape[-1]).numpy()


def _subsample(cloud: np.ndarray, points: int | None, seed: int, index: int, where: str) -> np.ndarray:
    """``points`` of the cloud's points, without replacement, seeded by (seed, index)."""
    if points is None or len(cloud) == points:
        return np.asarray(cloud, dtype=np.float64)
    if len(cloud) < points:
        raise ValueError(f"{where} holds {len(cloud)} points, fewer than data.points={points}")
    keep = np.random.default_rng([seed, index]).choice(len(cloud), points, replace=False)
    return np.asarray(cloud[np.sort(keep)], dtype=np.float64)


def _load_point_files(config: DataConfig) -> np.ndarray:
    """Every cloud of ``config.path`` as (S, points, 3) float64, in file-name order (read by
    :func:`read_points`: nothing is unpickled)."""
    path = Path(config.path)
    if path.is_file():
        stack = read_points(path)
        if stack.ndim != 3:
            raise ValueError(f"{path}: a file of clouds must hold an array (S, N, 3) (one cloud per file needs a "
                             f"directory of files), got shape {stack.shape}")
        clouds = [_subsample(c, config.points, config.seed, i, f"{path} cloud {i}") for i, c in enumerate(stack)]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in POINT_SUFFIXES and p.is_file())
        if not files:
            raise ValueError(f"{path}: no point files ({', '.join(POINT_SUFFIXES)}) in the directory")
        clouds = []
        for i, f in enumerate(files):
            cloud = read_points(f)
            if cloud.ndim != 2:
                raise ValueError(f"{f}: a file in a directory of clouds must hold one cloud (N, 3), got shape "
                                 f"{cloud.shape}")
            clouds.append(_subsample(cloud, config.points, config.seed, i, str(f)))
        sizes = {len(c) for c in clouds}
        if len(sizes) > 1:
            raise ValueError(f"{path}: the files hold different numbers of points ({min(sizes)}..{max(sizes)}); "
                             f"set data.points to subsample them to one count")
    else:
        raise ValueError(f"data.path={config.path!r} is neither a directory of point files nor an .npy/.npz file")
    if len(clouds) < 2:
        raise ValueError(f"{path}: a data set needs at least 2 clouds (a train and a test split), got {len(clouds)}")
    return normalize_clouds(np.stack(clouds))[0]


def load_pointset(config: DataConfig, split: str) -> ArrayDataset:
    """The ``split`` of a point-cloud data set (``shapes`` or ``points``) as an
    :class:`ArrayDataset`: ``x`` (S, N, 3) float32, ``levels=None``; with ``partial_points``,
    ``cond["partial"]`` (S, partial_points, 3)."""
    labels, num_classes = None, None
    if config.name == "shapes":
        shapes = make_shapes(config.n, config.points or DEFAULT_SHAPE_POINTS, seed=config.seed)
        clouds = np.asarray(shapes.points)
        labels, num_classes = np.asarray(shapes.family, np.int64), len(SHAPE_FAMILIES)
    else:
        clouds = _load_point_files(config)
    cond: dict[str, torch.Tensor] = {}
    if config.partial_points is not None:
        if config.partial_points >= clouds.shape[1]:
            raise ValueError(f"data.partial_points={config.partial_points} must be smaller than the "
                             f"{clouds.shape[1]} points per cloud")
        partial, direction = cut_by_plane(clouds, config.partial_points, seed=config.seed, return_directions=True)
        cond["partial"] = torch.from_numpy(np.ascontiguousarray(partial, dtype=np.float32))
        if config.missing_only:   # the examples are the points the partial lacks (PDR's missing part)
            clouds = missing_points(clouds, direction, config.partial_points)
    keep = split_indices(len(clouds), config.test_fraction, config.seed, split)
    index = torch.from_numpy(keep)
    chosen = clouds[keep]
    y = None if labels is None else torch.from_numpy(labels[keep])
    if config.patch_points is not None:   # local patches of the split's clouds (the split is by cloud)
        per_cloud = chosen.shape[1] // config.patch_points
        chosen = _patches(np.asarray(chosen, np.float64), config.patch_points, config.seed)
        y = None if y is None else y.repeat_interleave(per_cloud)
    x = torch.from_numpy(np.ascontiguousarray(chosen, dtype=np.float32))
    return ArrayDataset(x=x, y=y, levels=None, num_classes=num_classes, name=f"{config.name}-{split}",
                        cond={k: v[index] for k, v in cond.items()}, kind="points", rotate=config.rotate)
