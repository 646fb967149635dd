"""Voxelisation and trilinear devoxelisation of point features (PVCNN, Liu et al. 2019, sec. 3).

Torch only. A cloud's points are placed in an ``R^3`` grid by PVCNN's normalisation (centre on
the mean, divide by twice the largest distance to it, shift by 1/2, so the cloud fills the
unit cube), a voxel's feature is the mean of the features of the points that fall in it
(``index_add_``, then a division by the counts), and a point reads the grid back by trilinear
interpolation of the 8 voxel centres around it (``grid_sample``, PVCNN's ``trilinear_devoxelize``).
Both maps are symmetric in the points (a sum over them, and a per-point read), so a network built
on them is permutation-equivariant; the sum's float order follows the point order, so permuted
inputs agree to rounding, not bit for bit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["grid_coordinates", "voxelize", "devoxelize"]


def grid_coordinates(points: torch.Tensor, resolution: int, eps: float = 1e-6) -> torch.Tensor:
    """PVCNN's normalised coordinates of ``points`` (B, N, 3) in voxel units: in [0, R - 1]^3.

    ``(x - mean) / (2 max |x - mean| + eps) + 1/2`` per cloud (Liu et al. 2019, their
    ``Voxelization(normalize=True)``), times ``R - 1`` so voxel centres sit at the integers."""
    centred = points - points.mean(dim=1, keepdim=True)
    radius = centred.norm(dim=2).amax(dim=1)[:, None, None]
    unit = centred / (2.0 * radius + eps) + 0.5
    return unit.clamp(0.0, 1.0) * (resolution - 1)


def voxelize(features: torch.Tensor, coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """The mean feature of the points in each voxel: ``features`` (B, N, C) at ``coords``
    (B, N, 3) from :func:`grid_coordinates` (each rounded to its nearest voxel centre) ->
    (B, C, R, R, R); an empty voxel is 0. Axis order: the grid's (D, H, W) are coords (0, 1, 2)."""
    b, n, c = features.shape
    r = resolution
    cells = coords.round().long()
    flat = (cells[..., 0] * r + cells[..., 1]) * r + cells[..., 2]                    # (B, N)
    flat = (flat + torch.arange(b, device=flat.device)[:, None] * r ** 3).reshape(-1)
    sums = features.new_zeros(b * r ** 3, c).index_add_(0, flat, features.reshape(-1, c))
    counts = features.new_zeros(b * r ** 3).index_add_(0, flat, features.new_ones(b * n))
    means = sums / counts.clamp(min=1.0)[:, None]
    return means.reshape(b, r, r, r, c).permute(0, 4, 1, 2, 3)


def devoxelize(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of ``grid`` (B, C, R, R, R) at ``coords`` (B, N, 3) in voxel
    units -> (B, N, C) (PVCNN's trilinear devoxelisation; ``grid_sample`` with
    ``align_corners=True`` puts voxel i's centre at -1 + 2 i / (R - 1), and reads (x, y, z) as
    (W, H, D), hence the flip)."""
    r = grid.shape[-1]
    where = (coords * (2.0 / (r - 1)) - 1.0).flip(-1)[:, :, None, None, :]           # (B, N, 1, 1, 3)
    out = F.grid_sample(grid, where.to(grid.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, :, 0, 0].transpose(1, 2)
