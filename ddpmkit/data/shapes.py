"""Generated point-cloud shapes: analytic surfaces sampled uniformly by area (nothing downloads).

    from ddpmkit.data.shapes import make_shapes, point_to_surface, cut_by_plane
    shapes = make_shapes(600, 2048, seed=0)                   # (600, 2048, 3) float32, 11 families
    d = point_to_surface(shapes.points[:4] + noise, shapes.params[:4])   # exact distances (4, 2048)
    partial = cut_by_plane(shapes.points, keep=1024, seed=1)   # completion condition (600, 1024, 3)

Every shape is a union of *parts* in a canonical frame (:mod:`ddpmkit.data.shape_parts`: profiles
of revolution, boxes, ellipsoids, each sampled exactly uniformly by area with an exact distance),
then a uniform random rotation (a unit quaternion from four Gaussians is Haar-distributed;
det R = +1), then normalisation.

Normalisation as PointFlow (Yang et al. 2019, datasets.py): ``"shape"`` subtracts each cloud's mean
and divides by one scalar, the standard deviation of all its 3N centred coordinates (PointFlow's
``reshape(B, -1).std``, not the max norm); ``"dataset"`` does the same with the mean and scalar std
of every point of every shape (or the given ``stats``, e.g. a training set's); ``"none"`` keeps the
raw units. Parameters are plain JSON-able dicts, so ``point_to_surface`` works in the normalised
coordinates: canonical = (x * scale + shift) @ rotation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .shape_parts import (PI, arc, part_distance, profile, sample_parts, scale_part, segment,
                          surface_area)

__all__ = ["SHAPE_FAMILIES", "ShapeSet", "make_shapes", "point_to_surface", "cut_by_plane",
           "resample", "surface_area", "random_rotation", "random_rotations", "normalize_clouds"]

SHAPE_FAMILIES: tuple[str, ...] = ("sphere", "torus", "cylinder", "cone", "box", "ellipsoid",
                                   "capsule", "dumbbell", "mushroom", "lamp", "table")
NORMALIZE_MODES = ("shape", "dataset", "none")


@dataclass
class ShapeSet:
    """``points`` (S, N, 3) float32; ``family`` (S,) int64 index into SHAPE_FAMILIES; ``params`` one
    dict per shape ({"family", "parts", "rotation", "shift", "scale"}) for :func:`point_to_surface`."""
    points: np.ndarray
    family: np.ndarray
    params: list[dict]

    def __len__(self) -> int:
        return len(self.points)


# ----------------------------------------------------------------------- the families
def _cylinder_pieces(r: float, z0: float, z1: float, top: bool = True) -> list:
    pieces = [segment(0, z0, r, z0), segment(r, z0, r, z1)]
    return pieces + [segment(r, z1, 0, z1)] if top else pieces


def _sphere(rng: np.random.Generator) -> list[dict]:
    return [profile([arc(0, 0, 1.0, -PI / 2, PI / 2)])]


def _torus(rng: np.random.Generator) -> list[dict]:
    return [profile([arc(1.0, 0, rng.uniform(0.2, 0.55), -PI, PI)])]


def _cylinder(rng: np.random.Generator) -> list[dict]:
    r, h = rng.uniform(0.3, 0.8), rng.uniform(0.8, 2.2)
    return [profile(_cylinder_pieces(r, -h / 2, h / 2))]


def _cone(rng: np.random.Generator) -> list[dict]:
    r, h = rng.uniform(0.4, 0.9), rng.uniform(0.8, 2.0)
    return [profile([segment(0, -h / 3, r, -h / 3), segment(r, -h / 3, 0, 2 * h / 3)])]


def _box(rng: np.random.Generator) -> list[dict]:
    return [{"kind": "box", "half": rng.uniform(0.25, 1.0, 3).tolist(), "offset": [0.0, 0.0, 0.0]}]


def _ellipsoid(rng: np.random.Generator) -> list[dict]:
    return [{"kind": "ellipsoid", "axes": rng.uniform(0.35, 1.2, 3).tolist(), "offset": [0.0, 0.0, 0.0]}]


def _capsule(rng: np.random.Generator) -> list[dict]:
    r, c = rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.9)
    return [profile([arc(0, -c, r, -PI / 2, 0), segment(r, -c, r, c), arc(0, c, r, 0, PI / 2)])]


def _dumbbell(rng: np.random.Generator) -> list[dict]:
    big, c = rng.uniform(0.3, 0.45), rng.uniform(0.75, 1.1)
    bar = rng.uniform(0.25, 0.45) * big
    neck, angle = np.sqrt(big**2 - bar**2), np.arccos(bar / big)    # where the bar meets a ball
    return [profile([arc(0, -c, big, -PI / 2, angle), segment(bar, neck - c, bar, c - neck),
                      arc(0, c, big, -angle, PI / 2)])]


def _mushroom(rng: np.random.Generator) -> list[dict]:
    stem, height, cap = rng.uniform(0.12, 0.25), rng.uniform(0.4, 0.9), rng.uniform(0.45, 0.85)
    pieces = _cylinder_pieces(stem, 0, height, top=False) + [segment(stem, height, cap, height),
                                                             arc(0, height, cap, 0, PI / 2)]
    return [profile(pieces, z=-(height + cap) / 2)]


def _lamp(rng: np.random.Generator) -> list[dict]:
    base, base_h, pole = rng.uniform(0.35, 0.55), rng.uniform(0.05, 0.12), rng.uniform(0.03, 0.06)
    top, shade_h, low = rng.uniform(1.0, 1.6), rng.uniform(0.3, 0.5), rng.uniform(0.35, 0.6)
    pieces = [segment(0, 0, base, 0), segment(base, 0, base, base_h), segment(base, base_h, pole, base_h),
              segment(pole, base_h, pole, top), segment(pole, top, 0, top),
              segment(low, top - 0.7 * shade_h, rng.uniform(0.4, 0.7) * low, top + 0.3 * shade_h)]
    return [profile(pieces, z=-(top + 0.3 * shade_h) / 2)]


def _table(rng: np.random.Generator) -> list[dict]:
    tx, ty, thick = rng.uniform(0.6, 1.0), rng.uniform(0.35, 0.8), rng.uniform(0.03, 0.07)
    leg, height = rng.uniform(0.035, 0.07), rng.uniform(0.5, 1.0)
    lx, ly = tx - rng.uniform(1.5, 3.0) * leg, ty - rng.uniform(1.5, 3.0) * leg
    z0 = -(height + 2 * thick) / 2
    legs = [profile(_cylinder_pieces(leg, 0, height, top=False), sx * lx, sy * ly, z0)
            for sx in (-1, 1) for sy in (-1, 1)]
    return [{"kind": "box", "half": [tx, ty, thick], "offset": [0.0, 0.0, z0 + height + thick]}] + legs


_BUILDERS: dict[str, Callable[[np.random.Generator], list[dict]]] = {
    "sphere": _sphere, "torus": _torus, "cylinder": _cylinder, "cone": _cone, "box": _box,
    "ellipsoid": _ellipsoid, "capsule": _capsule, "dumbbell": _dumbbell, "mushroom": _mushroom,
    "lamp": _lamp, "table": _table}


def random_rotations(count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` rotation matrices (count, 3, 3), uniform on SO(3): the QR factor of a Gaussian
    matrix with the signs of R's diagonal moved into Q (Mezzadri 2007), a column flipped where the
    determinant is -1 (float32, on the generator's device)."""
    q, r = torch.linalg.qr(torch.randn(count, 3, 3, generator=generator, device=generator.device))
    q = q * torch.diagonal(r, dim1=-2, dim2=-1).sign().unsqueeze(-2)
    return torch.cat([q[..., :1] * torch.linalg.det(q)[:, None, None], q[..., 1:]], dim=-1)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A Haar-uniform rotation (det +1) from a unit quaternion with i.i.d. Gaussian components."""
    w, x, y, z = (q := rng.standard_normal(4)) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


# ----------------------------------------------------------------------- public API
def make_shapes(count: int, points: int = 2048, *, families: Sequence[str] | None = None,
                seed: int = 0, normalize: str = "shape", rotate: bool = True,
                stats: tuple[Sequence[float], float] | None = None) -> ShapeSet:
    """``count`` shapes of ``points`` area-uniform surface points each.

    Shape i belongs to ``families[i % len(families)]`` (default: all of SHAPE_FAMILIES) and draws
    its size, proportions, rotation and points from ``np.random.default_rng([seed, i])``, so a set
    is reproducible and a shorter set is a prefix of a longer one (with ``normalize="shape"``).
    ``rotate=False`` keeps the canonical pose (axes of revolution along z). ``stats`` (mean (3,),
    std) fixes the ``"dataset"`` normalisation, e.g. to a training set's ``params[0]`` values.
    """
    names = SHAPE_FAMILIES if families is None else tuple(families)
    bad = [f for f in names if f not in _BUILDERS]
    if not names or bad:
        raise ValueError(f"families must be a non-empty subset of {SHAPE_FAMILIES}, got {bad or list(names)}")
    if count < 1 or points < 1:
        raise ValueError(f"count and points must be >= 1, got count={count}, points={points}")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if stats is not None and normalize != "dataset":
        raise ValueError(f"stats only apply to normalize='dataset', got normalize={normalize!r}")
    clouds = np.empty((count, points, 3))
    params: list[dict] = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        name = names[i % len(names)]
        size = rng.uniform(0.75, 1.25)
        parts = [scale_part(p, size) for p in _BUILDERS[name](rng)]
        rotation = random_rotation(rng) if rotate else np.eye(3)
        clouds[i] = sample_parts(rng, parts, points) @ rotation.T
        params.append({"family": name, "parts": parts, "rotation": rotation.tolist()})
    if normalize == "shape":
        _, shift, scale = normalize_clouds(clouds)
    elif normalize == "dataset":
        if stats is None:
            shift = clouds.reshape(-1, 3).mean(axis=0)[None, None]
            scale = np.full((count, 1, 1), (clouds - shift).std())
        else:
            shift = np.asarray(stats[0], dtype=np.float64).reshape(1, 1, 3)
            scale = np.full((count, 1, 1), float(stats[1]))
    else:
        shift, scale = np.zeros((1, 1, 3)), np.ones((count, 1, 1))
    clouds = (clouds - shift) / scale
    shift = np.broadcast_to(shift, (count, 1, 3))
    for i, p in enumerate(params):
        p["shift"], p["scale"] = shift[i, 0].tolist(), float(scale[i, 0, 0])
    family = np.array([SHAPE_FAMILIES.index(p["family"]) for p in params], dtype=np.int64)
    return ShapeSet(clouds.astype(np.float32), family, params)


def normalize_clouds(clouds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PointFlow's per-shape normalisation (``make_shapes(normalize="shape")``, and a user's clouds): each
    cloud ``(S, N, 3)`` minus its mean (``shift``, (S, 1, 3)), divided by one scalar (``scale``,
    (S, 1, 1)), the standard deviation of its 3N centred coordinates. Returns
    ``(normalised, shift, scale)``; ``normalised * scale + shift`` gives the clouds back."""
    clouds = np.asarray(clouds, dtype=np.float64)
    shift = clouds.mean(axis=1, keepdims=True)
    scale = (clouds - shift).reshape(len(clouds), -1).std(axis=1)[:, None, None]
    if not (scale > 0).all():
        raise ValueError(f"cloud {int(np.flatnonzero(scale.ravel() <= 0)[0])} has all its points at one place "
                         "(no scale to normalise by)")
    return (clouds - shift) / scale, shift, scale


