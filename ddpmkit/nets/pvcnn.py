"""A point-voxel network for diffusion on point clouds (PVCNN, Liu et al. 2019; as PVD, Zhou et
al. 2021, and LION, Zeng et al. 2022, use it for the DDPM's noise predictor), torch only.

Each :class:`PointVoxelBlock` has two branches over per-point features ``f`` (B, N, C):

* voxel: the points' features averaged into an ``R^3`` grid (:func:`~ddpmkit.nets.voxel.voxelize`),
  (after a per-point map to the voxel width), two 3x3x3 convolutions with GroupNorm and SiLU, the
  time embedding added after the first (PVD adds it to the features the same way), read back at
  every point by trilinear devoxelisation: the neighbourhood of a point, which a per-point network
  cannot see;
* point: a shared per-point linear map (PVCNN's point branch), plus a global feature (max and
  mean over the points, PointNet, Qi et al. 2017) and the time embedding, both broadcast;
* local (``neighbors = k > 0``): each point's k nearest points (itself included) by an edge
  feature max_j SiLU(A f_j - A f_i + P (p_j - p_i)), EdgeConv's (Wang et al. 2019) with its
  linear map split so that the per-edge work is a sum: where the surface runs at the point's
  own scale, finer than any voxel.

The sum, through SiLU, is the block's output (with a residual when the widths match). Blocks may
have different resolutions (``resolutions``), coarse ones seeing the whole shape, fine ones the
surface. A zero-initialised per-point head gives the output.

Completion (PDR, Lyu et al. 2022; PVD's completion): with ``conditional`` the partial cloud's
points (B, M, 3) join the noisy points as extra points with a flag feature 1 (noisy: 0): they are
voxelised into the same grids, so every convolution sees the given part of the shape beside the
points being generated; the output is read at the noisy points only. The network then generates
the *missing* points (``data.missing_only``) or a whole cloud, as it is trained.

Everything is per point or symmetric (sums, max, mean over points; the voxel normalisation is
per cloud), so the output permutes with ``x``'s points and ignores the order of ``partial``'s,
exactly up to the float order of the sums; any N works.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConditionEmbedding, DictConfig, check_point_inputs
from .voxel import devoxelize, grid_coordinates, voxelize

__all__ = ["PVCNNConfig", "PVCNN", "PointVoxelBlock"]


def _fail(name: str, value: Any, why: str) -> None:
    raise ValueError(f"PVCNNConfig.{name} {why}, got {name}={value!r}")


def _is_count(value: Any, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


@dataclass(frozen=True)
class PVCNNConfig(DictConfig):
    """Hyper-parameters of :class:`PVCNN`.

    Attributes:
        in_dim, out_dim: coordinates per point in and out (out = 2x in for learned variance).
        channels: per-point feature width of each point-voxel block.
        resolutions: the voxel grid side R of each block (same length as ``channels``, R >= 2).
        voxel_channels: the voxel branch's width (None: the block's width); the 3-D
            convolutions cost R^3 * width^2, so a narrower voxel branch keeps fine grids cheap.
        time_dim, embed_dim: sinusoid size of the time and the size of its embedding.
        groups: GroupNorm groups of the voxel branch (must divide its width).
        conditional: take a partial cloud ``partial`` (B, M, in_dim), voxelised with the points.
        zero_init: zero the last layer, so the network starts as the zero function.
        neighbors: k of each block's local branch over the k nearest points (0: none).
        num_classes: take a class label ``y`` (B,) in [0, num_classes] (num_classes: the null
            class of classifier-free guidance), its embedding added to the time embedding's
            (:class:`~ddpmkit.nets.layers.ConditionEmbedding`, as the U-Net's); None: no labels.
    """

    in_dim: int = 3
    out_dim: int = 3
    channels: tuple[int, ...] = (64, 64, 64, 64)
    resolutions: tuple[int, ...] = (8, 16, 16, 8)
    voxel_channels: int | None = 32
    time_dim: int = 64
    embed_dim: int = 128
    groups: int = 8
    conditional: bool = False
    zero_init: bool = True
    neighbors: int = 0
    num_classes: int | None = None

    def __post_init__(self) -> None:
        for name in ("in_dim", "out_dim", "time_dim", "embed_dim", "groups"):
            if not _is_count(getattr(self, name)):
                _fail(name, getattr(self, name), "must be an integer >= 1")
        if self.time_dim < 2:
            _fail("time_dim", self.time_dim, "must be >= 2")
        if not isinstance(self.channels, tuple) or not self.channels or not all(_is_count(c) for c in self.channels):
            _fail("channels", self.channels, "must be a non-empty tuple of integers >= 1")
        if (not isinstance(self.resolutions, tuple) or len(self.resolutions) != len(self.channels)
                or not all(_is_count(r, 2) for r in self.resolutions)):
            _fail("resolutions", self.resolutions, f"must be a tuple of {len(self.channels)} integers >= 2 "
                  "(one per block of channels)")
        if self.voxel_channels is not None and not _is_count(self.voxel_channels):
            _fail("voxel_channels", self.voxel_channels, "must be an integer >= 1 or None")
        for width in {self.voxel_channels} if self.voxel_channels else set(self.channels):
            if width % self.groups:
                _fail("groups", self.groups, f"must divide the voxel branch's width {width}")
        if isinstance(self.neighbors, bool) or not isinstance(self.neighbors, int) or self.neighbors < 0:
            _fail("neighbors", self.neighbors, "must be an integer >= 0 (0: no local branch)")
        if self.num_classes is not None and not _is_count(self.num_classes):
            _fail("num_classes", self.num_classes, "must be an integer >= 1 or None")
        for name in ("conditional", "zero_init"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "must be true or false")


def _nearest(points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point's ``k`` nearest points of its cloud (itself first; fewer points: all of them):
    indices (B, N, k) and offsets p_j - p_i (B, N, k, d)."""
    k = min(k, points.shape[1])
    index = torch.cdist(points, points).topk(k, dim=2, largest=False).indices
    return index, _rows(points, index) - points[:, :, None]


def _rows(f: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """f (B, N, C) at index (B, N, k) -> (B, N, k, C), by one flat lookup (its backward is a sum
    into (B N, C), not into a (B, N, N, C) buffer as a gather over an expanded f would be)."""
    b, n, c = f.shape
    flat = index + torch.arange(b, device=index.device)[:, None, None] * n
    return f.reshape(b * n, c)[flat.reshape(-1)].reshape(*index.shape, c)


class PointVoxelBlock(nn.Module):
    """One PVConv block (Liu et al. 2019, fig. 3) with the time embedding: (B, N, c_in) -> (B, N, c_out)."""

    def __init__(self, c_in: int, c_out: int, resolution: int, voxel_width: int, embed_dim: int, groups: int,
                 local: bool = False, in_dim: int = 3) -> None:
        super().__init__()
        self.resolution = resolution
        self.local = nn.ModuleDict({"features": nn.Linear(c_in, voxel_width), "offsets": nn.Linear(in_dim, voxel_width),
                                    "out": nn.Linear(voxel_width, c_out)}) if local else None
        self.to_voxels = nn.Linear(c_in, voxel_width)   # per point, before voxelising: a narrow grid
        self.conv_in = nn.Conv3d(voxel_width, voxel_width, 3, padding=1)
        self.norm_in = nn.GroupNorm(groups, voxel_width)
        self.time_voxel = nn.Linear(embed_dim, voxel_width)
        self.conv_out = nn.Conv3d(voxel_width, voxel_width, 3, padding=1)
        self.norm_out = nn.GroupNorm(groups, voxel_width)
        self.from_voxels = nn.Linear(voxel_width, c_out)
        self.point = nn.Linear(c_in, c_out)
        self.pooled = nn.Linear(2 * c_in, c_out)
        self.time_point = nn.Linear(embed_dim, c_out)
        self.residual = c_in == c_out

    def forward(self, f: torch.Tensor, coords: torch.Tensor, temb: torch.Tensor,
                knn: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        v = self.norm_in(self.conv_in(voxelize(self.to_voxels(f), coords, self.resolution)))
        v = F.silu(v + self.time_voxel(temb)[:, :, None, None, None])
        v = F.silu(self.norm_out(self.conv_out(v)))
        pooled = torch.cat([f.amax(dim=1), f.mean(dim=1)], dim=1)
        h = (self.from_voxels(devoxelize(v, coords)) + self.point(f)
             + (self.pooled(pooled) + self.time_point(temb))[:, None, :])
        if self.local is not None:   # built with a local branch: PVCNN passes the neighbours
            index, offsets = knn                                   # (B, N, k), (B, N, k, d)
            a = self.local["features"](f)
            edges = F.silu(_rows(a, index) - a[:, :, None] + self.local["offsets"](offsets))
            h = h + self.local["out"](edges.amax(dim=2))
        h = F.silu(h)
        return f + h if self.residual else h


class PVCNN(nn.Module):
    """``forward(x, t, partial=None, y=None)``: ``x`` (B, N, in_dim), ``t`` (B,) or a scalar; ``partial``
    (B or 1, M, in_dim) when ``config.conditional`` (required then, refused otherwise); ``y`` (B,)
    class labels when ``config.num_classes`` is set (None: the null class). Returns
    (B, N, out_dim), or for ``out_dim = k in_dim`` (learned variance) the k groups stacked on
    dim 1 as (B, k N, in_dim), as :class:`~ddpmkit.nets.pointnet.PointNet` does."""

    def __init__(self, config: PVCNNConfig) -> None:
        super().__init__()
        if not isinstance(config, PVCNNConfig):
            raise ValueError(f"config must be a PVCNNConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.embed = ConditionEmbedding(cfg.time_dim, cfg.embed_dim, cfg.num_classes)
        features = cfg.in_dim + (1 if cfg.conditional else 0)
        self.lift = nn.Sequential(nn.Linear(features, cfg.channels[0]), nn.SiLU(),
                                  nn.Linear(cfg.channels[0], cfg.channels[0]))
        widths = (cfg.channels[0],) + cfg.channels
        self.blocks = nn.ModuleList([
            PointVoxelBlock(a, b, r, cfg.voxel_channels or b, cfg.embed_dim, cfg.groups, cfg.neighbors > 0, cfg.in_dim)
            for a, b, r in zip(widths[:-1], widths[1:], cfg.resolutions)])
        last = cfg.channels[-1]
        self.head = nn.Sequential(nn.Linear(last + cfg.in_dim, last), nn.SiLU(), nn.Linear(last, cfg.out_dim))
        if cfg.zero_init:
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, partial: torch.Tensor | None = None,
                y: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        partial = check_point_inputs(x, partial, cfg.in_dim, cfg.conditional)
        n = x.shape[1]
        points = x
        if partial is not None:
            points = torch.cat([x, partial], dim=1)
            flags = torch.cat([x.new_zeros(x.shape[0], n, 1), x.new_ones(x.shape[0], partial.shape[1], 1)], dim=1)
            f = self.lift(torch.cat([points, flags], dim=2))
        else:
            f = self.lift(x)
        temb = F.silu(self.embed(t, x.shape[0], y)).to(x.dtype)
        coords = {r: grid_coordinates(points, r) for r in set(cfg.resolutions)}
        knn = _nearest(points, cfg.neighbors) if cfg.neighbors else None
        for block in self.blocks:
            f = block(f, coords[block.resolution], temb, knn)
        h = self.head(torch.cat([f[:, :n], x], dim=2))
        groups = cfg.out_dim // cfg.in_dim
        if groups > 1 and cfg.out_dim % cfg.in_dim == 0:   # (B, N, k d) -> (B, k N, d)
            h = torch.cat(h.split(cfg.in_dim, dim=2), dim=1)
        return h
