"""Generated point-cloud shapes: analytic surfaces sampled uniformly by area (nothing downloads).

    from ddpmkit.data.shapes import make_shapes, point_to_surface, cut_by_plane
    shapes = make_shapes(600, 2048, seed=0)                   # (600, 2048, 3) float32, 11 families
    d = point_to_surface(shapes.points[:4] + noise, shapes.params[:4])   # exact distances (4, 2048)
    partial = cut_by_plane(shapes.points, keep=1024, seed=1)   # completion condition (600, 1024, 3)

Every shape is a union of *parts* in a canonical frame, then a uniform random rotation (a unit
quaternion from four Gaussians is Haar-distributed; det R = +1), then normalisation:

* ``"profile"``: a surface of revolution about z, given by its meridian profile in the (rho, z)
  half-plane as straight segments and circular arcs (sphere, torus, cylinder with caps, cone with
  base, capsule, dumbbell, mushroom, lamp, table legs). Sampling is exactly uniform by area: a
  piece is chosen with probability proportional to its area (Pappus: 2 pi * mean rho * length);
  on a segment the arc-length fraction s has density proportional to rho(s), drawn by inverting its
  quadratic CDF; on an arc the angle is drawn by rejection on the area element rho = c + a cos(alpha)
  (the torus is one full arc); the azimuth is uniform. The distance is exact: the distance from
  (rho, z) to the profile in the half-plane.
* ``"box"``: six rectangles chosen by area; exact distance.
* ``"ellipsoid"``: rejection on the area element: u uniform on the unit sphere, mapped to
  (a u_x, b u_y, c u_z) and kept with probability g(u) / max(ab, bc, ca), where
  g(u) = sqrt((bc u_x)^2 + (ca u_y)^2 + (ab u_z)^2) is the map's area scale; area
  4 pi abc R_G(a^-2, b^-2, c^-2) (Carlson). Distance: safeguarded Newton on the Lagrange
  parameter t of the closest point x_i = a_i^2 p_i / (a_i^2 + t), exact to rounding, including the
  interior points whose closest point is off the axes' formula (the smallest axis is taken from
  the constraint).

Composites are single profiles where the parts are coaxial (capsule, dumbbell, mushroom, lamp:
the surface of the union, no hidden surface). The table's parts are kept whole: its legs (open at
the top) meet the top's underside, and the underside discs under the legs (4 pi r^2, < 1% of the
area) stay sampled; ``point_to_surface`` measures to the same sampled surface (min over parts).

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
from scipy.special import elliprg

__all__ = ["SHAPE_FAMILIES", "ShapeSet", "make_shapes", "point_to_surface", "cut_by_plane",
           "resample", "surface_area", "random_rotation", "normalize_clouds"]

SHAPE_FAMILIES: tuple[str, ...] = ("sphere", "torus", "cylinder", "cone", "box", "ellipsoid",
                                   "capsule", "dumbbell", "mushroom", "lamp", "table")
NORMALIZE_MODES = ("shape", "dataset", "none")
PI = np.pi


@dataclass
class ShapeSet:
    """``points`` (S, N, 3) float32; ``family`` (S,) int64 index into SHAPE_FAMILIES; ``params`` one
    dict per shape ({"family", "parts", "rotation", "shift", "scale"}) for :func:`point_to_surface`."""
    points: np.ndarray
    family: np.ndarray
    params: list[dict]

    def __len__(self) -> int:
        return len(self.points)


# ----------------------------------------------------------------------- profile pieces
def _seg(r0: float, z0: float, r1: float, z1: float) -> list:
    return ["seg", float(r0), float(z0), float(r1), float(z1)]


def _arc(cr: float, cz: float, a: float, a0: float, a1: float) -> list:
    return ["arc", float(cr), float(cz), float(a), float(a0), float(a1)]


def _piece_area(piece: list) -> float:
    if piece[0] == "seg":
        _, r0, z0, r1, z1 = piece
        return PI * (r0 + r1) * np.hypot(r1 - r0, z1 - z0)
    _, cr, _, a, a0, a1 = piece
    return 2 * PI * a * (cr * (a1 - a0) + a * (np.sin(a1) - np.sin(a0)))


def _rejection(rng: np.random.Generator, n: int, propose: Callable[[int], np.ndarray],
               weight: Callable[[np.ndarray], np.ndarray], bound: float) -> np.ndarray:
    """``n`` draws of density proportional to ``weight`` (<= ``bound``) under the proposal."""
    kept, have = [propose(0)], 0
    while have < n:
        x = propose(2 * (n - have) + 16)
        x = x[rng.random(len(x)) * bound < weight(x)]
        kept.append(x)
        have += len(x)
    return np.concatenate(kept)[:n]


def _sample_piece(rng: np.random.Generator, piece: list, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rho, z) of ``n`` points whose revolution is area-uniform on the piece's surface."""
    if piece[0] == "seg":
        _, r0, z0, r1, z1 = piece
        u = rng.random(n)          # CDF u = (r0 s + (r1 - r0) s^2 / 2) / ((r0 + r1) / 2), inverted stably
        s = u * (r0 + r1) / (np.sqrt(r0 * r0 + u * (r1 * r1 - r0 * r0)) + r0)
        return r0 + (r1 - r0) * s, z0 + (z1 - z0) * s
    _, cr, cz, a, a0, a1 = piece
    max_cos = 1.0 if 2 * PI * np.ceil(a0 / (2 * PI)) <= a1 else max(np.cos(a0), np.cos(a1))
    alpha = _rejection(rng, n, lambda m: rng.uniform(a0, a1, m),
                       lambda al: cr + a * np.cos(al), cr + a * max_cos)
    return cr + a * np.cos(alpha), cz + a * np.sin(alpha)


