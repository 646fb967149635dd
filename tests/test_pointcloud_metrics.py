"""Point-cloud metrics against brute force and known cases: Chamfer, exact EMD, MMD, COV, 1-NNA."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ddpmkit.data.shapes import SHAPE_FAMILIES, make_shapes
from ddpmkit.evaluation.metrics import (chamfer, emd, generation_metrics, label_mix, mmd_cov, one_nna,
                                        pairwise_chamfer, pairwise_emd)


def brute_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    d = np.array([[np.sum((p - q) ** 2) for q in b] for p in a])
    return d.min(1).mean() + d.min(0).mean()


def brute_emd(a: np.ndarray, b: np.ndarray) -> float:
    return min(np.mean([np.linalg.norm(a[i] - b[j]) for i, j in enumerate(perm)])
               for perm in itertools.permutations(range(len(b))))


def test_chamfer_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 7, 3)), rng.normal(size=(4, 5, 3)) + 0.3
    expected = [brute_chamfer(x, y) for x, y in zip(a, b)]
    assert np.allclose(chamfer(torch.from_numpy(a), torch.from_numpy(b)).numpy(), expected, rtol=1e-12)
    assert np.allclose(chamfer(a, b, chunk=1).numpy(), expected, rtol=1e-12)      # one cloud per block
    # a cloud against itself: |x|^2 - 2 x.x + |x|^2 through a matrix product cancels to rounding only
    # (float64, |x|^2 of order 10: residues of order 1e-15, whose size depends on the CPU's kernel)
    assert torch.allclose(chamfer(a, a), torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-12)


def test_emd_matches_permutations():
    rng = np.random.default_rng(1)
    for n in (1, 2, 4, 6):
        a, b = rng.normal(size=(3, n, 3)), rng.uniform(-1, 2, size=(3, n, 3))
        expected = [brute_emd(x, y) for x, y in zip(a, b)]
        assert np.allclose(emd(a, b).numpy(), expected, rtol=1e-12)
    a = rng.normal(size=(2, 6, 3))
    shuffled = a[:, rng.permutation(6)]
    assert np.allclose(emd(a, shuffled).numpy(), 0.0)           # a permutation of the same set


def test_pairwise_matches_paired_and_is_symmetric():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 6, 3)), rng.normal(size=(3, 6, 3))
    d = pairwise_chamfer(x, y, chunk=40)                         # blocks of one pair at a time
    for i, j in itertools.product(range(5), range(3)):
        assert np.isclose(d[i, j].item(), brute_chamfer(x[i], y[j]), rtol=1e-12)
    assert torch.allclose(d, pairwise_chamfer(x, y), rtol=1e-12)
    full = pairwise_chamfer(x, x)
    tri = pairwise_chamfer(x, chunk=80)
    assert torch.allclose(tri, full, atol=1e-12) and torch.equal(tri, tri.T) and not tri.diagonal().any()
    e = pairwise_emd(x, y)
    assert np.allclose(e.numpy(), [[brute_emd(p, q) for q in y] for p in x], rtol=1e-12)
    assert torch.allclose(pairwise_emd(x), pairwise_emd(x, x), atol=1e-12)


def test_float32_chamfer_is_close_to_float64():
    clouds = make_shapes(6, 512, seed=3).points
    d32 = pairwise_chamfer(clouds)
    d64 = pairwise_chamfer(clouds.astype(np.float64))
    assert d32.dtype == torch.float32 and d64.dtype == torch.float64
    assert torch.allclose(d32.double(), d64, rtol=1e-4, atol=1e-6)


def test_mmd_cov_known_cases():
    dist = np.array([[1.0, 5.0, 9.0, 9.0],          # samples x references
                     [2.0, 0.5, 9.0, 9.0],
                     [9.0, 9.0, 9.0, 3.0]])
    mmd, cov = mmd_cov(dist)
    assert mmd == pytest.approx((1.0 + 0.5 + 9.0 + 3.0) / 4) and cov == pytest.approx(3 / 4)
    mmd, cov = mmd_cov(np.array([[0.1, 0.2, 0.3]] * 2))      # every sample picks reference 0
    assert mmd == pytest.approx(0.2) and cov == pytest.approx(1 / 3)
    clouds = make_shapes(8, 64, seed=4).points
    result = generation_metrics(clouds, clouds, metrics=("cd", "emd"))
    assert result["mmd-cd"] == pytest.approx(0, abs=1e-6) and result["mmd-emd"] == 0
    assert result["cov-cd"] == 1 and result["cov-emd"] == 1
    assert result["1-nna-cd"] == 0 and result["1-nna-emd"] == 0     # copies: each one's neighbour is its twin
    assert all(type(v) is float for v in result.values())


def test_one_nna_hand_made():
    line = lambda p, q: np.abs(np.subtract.outer(p, q))
    refs, far, near = np.array([0.0, 0.04, 3.0]), np.array([10.0, 11.0]), np.array([0.1, 3.1])
    assert one_nna(line(refs, refs), line(refs, far), line(far, far)) == 1.0
    # ref 0 -> 0.04 (right), ref 0.04 -> 0 (right), ref 3 -> 3.1 (wrong), sample 0.1 -> 0.04 (wrong),
    # sample 3.1 -> 3 (wrong): 2 of 5 right
    assert one_nna(line(refs, refs), line(refs, near), line(near, near)) == pytest.approx(2 / 5)
    # a tie goes to the first index (references first): sample 1 between refs 0 and 2 -> "reference"
    assert one_nna(line(refs[:1], refs[:1]), line(refs[:1], [1.0]), np.zeros((1, 1))) == 0.0


def test_one_nna_same_distribution_is_near_half_and_different_families_near_one():
    # one family, so both sets are exchangeable draws (make_shapes cycles families in a fixed order,
    # and two sets of the same fixed composition sit below 0.5 at small sizes)
    a = make_shapes(128, 64, families=["ellipsoid"], seed=30).points
    b = make_shapes(128, 64, families=["ellipsoid"], seed=31).points
    same = generation_metrics(a, b, metrics=("cd",))
    assert abs(same["1-nna-cd"] - 0.5) < 0.15
    spheres = make_shapes(24, 96, families=["sphere"], seed=12).points
    tori = make_shapes(24, 96, families=["torus"], seed=13).points
    apart = generation_metrics(spheres, tori)
    assert apart["1-nna-cd"] > 0.95 and apart["1-nna-emd"] > 0.95
    close = generation_metrics(spheres, make_shapes(24, 96, families=["sphere"], seed=14).points)
    assert apart["mmd-cd"] > 3 * close["mmd-cd"] and apart["mmd-emd"] > 1.3 * close["mmd-emd"]
    # emd_points = all points only permutes each cloud: EMD is unchanged
    assert generation_metrics(spheres, tori, metrics=("emd",), emd_points=96) == pytest.approx(
        {k: v for k, v in apart.items() if k.endswith("emd")}, abs=1e-6)


def test_label_mix_names_the_families_a_model_makes():
    names = ["sphere", "table", "lamp"]
    labelled = make_shapes(33, 64, families=names, seed=40)   # 11 of each, cycled
    label = np.array([names.index(SHAPE_FAMILIES[f]) for f in labelled.family])
    np.testing.assert_array_equal(label, np.arange(33) % 3)
    # samples: 8 spheres and 4 tables of the set, jittered by 1e-3 (far below any two shapes' Chamfer
    # distance), no lamp: each sample's nearest labelled cloud is its own original
    picked = np.r_[np.flatnonzero(label == 0)[:8], np.flatnonzero(label == 1)[:4]]
    samples = labelled.points[picked] + 1e-3 * np.random.default_rng(0).standard_normal((12, 64, 3))
    d = pairwise_chamfer(labelled.points, samples)
    np.testing.assert_array_equal(d.argmin(0).numpy(), picked)
    mix, tv = label_mix(d, label, 3)
    np.testing.assert_array_equal(mix, [8 / 12, 4 / 12, 0.0])
    assert tv == pytest.approx(0.5 * (abs(8 / 12 - 1 / 3) + abs(4 / 12 - 1 / 3) + 1 / 3), abs=1e-12)
    # the labelled clouds themselves: every one its own nearest, the same mix, total variation 0
    mix, tv = label_mix(pairwise_chamfer(labelled.points), label, 3)
    np.testing.assert_array_equal(mix, [1 / 3] * 3)
    assert tv == 0.0
    with pytest.raises(ValueError, match="labels must lie in"):
        label_mix(np.zeros((3, 2)), [0, 1, 3], 3)
    with pytest.raises(ValueError, match="3 labels"):
        label_mix(np.zeros((2, 2)), [0, 1, 2], 3)


def test_bad_inputs():
    good = np.zeros((2, 4, 3))
    bad = good.copy()
    bad[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        chamfer(bad, good)
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        pairwise_chamfer(np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="equal cloud sizes"):
        emd(good, np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="metrics"):
        generation_metrics(good, good, metrics=("jsd",))
    with pytest.raises(ValueError, match="emd_points"):
        generation_metrics(np.zeros((2, 4, 3)), np.zeros((2, 5, 3)), metrics=("emd",))
