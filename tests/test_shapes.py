"""The generated shapes: exact area-uniform sampling, exact surface distances, normalisation,
rotations, determinism, the plane cut, and the point-file reader's checks."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.spatial import cKDTree

from ddpmkit.data.pointfiles import read_points
from ddpmkit.data.shapes import (SHAPE_FAMILIES, cut_by_plane, make_shapes, point_to_surface,
                                 random_rotation, resample, surface_area)

N_BIG = 60_000


def canonical(family: str, seed: int = 0) -> dict:
    """Params of one shape in its canonical pose and raw units (rotation I, shift 0, scale 1)."""
    return make_shapes(1, 8, families=[family], seed=seed, normalize="none", rotate=False).params[0]


def fraction_close(hits: np.ndarray, expected: float) -> None:
    """A binomial fraction within 5 standard errors of its closed form."""
    assert abs(hits.mean() - expected) < 5 * np.sqrt(expected * (1 - expected) / hits.size) + 1e-12


def hand_made(parts: list[dict]) -> dict:
    return {"family": "custom", "parts": parts, "rotation": np.eye(3).tolist(), "shift": [0, 0, 0], "scale": 1.0}


# --------------------------------------------------------------------------- area-uniform sampling
def test_sphere_heights_are_uniform_archimedes():
    params = canonical("sphere")
    x = resample(params, N_BIG, seed=1).astype(np.float64)
    r = np.linalg.norm(x, axis=1).mean()
    fraction_close(x[:, 2] > r / 2, 0.25)            # a zone's area is proportional to its height


def test_torus_outer_half_fraction():
    params = canonical("torus")
    _, cr, _, a, _, _ = params["parts"][0]["pieces"][0]
    x = resample(params, N_BIG, seed=2).astype(np.float64)
    angle = np.arctan2(x[:, 2], np.hypot(x[:, 0], x[:, 1]) - cr)
    # area element (R + a cos t) a dt dphi: the outer half (|t| < pi/2) holds 1/2 + a / (pi R)
    fraction_close(np.abs(angle) < np.pi / 2, 0.5 + a / (np.pi * cr))
    fraction_close(np.abs(angle) < np.pi / 4, 0.25 + a * np.sin(np.pi / 4) / (np.pi * cr))


def test_cylinder_and_cone_cap_fractions():
    cyl = canonical("cylinder")
    _, _, z0, r, _ = cyl["parts"][0]["pieces"][0]
    h = -2 * z0
    x = resample(cyl, N_BIG, seed=3).astype(np.float64)
    fraction_close(np.abs(np.abs(x[:, 2]) - h / 2) < 1e-5, r / (r + h))   # 2 pi r^2 / (2 pi r^2 + 2 pi r h)
    cone = canonical("cone")
    _, _, base, r, _ = cone["parts"][0]["pieces"][0]
    apex = cone["parts"][0]["pieces"][1][4]
    slant = np.hypot(r, apex - base)
    x = resample(cone, N_BIG, seed=4).astype(np.float64)
    fraction_close(np.abs(x[:, 2] - base) < 1e-5, r / (r + slant))          # pi r^2 / (pi r^2 + pi r s)
    lateral = x[np.abs(x[:, 2] - base) >= 1e-5]                              # density of height ~ radius
    t = (lateral[:, 2] - base) / (apex - base)
    fraction_close(t < 0.5, 0.75)


def test_box_faces_and_composite_part_fractions():
    box = canonical("box")
    hx, hy, hz = box["parts"][0]["half"]
    x = resample(box, N_BIG, seed=5).astype(np.float64)
    fraction_close(np.abs(np.abs(x[:, 0]) - hx) < 1e-5, hy * hz / (hx * hy + hy * hz + hz * hx))
    capsule = canonical("capsule")
    _, _, minus_c, r, _, _ = capsule["parts"][0]["pieces"][0]        # ends: balls at z = +-c
    x = resample(capsule, N_BIG, seed=6).astype(np.float64)
    fraction_close(np.abs(x[:, 2]) > -minus_c + 1e-6, r / (r - minus_c))   # 4 pi r^2 / (4 pi r^2 + 4 pi r c)
    mush = canonical("mushroom")
    pieces, z_off = mush["parts"][0]["pieces"], mush["parts"][0]["offset"][2]
    stem, height, cap = pieces[0][3], pieces[1][4], pieces[3][3]
    total = np.pi * stem**2 + 2 * np.pi * stem * height + np.pi * (cap**2 - stem**2) + 2 * np.pi * cap**2
    assert np.isclose(surface_area(mush["parts"]), total)
    x = resample(mush, N_BIG, seed=7).astype(np.float64)
    fraction_close(x[:, 2] > height + z_off + 1e-5, 2 * np.pi * cap**2 / total)


def test_spheroid_zone_fraction_and_area_against_quadrature():
    a, c = 0.6, 1.3
    params = hand_made([{"kind": "ellipsoid", "axes": [a, a, c], "offset": [0, 0, 0]}])

    def ring(z: float) -> float:                     # 2 pi rho sqrt(1 + rho'^2) = 2 pi sqrt(rho^2 + (rho rho')^2)
        return 2 * np.pi * np.sqrt(a * a * (1 - z * z / c**2) + (a * a * z / c**2) ** 2)
    total = 2 * quad(ring, 0, c, limit=200)[0]
    assert np.isclose(surface_area(params["parts"]), total, rtol=1e-7)
    x = resample(params, N_BIG, seed=8).astype(np.float64)
    fraction_close(x[:, 2] > c / 2, quad(ring, c / 2, c)[0] / total)
    fraction_close(np.abs(x[:, 2]) < c / 4, 2 * quad(ring, 0, c / 4)[0] / total)


# --------------------------------------------------------------------------- distances
def test_generated_points_lie_on_the_surface_every_family():
    shapes = make_shapes(2 * len(SHAPE_FAMILIES), 512, seed=11)
    assert shapes.points.shape == (22, 512, 3) and shapes.points.dtype == np.float32
    assert [SHAPE_FAMILIES[f] for f in shapes.family] == [p["family"] for p in shapes.params]
    assert point_to_surface(shapes.points, shapes.params).max() < 2e-6


@pytest.mark.parametrize("family", SHAPE_FAMILIES)
def test_distance_matches_a_dense_surface_sample(family):
    """Exact distance <= nearest of 200k surface points, and within their spacing of it."""
    shapes = make_shapes(1, 64, families=[family], seed=12)
    params = shapes.params[0]
    dense = cKDTree(resample(params, 200_000, seed=13).astype(np.float64))
    rng = np.random.default_rng(14)
    query = shapes.points[0][:40].astype(np.float64) + rng.normal(0, 0.25, (40, 3))
    query = np.concatenate([query, rng.normal(0, 0.3, (20, 3))])    # many inside the shape
    exact = point_to_surface(query, params)
    brute = dense.query(query)[0]
    assert np.all(exact <= brute + 1e-6)
    assert np.all(brute - exact < 0.03)


def test_distance_along_normals_sphere_box_ellipsoid():
    rng = np.random.default_rng(15)
    shapes = make_shapes(3, 256, families=["sphere"], seed=16)       # rotated and normalised
    for cloud, params in zip(shapes.points.astype(np.float64), shapes.params):
        centre = -np.asarray(params["shift"]) / params["scale"]
        normal = (cloud - centre) / np.linalg.norm(cloud - centre, axis=1, keepdims=True)
        step = rng.uniform(-0.5, 0.5, (len(cloud), 1))
        assert np.allclose(point_to_surface(cloud + step * normal, params), np.abs(step[:, 0]), atol=1e-6)
    box = canonical("box", seed=3)
    x = resample(box, 2000, seed=17).astype(np.float64)
    half = np.asarray(box["parts"][0]["half"])
    normal = np.where(np.abs(np.abs(x) - half) < 1e-5, np.sign(x), 0.0)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)              # edges: the diagonal normal
    step = rng.uniform(0, 0.5, 2000)
    assert np.allclose(point_to_surface(x + step[:, None] * normal, box), step, atol=1e-6)
    for seed in range(3):                                                 # outward, and inward within the
        ell = canonical("ellipsoid", seed=seed)                           # smallest curvature radius
        axes = np.asarray(ell["parts"][0]["axes"])
        x = resample(ell, 2000, seed=18 + seed).astype(np.float64)
        x /= np.sqrt(((x / axes) ** 2).sum(1, keepdims=True))            # onto the surface exactly
        normal = x / axes**2
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        step = np.where(rng.random(2000) < 0.5, rng.uniform(0, 1.0, 2000),
                        -rng.uniform(0, 0.99, 2000) * axes.min() ** 2 / axes.max())
        assert np.allclose(point_to_surface(x + step[:, None] * normal, ell), np.abs(step), atol=1e-9)


def test_ellipsoid_interior_degenerate_points():
    """Centre and points on the long axes: the closest point comes from the smallest axis."""
    params = hand_made([{"kind": "ellipsoid", "axes": [1.0, 0.5, 0.3], "offset": [0, 0, 0]}])
    query = np.array([[0, 0, 0], [0.2, 0, 0], [0, 0.1, 0], [0.0, 0.0, 0.1]])
    x1 = 0.2 / (1 - 0.09)                                   # x_1 = a^2 p / (a^2 - c^2), z from the constraint
    expected = [0.3, np.hypot(0.2 - x1, 0.3 * np.sqrt(1 - x1**2)), None, 0.2]
    y1 = 0.25 * 0.1 / (0.25 - 0.09)
    expected[2] = np.hypot(0.1 - y1, 0.3 * np.sqrt(1 - (y1 / 0.5) ** 2))
    assert np.allclose(point_to_surface(query, params), expected, atol=1e-12)


# --------------------------------------------------------------------------- normalisation, rotations
def test_normalisation_modes():
    shape = make_shapes(12, 300, seed=21)
    assert np.abs(shape.points.mean(axis=1)).max() < 1e-6
    assert np.allclose(shape.points.reshape(12, -1).std(axis=1), 1.0, atol=1e-5)
    raw = make_shapes(12, 300, seed=21, normalize="none").points.astype(np.float64)
    centred = raw - raw.mean(axis=1, keepdims=True)
    assert np.allclose(shape.points, centred / centred.reshape(12, -1).std(1)[:, None, None], atol=1e-5)
    data = make_shapes(12, 300, seed=21, normalize="dataset")
    flat = data.points.reshape(-1, 3).astype(np.float64)
    assert np.abs(flat.mean(0)).max() < 1e-6 and np.isclose(flat.std(), 1.0, atol=1e-5)
    assert np.ptp(data.points.reshape(12, -1).std(axis=1)) > 0.05       # shapes keep their sizes
    stats = (data.params[0]["shift"], data.params[0]["scale"])
    test = make_shapes(12, 300, seed=22, normalize="dataset", stats=stats)
    raw_test = make_shapes(12, 300, seed=22, normalize="none").points
    assert np.allclose(test.points, (raw_test - np.asarray(stats[0])) / stats[1], atol=1e-5)


def test_rotations_are_proper_and_haar():
    rng = np.random.default_rng(23)
    rotations = np.stack([random_rotation(rng) for _ in range(4000)])
    assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(rotations), 1.0)
    assert np.abs(rotations.mean(0)).max() < 5 * np.sqrt(1 / 3 / 4000)   # Haar: E R = 0, E R_ij^2 = 1/3
    assert np.abs((rotations**2).mean(0) - 1 / 3).max() < 0.03
    for p in make_shapes(11, 16, seed=24).params:
        assert np.isclose(np.linalg.det(p["rotation"]), 1.0)


def test_determinism_and_prefix():
    a, b = make_shapes(7, 128, seed=5), make_shapes(7, 128, seed=5)
    assert np.array_equal(a.points, b.points) and a.params == b.params
    assert not np.allclose(a.points, make_shapes(7, 128, seed=6).points)
    assert np.array_equal(make_shapes(3, 128, seed=5).points, a.points[:3])
    only = make_shapes(4, 32, families=["torus", "table"], seed=0)
    assert [SHAPE_FAMILIES[f] for f in only.family] == ["torus", "table", "torus", "table"]
    with pytest.raises(ValueError, match="families"):
        make_shapes(2, families=["teapot"])
    with pytest.raises(ValueError, match="normalize"):
        make_shapes(2, normalize="max")


def test_cut_by_plane_keeps_one_side():
    shapes = make_shapes(5, 400, seed=31)
    partial, directions = cut_by_plane(shapes.points, 150, seed=3, return_directions=True)
    assert partial.shape == (5, 150, 3) and np.allclose(np.linalg.norm(directions, axis=1), 1)
    for cloud, part, d in zip(shapes.points, partial, directions):
        kept = (cloud[:, None] == part[None]).all(-1).any(1)
        assert kept.sum() == 150
        assert np.array_equal(cloud[kept], part)                          # original order kept
        assert (cloud[kept] @ d).min() >= (cloud[~kept] @ d).max()        # a separating plane
    assert np.array_equal(cut_by_plane(shapes.points, 150, seed=3), partial)
    assert cut_by_plane(shapes.points[0], 10, seed=1).shape == (10, 3)
    with pytest.raises(ValueError, match="keep"):
        cut_by_plane(shapes.points, 401)


# --------------------------------------------------------------------------- point files
def ply_bytes(fmt: str, vertices: np.ndarray, faces: bool = True, before: bool = True) -> bytes:
    head = [b"ply", f"format {fmt} 1.0".encode(), b"comment made by a test"]
    if before:
        head += [b"element camera 1", b"property float focal"]
    head += [f"element vertex {len(vertices)}".encode(), b"property float x", b"property float y",
             b"property float z", b"property uchar red"]
    if faces:
        head += [b"element face 1", b"property list uchar int vertex_indices"]
    head = b"\n".join(head + [b"end_header"]) + b"\n"
    if fmt == "ascii":
        rows = (["35.0"] if before else []) + [f"{x} {y} {z} 7" for x, y, z in vertices]
        return head + "\n".join(rows + (["3 0 1 2"] if faces else [])).encode() + b"\n"
    order = "<" if fmt == "binary_little_endian" else ">"
    table = np.zeros(len(vertices), dtype=[("x", order + "f4"), ("y", order + "f4"), ("z", order + "f4"),
                                           ("red", "u1")])
    for i, c in enumerate("xyz"):
        table[c] = vertices[:, i]
    cam = np.array([35.0], dtype=order + "f4").tobytes() if before else b""
    face = b"\x03" + np.array([0, 1, 2], dtype=order + "i4").tobytes() if faces else b""
    return head + cam + table.tobytes() + face


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_read_ply_round_trip(tmp_path, fmt):
    vertices = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    path = tmp_path / "cloud.ply"
    path.write_bytes(ply_bytes(fmt, vertices))
    assert np.allclose(read_points(path), vertices, atol=1e-6)


def test_read_npy_npz(tmp_path):
    clouds = make_shapes(3, 64, seed=0).points
    np.save(tmp_path / "a.npy", clouds)
    assert np.array_equal(read_points(tmp_path / "a.npy"), clouds)
    np.savez(tmp_path / "b.npz", points=clouds[0], labels=np.arange(3))
    assert np.array_equal(read_points(tmp_path / "b.npz"), clouds[0])
    np.savez(tmp_path / "c.npz", clouds[1])
    assert np.array_equal(read_points(tmp_path / "c.npz"), clouds[1])
    np.savez(tmp_path / "d.npz", a=clouds[0], b=clouds[1])
    assert np.array_equal(read_points(tmp_path / "d.npz", key="b"), clouds[1])


def test_bad_point_files(tmp_path):
    cloud = np.random.default_rng(1).normal(size=(20, 3))
    bad = cloud.copy()
    bad[3, 1] = np.nan
    cases = {"nan.npy": bad, "wide.npy": np.zeros((20, 4)), "flat.npy": np.zeros(60),
             "empty.npy": np.zeros((0, 3))}
    for name, array in cases.items():
        np.save(tmp_path / name, array)
    np.save(tmp_path / "object.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "two.npz", a=cloud, b=cloud)
    np.savez(tmp_path / "text.npz", points=np.array(["a", "b", "c"]))
    (tmp_path / "faces.ply").write_bytes(b"ply\nformat ascii 1.0\nelement face 1\n"
                                         b"property list uchar int vertex_indices\nend_header\n3 0 1 2\n")
    (tmp_path / "short.ply").write_bytes(ply_bytes("binary_little_endian", cloud)[:-40])
    (tmp_path / "short_ascii.ply").write_bytes(ply_bytes("ascii", cloud, faces=False).rsplit(b"\n", 4)[0])
    (tmp_path / "noxyz.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float u\n"
                                         b"end_header\n1\n")
    (tmp_path / "junk.ply").write_bytes(b"\x89PNG not a ply")
    (tmp_path / "nan.ply").write_bytes(ply_bytes("ascii", bad, faces=False))
    (tmp_path / "cloud.txt").write_text("1 2 3")
    messages = {"nan.npy": "NaN", "wide.npy": "shape", "flat.npy": "shape", "empty.npy": "empty",
                "object.npy": "pickle", "two.npz": "points", "text.npz": "not a point set",
                "faces.ply": "no vertex element", "short.ply": "truncated", "short_ascii.ply": "truncated",
                "noxyz.ply": "lacks", "junk.ply": "not a PLY", "nan.ply": "NaN", "cloud.txt": "must end in",
                "missing.npy": "no such file"}
    for name, fragment in messages.items():
        with pytest.raises(ValueError, match=fragment) as info:
            read_points(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)