def _piece_distance(rho: np.ndarray, z: np.ndarray, piece: list) -> np.ndarray:
    """Distance in the (rho, z) half-plane from the points to a segment or arc."""
    if piece[0] == "seg":
        _, r0, z0, r1, z1 = piece
        dr, dz = r1 - r0, z1 - z0
        s = np.clip(((rho - r0) * dr + (z - z0) * dz) / max(dr * dr + dz * dz, 1e-300), 0.0, 1.0)
        return np.hypot(rho - r0 - s * dr, z - z0 - s * dz)
    _, cr, cz, a, a0, a1 = piece
    vr, vz = rho - cr, z - cz
    on_arc = np.mod(np.arctan2(vz, vr) - a0, 2 * PI) <= (a1 - a0) + 1e-12
    ends = [np.hypot(rho - cr - a * np.cos(e), z - cz - a * np.sin(e)) for e in (a0, a1)]
    return np.where(on_arc, np.abs(np.hypot(vr, vz) - a), np.minimum(*ends))


# ----------------------------------------------------------------------- parts
def _profile(pieces: list, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> dict:
    return {"kind": "profile", "pieces": pieces, "offset": [float(x), float(y), float(z)]}


def _ellipsoid_area(axes: Sequence[float]) -> float:
    a, b, c = axes
    return float(4 * PI * a * b * c * elliprg(a**-2, b**-2, c**-2))


def _part_area(part: dict) -> float:
    if part["kind"] == "profile":
        return float(sum(_piece_area(p) for p in part["pieces"]))
    if part["kind"] == "box":
        hx, hy, hz = part["half"]
        return 8.0 * (hx * hy + hy * hz + hz * hx)
    return _ellipsoid_area(part["axes"])


def _sample_part(rng: np.random.Generator, part: dict, n: int) -> np.ndarray:
    if part["kind"] == "profile":
        areas = np.array([_piece_area(p) for p in part["pieces"]])
        counts = rng.multinomial(n, areas / areas.sum())
        rho, z = (np.concatenate(v) for v in zip(*(_sample_piece(rng, p, k)
                                                    for p, k in zip(part["pieces"], counts))))
        phi = rng.uniform(0.0, 2 * PI, n)
        local = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)
    elif part["kind"] == "box":
        half = np.asarray(part["half"], dtype=np.float64)
        face_area = np.array([half[1] * half[2], half[2] * half[0], half[0] * half[1]])
        axis = rng.choice(3, size=n, p=face_area / face_area.sum())
        local = rng.uniform(-1.0, 1.0, (n, 3))
        local[np.arange(n), axis] = rng.choice([-1.0, 1.0], size=n)
        local *= half
    else:
        axes = np.asarray(part["axes"], dtype=np.float64)
        a, b, c = axes

        def on_sphere(m: int) -> np.ndarray:
            u = rng.standard_normal((m, 3))
            return u / np.linalg.norm(u, axis=1, keepdims=True)
        scale = np.array([b * c, c * a, a * b])
        u = _rejection(rng, n, on_sphere, lambda v: np.linalg.norm(v * scale, axis=1), scale.max())
        local = u * axes
    return local + np.asarray(part["offset"])


