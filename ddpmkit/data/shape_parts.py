"""The parts generated shapes are made of: exactly area-uniform sampling and exact distances.

A part is a dict in a shape's canonical frame (plain JSON values):

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
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.special import elliprg

__all__ = ["segment", "arc", "profile", "part_area", "part_distance", "sample_parts", "scale_part", "surface_area",
           "PI"]

PI = np.pi


# ----------------------------------------------------------------------- profile pieces
def segment(r0: float, z0: float, r1: float, z1: float) -> list:
    """A straight piece of a meridian profile, from (r0, z0) to (r1, z1) in the (rho, z) half-plane."""
    return ["seg", float(r0), float(z0), float(r1), float(z1)]


def arc(cr: float, cz: float, a: float, a0: float, a1: float) -> list:
    """A circular piece of a meridian profile: centre (cr, cz), radius a, angles a0..a1 (radians)."""
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
def profile(pieces: list, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> dict:
    """A surface of revolution about z from its meridian ``pieces``, offset by (x, y, z)."""
    return {"kind": "profile", "pieces": pieces, "offset": [float(x), float(y), float(z)]}


def _ellipsoid_area(axes: Sequence[float]) -> float:
    a, b, c = axes
    return float(4 * PI * a * b * c * elliprg(a**-2, b**-2, c**-2))


def part_area(part: dict) -> float:
    """The area of one part in canonical (raw) units."""
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


def part_distance(points: np.ndarray, part: dict) -> np.ndarray:
    """Exact distance from ``points`` (N, 3) in the canonical frame to one part's surface."""
    q = points - np.asarray(part["offset"])
    if part["kind"] == "profile":
        rho, z = np.hypot(q[:, 0], q[:, 1]), q[:, 2]
        return np.min([_piece_distance(rho, z, p) for p in part["pieces"]], axis=0)
    if part["kind"] == "box":
        excess = np.abs(q) - np.asarray(part["half"])
        return np.linalg.norm(np.maximum(excess, 0.0), axis=1) - np.minimum(excess.max(1), 0.0)
    return _ellipsoid_distance(q, part["axes"])


# ----------------------------------------------------------------------- families (raw units ~1)
def surface_area(parts: list[dict]) -> float:
    """Total area of a shape's parts in canonical (raw) units."""
    return float(sum(part_area(p) for p in parts))


def sample_parts(rng: np.random.Generator, parts: list[dict], n: int) -> np.ndarray:
    """``n`` area-uniform points on the union of ``parts`` (counts multinomial in their areas), shuffled."""
    areas = np.array([part_area(p) for p in parts])
    counts = rng.multinomial(n, areas / areas.sum())
    cloud = np.concatenate([_sample_part(rng, p, k) for p, k in zip(parts, counts)])
    return cloud[rng.permutation(n)]


def scale_part(part: dict, size: float) -> dict:
    """The part scaled by ``size`` about the canonical origin."""
    scaled = dict(part, offset=[size * v for v in part["offset"]])
    if part["kind"] == "profile":
        scaled["pieces"] = [[k, *(size * np.asarray(v[:3])).tolist(), *v[3:]] if k == "arc"
                            else [k, *(size * np.asarray(v)).tolist()] for k, *v in part["pieces"]]
    else:
        key = "half" if part["kind"] == "box" else "axes"
        scaled[key] = [size * v for v in part[key]]
    return scaled