def resample(params: dict, points: int, seed: int = 0) -> np.ndarray:
    """``points`` fresh area-uniform points (float32 (points, 3)) of the shape ``params`` describes,
    in its normalised coordinates (e.g. a denser reference surface, or a re-sampled copy)."""
    rng = np.random.default_rng(seed)
    world = sample_parts(rng, params["parts"], points) @ np.asarray(params["rotation"]).T
    return ((world - np.asarray(params["shift"])) / params["scale"]).astype(np.float32)


def _as_numpy(points: Any) -> np.ndarray:
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    return np.asarray(points, dtype=np.float64)


def point_to_surface(points: Any, params: dict | Sequence[dict]) -> np.ndarray:
    """Exact distance from each point to its shape's surface, in the normalised coordinates.

    ``points`` (N, 3) with one params dict, or (B, N, 3) with B dicts (numpy or torch); returns
    float64 numpy (N,) or (B, N). For a composite it is the minimum over its parts.
    """
    x = _as_numpy(points)
    if x.ndim == 2 and isinstance(params, dict):
        x, params, single = x[None], [params], True
    elif x.ndim == 3 and not isinstance(params, dict) and len(params) == len(x):
        single = False
    else:
        raise ValueError(f"point_to_surface needs (N, 3) with one params dict or (B, N, 3) with B dicts, "
                         f"got points of shape {x.shape}")
    if x.shape[-1] != 3:
        raise ValueError(f"points must have 3 coordinates, got shape {x.shape}")
    out = np.empty(x.shape[:2])
    for b, p in enumerate(params):
        canonical = (x[b] * p["scale"] + np.asarray(p["shift"])) @ np.asarray(p["rotation"])
        out[b] = np.min([part_distance(canonical, part) for part in p["parts"]], axis=0) / p["scale"]
    return out[0] if single else out


def cut_by_plane(points: Any, keep: int, seed: int | np.random.Generator = 0,
                 return_directions: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The partial cloud for completion: for each cloud a uniform random direction d, and the
    ``keep`` points with the largest x . d (one side of a plane through the shape, placed so every
    partial has ``keep`` points), in their original order. (S, N, 3) -> (S, keep, 3); (N, 3) ->
    (keep, 3); float32 numpy. ``return_directions`` also returns the plane normals d ((S, 3) or (3,))."""
    x = _as_numpy(points)
    single = x.ndim == 2
    x = x[None] if single else x
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"cut_by_plane needs points of shape (S, N, 3) or (N, 3), got {x.shape}")
    if not 1 <= keep <= x.shape[1]:
        raise ValueError(f"keep must be in [1, {x.shape[1]}], got {keep}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    direction = rng.standard_normal((len(x), 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    height = np.einsum("snd,sd->sn", x, direction)
    index = np.sort(np.argsort(-height, axis=1, kind="stable")[:, :keep], axis=1)
    partial = np.take_along_axis(x, index[:, :, None], axis=1).astype(np.float32)
    if single:
        partial, direction = partial[0], direction[0]
    return (partial, direction) if return_directions else partial