def _ellipsoid_distance(q: np.ndarray, axes: Sequence[float], iterations: int = 80) -> np.ndarray:
    """Exact distance to the ellipsoid sum (x_i / a_i)^2 = 1 (Eberly, "Distance from a point to an
    ellipse, an ellipsoid, or a hyperellipsoid"): the closest point is x_i = a_i^2 p_i / (a_i^2 + t)
    with F(t) = sum (a_i p_i / (a_i^2 + t))^2 - 1 = 0, t in (-min a^2, max(a) |p|]; F is convex and
    decreasing there, so Newton kept inside the sign bracket (bisection otherwise) converges."""
    a = np.asarray(axes, dtype=np.float64)
    p = np.abs(q)
    a2 = a * a
    smallest = a2 <= a2.min() * (1 + 1e-12)
    lo = np.full(len(p), -a2.min())
    hi = a.max() * np.linalg.norm(p, axis=1)
    t = hi.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(iterations):
            ratio2 = (a * p / (a2 + t[:, None])) ** 2
            f = ratio2.sum(1) - 1.0
            slope = -2.0 * (ratio2 / (a2 + t[:, None])).sum(1)
            hi = np.where(f <= 0, t, hi)
            lo = np.where(f > 0, t, lo)
            newton = t - f / slope
            t = np.where((newton > lo) & (newton < hi), newton, 0.5 * (lo + hi))
        x = np.where(smallest, 0.0, a2 * p / (a2 + t[:, None]))
    rest = np.clip(1.0 - ((x / a) ** 2).sum(1), 0.0, None)        # the smallest axes from the constraint
    p_small = np.where(smallest, p, 0.0)
    norm = np.linalg.norm(p_small, axis=1, keepdims=True)
    first = np.zeros_like(p_small)
    first[:, np.argmax(smallest)] = 1.0
    direction = np.where(norm > 0, p_small / np.where(norm > 0, norm, 1.0), first)
    x = x + direction * (np.sqrt(rest * a2.min()))[:, None]
    return np.linalg.norm(p - x, axis=1)


def _part_distance(points: np.ndarray, part: dict) -> np.ndarray:
    q = points - np.asarray(part["offset"])
    if part["kind"] == "profile":
        rho, z = np.hypot(q[:, 0], q[:, 1]), q[:, 2]
        return np.min([_piece_distance(rho, z, p) for p in part["pieces"]], axis=0)
    if part["kind"] == "box":
        excess = np.abs(q) - np.asarray(part["half"])
        return np.linalg.norm(np.maximum(excess, 0.0), axis=1) - np.minimum(excess.max(1), 0.0)
    return _ellipsoid_distance(q, part["axes"])


# ----------------------------------------------------------------------- families (raw units ~1)
def _cylinder_pieces(r: float, z0: float, z1: float, top: bool = True) -> list:
    pieces = [_seg(0, z0, r, z0), _seg(r, z0, r, z1)]
    return pieces + [_seg(r, z1, 0, z1)] if top else pieces


def _sphere(rng: np.random.Generator) -> list[dict]:
    return [_profile([_arc(0, 0, 1.0, -PI / 2, PI / 2)])]


def _torus(rng: np.random.Generator) -> list[dict]:
    return [_profile([_arc(1.0, 0, rng.uniform(0.2, 0.55), -PI, PI)])]


def _cylinder(rng: np.random.Generator) -> list[dict]:
    r, h = rng.uniform(0.3, 0.8), rng.uniform(0.8, 2.2)
    return [_profile(_cylinder_pieces(r, -h / 2, h / 2))]


def _cone(rng: np.random.Generator) -> list[dict]:
    r, h = rng.uniform(0.4, 0.9), rng.uniform(0.8, 2.0)
    return [_profile([_seg(0, -h / 3, r, -h / 3), _seg(r, -h / 3, 0, 2 * h / 3)])]


def _box(rng: np.random.Generator) -> list[dict]:
    return [{"kind": "box", "half": rng.uniform(0.25, 1.0, 3).tolist(), "offset": [0.0, 0.0, 0.0]}]


def _ellipsoid(rng: np.random.Generator) -> list[dict]:
    return [{"kind": "ellipsoid", "axes": rng.uniform(0.35, 1.2, 3).tolist(), "offset": [0.0, 0.0, 0.0]}]


def _capsule(rng: np.random.Generator) -> list[dict]:
    r, c = rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.9)
    return [_profile([_arc(0, -c, r, -PI / 2, 0), _seg(r, -c, r, c), _arc(0, c, r, 0, PI / 2)])]


def _dumbbell(rng: np.random.Generator) -> list[dict]:
    big, c = rng.uniform(0.3, 0.45), rng.uniform(0.75, 1.1)
    bar = rng.uniform(0.25, 0.45) * big
    neck, angle = np.sqrt(big**2 - bar**2), np.arccos(bar / big)    # where the bar meets a ball
    return [_profile([_arc(0, -c, big, -PI / 2, angle), _seg(bar, neck - c, bar, c - neck),
                      _arc(0, c, big, -angle, PI / 2)])]


def _mushroom(rng: np.random.Generator) -> list[dict]:
    stem, height, cap = rng.uniform(0.12, 0.25), rng.uniform(0.4, 0.9), rng.uniform(0.45, 0.85)
    pieces = _cylinder_pieces(stem, 0, height, top=False) + [_seg(stem, height, cap, height),
                                                             _arc(0, height, cap, 0, PI / 2)]
    return [_profile(pieces, z=-(height + cap) / 2)]


def _lamp(rng: np.random.Generator) -> list[dict]:
    base, base_h, pole = rng.uniform(0.35, 0.55), rng.uniform(0.05, 0.12), rng.uniform(0.03, 0.06)
    top, shade_h, low = rng.uniform(1.0, 1.6), rng.uniform(0.3, 0.5), rng.uniform(0.35, 0.6)
    pieces = [_seg(0, 0, base, 0), _seg(base, 0, base, base_h), _seg(base, base_h, pole, base_h),
              _seg(pole, base_h, pole, top), _seg(pole, top, 0, top),
              _seg(low, top - 0.7 * shade_h, rng.uniform(0.4, 0.7) * low, top + 0.3 * shade_h)]
    return [_profile(pieces, z=-(top + 0.3 * shade_h) / 2)]


def _table(rng: np.random.Generator) -> list[dict]:
    tx, ty, thick = rng.uniform(0.6, 1.0), rng.uniform(0.35, 0.8), rng.uniform(0.03, 0.07)
    leg, height = rng.uniform(0.035, 0.07), rng.uniform(0.5, 1.0)
    lx, ly = tx - rng.uniform(1.5, 3.0) * leg, ty - rng.uniform(1.5, 3.0) * leg
    z0 = -(height + 2 * thick) / 2
    legs = [_profile(_cylinder_pieces(leg, 0, height, top=False), sx * lx, sy * ly, z0)
            for sx in (-1, 1) for sy in (-1, 1)]
    return [{"kind": "box", "half": [tx, ty, thick], "offset": [0.0, 0.0, z0 + height + thick]}] + legs


_BUILDERS: dict[str, Callable[[np.random.Generator], list[dict]]] = {
    "sphere": _sphere, "torus": _torus, "cylinder": _cylinder, "cone": _cone, "box": _box,
    "ellipsoid": _ellipsoid, "capsule": _capsule, "dumbbell": _dumbbell, "mushroom": _mushroom,
    "lamp": _lamp, "table": _table}


def surface_area(parts: list[dict]) -> float:
    """Total area of a shape's parts in canonical (raw) units."""
    return float(sum(_part_area(p) for p in parts))


def _sample_parts(rng: np.random.Generator, parts: list[dict], n: int) -> np.ndarray:
    areas = np.array([_part_area(p) for p in parts])
    counts = rng.multinomial(n, areas / areas.sum())
    cloud = np.concatenate([_sample_part(rng, p, k) for p, k in zip(parts, counts)])
    return cloud[rng.permutation(n)]


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
        parts = [_scale_part(p, size) for p in _BUILDERS[name](rng)]
        rotation = random_rotation(rng) if rotate else np.eye(3)
        clouds[i] = _sample_parts(rng, parts, points) @ rotation.T
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


def _scale_part(part: dict, size: float) -> dict:
    scaled = dict(part, offset=[size * v for v in part["offset"]])
    if part["kind"] == "profile":
        scaled["pieces"] = [[k, *(size * np.asarray(v[:3])).tolist(), *v[3:]] if k == "arc"
                            else [k, *(size * np.asarray(v)).tolist()] for k, *v in part["pieces"]]
    else:
        key = "half" if part["kind"] == "box" else "axes"
        scaled[key] = [size * v for v in part[key]]
    return scaled


def resample(params: dict, points: int, seed: int = 0) -> np.ndarray:
    """``points`` fresh area-uniform points (float32 (points, 3)) of the shape ``params`` describes,
    in its normalised coordinates (e.g. a denser reference surface, or a re-sampled copy)."""
    rng = np.random.default_rng(seed)
    world = _sample_parts(rng, params["parts"], points) @ np.asarray(params["rotation"]).T
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
        out[b] = np.min([_part_distance(canonical, part) for part in p["parts"]], axis=0) / p["scale"]
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
