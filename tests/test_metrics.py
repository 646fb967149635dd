"""Metrics against closed forms and independent formulas (float64)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from hypothesis import given, settings, strategies as st

from ddpmkit.evaluation.metrics import (FeatureStats, feature_metrics, fraction_in_manifold, frechet_distance,
                             frechet_distance_from_features, inception_score,
                             inception_score_from_logits, kernel_inception_distance, knn_radii,
                             mean_log_density, median_heuristic_bandwidth, metric_floor, point_metrics,
                             polynomial_kernel, precision_recall, rbf_mmd2, sliced_wasserstein,
                             sqrtm_psd, wasserstein_1d)

from ddpmkit.evaluation.metrics._common import mmd2_from_kernel

torch.set_num_threads(1)


def random_spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d + 2))
    return a @ a.T / a.shape[1]


def random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


# --- Frechet distance ------------------------------------------------------------------------

def test_frechet_diagonal_and_commuting_closed_form():
    rng = np.random.default_rng(0)
    d = 7
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    q = random_orthogonal(rng, d)  # commuting: same eigenvectors
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_noncommuting_against_eigenvalues_of_product_and_scipy_sqrtm():
    rng = np.random.default_rng(1)
    d = 12
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # independent: the eigenvalues of the (non-symmetric) product S1 S2 are real and >= 0
    trace_root = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(min=0)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_root
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(expected, rel=1e-9)
    via_scipy = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
    assert got == pytest.approx(via_scipy, rel=1e-8)


def test_frechet_one_dimensional_is_gaussian_w2():
    # for scalars FD = (m1 - m2)^2 + (s1 - s2)^2, the squared 2-Wasserstein distance
    assert frechet_distance([0.5], [[4.0]], [-1.0], [[0.25]]) == pytest.approx(1.5**2 + 1.5**2)


def test_frechet_zero_for_identical_sets_even_singular():
    rng = np.random.default_rng(2)
    few = rng.normal(size=(5, 20))  # 5 samples in 20 dimensions: rank-4 covariance
    assert frechet_distance_from_features(few, few) == pytest.approx(0.0, abs=1e-10)
    stats = FeatureStats.from_features(few)
    assert np.linalg.matrix_rank(stats.covariance) == 4
    assert frechet_distance_from_features(stats, few + 1.0) == pytest.approx(20.0, rel=1e-9)


def test_feature_stats_match_numpy_and_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(50, 6)).astype(np.float32)
    stats = FeatureStats.from_features(torch.from_numpy(f))
    np.testing.assert_allclose(stats.mean, f.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-10)
    stats.save(tmp_path / "ref.npz")
    again = FeatureStats.load(tmp_path / "ref.npz")
    np.testing.assert_array_equal(again.covariance, stats.covariance)
    assert again.count == 50


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_frechet_is_symmetric_nonnegative_and_its_root_a_metric(seed, d):
    rng = np.random.default_rng(seed)
    gaussians = [(rng.normal(size=d), random_spd(rng, d, rank=rng.integers(1, d + 3))) for _ in range(3)]
    fd = lambda i, j: frechet_distance(*gaussians[i], *gaussians[j])  # noqa: E731
    assert fd(0, 1) >= 0
    assert fd(0, 1) == pytest.approx(fd(1, 0), rel=1e-7, abs=1e-9)
    # sqrt(FD) is the 2-Wasserstein distance between Gaussians: a metric
    assert math.sqrt(fd(0, 2)) <= math.sqrt(fd(0, 1)) + math.sqrt(fd(1, 2)) + 1e-6


def test_sqrtm_psd_squares_back():
    s = random_spd(np.random.default_rng(4), 9)
    root = sqrtm_psd(torch.from_numpy(s)).numpy()
    np.testing.assert_allclose(root @ root, s, atol=1e-12)


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="cov2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


# --- KID and MMD -----------------------------------------------------------------------------

def gaussian_moments(mu: np.ndarray, cov: np.ndarray) -> list[np.ndarray]:
    """E x, E x x^T, E x (x) x (x) x of N(mu, cov)."""
    second = cov + np.outer(mu, mu)
    third = (np.einsum("i,j,k->ijk", mu, mu, mu) + np.einsum("i,jk->ijk", mu, cov)
             + np.einsum("j,ik->ijk", mu, cov) + np.einsum("k,ij->ijk", mu, cov))
    return [mu, second, third]


def test_kid_matches_population_mmd_of_gaussians():
    # (x.y/d + 1)^3 = sum_j C(3, j) d^-j <x^(j), y^(j)>: MMD^2 = sum_j C(3,j) d^-j |M_j(P) - M_j(Q)|^2
    d = 2
    mu_p, mu_q = np.array([0.0, 0.0]), np.array([0.4, -0.2])
    cov_p, cov_q = np.eye(d), np.array([[1.2, 0.3], [0.3, 0.8]])
    mp, mq = gaussian_moments(mu_p, cov_p), gaussian_moments(mu_q, cov_q)
    expected = sum(math.comb(3, j) * d ** -j * np.sum((mp[j - 1] - mq[j - 1]) ** 2) for j in (1, 2, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, d, generator=g, dtype=torch.float64)
    y = torch.randn(20000, d, generator=g, dtype=torch.float64) @ torch.from_numpy(np.linalg.cholesky(cov_q)).T
    y = y + torch.from_numpy(mu_q)
    kid = kernel_inception_distance(x, y, num_subsets=100, subset_size=500, generator=g)
    assert kid.subset_size == 500
    assert kid.mean == pytest.approx(expected, rel=0.15)  # seeds 0-5 all gave 0.93-1.04 of it


def test_kid_unbiased_estimator_matches_brute_force():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.5
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / 30
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(6)) / 36
    kid = kernel_inception_distance(x, y, num_subsets=3, subset_size=6)
    assert kid.mean == pytest.approx(xx + yy - 2 * xy, rel=1e-12)  # full sets: every subset equal
    chunked = mmd2_from_kernel(polynomial_kernel, torch.from_numpy(x), torch.from_numpy(y), chunk=4)
    assert chunked == pytest.approx(kid.mean, rel=1e-12)
    assert kid.std == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(polynomial_kernel(torch.from_numpy(x), torch.from_numpy(y)).numpy(),
                               (x @ y.T / 3 + 1) ** 3)


def test_kid_near_zero_for_same_distribution_and_positive_for_shifted():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(600, 16, generator=g), torch.randn(600, 16, generator=g)
    same = kernel_inception_distance(x, y, num_subsets=20, subset_size=300, generator=g)
    shifted = kernel_inception_distance(x, y + 0.5, num_subsets=20, subset_size=300, generator=g)
    assert abs(same.mean) < 3 * same.std / math.sqrt(20) + 1e-3
    assert shifted.mean > 10 * max(abs(same.mean), same.std)


def test_kid_subsets_come_from_the_generator():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(100, 4, generator=g), torch.randn(100, 4, generator=g)
    first = kernel_inception_distance(x, y, 5, 30, torch.Generator().manual_seed(7))
    again = kernel_inception_distance(x, y, 5, 30, torch.Generator().manual_seed(7))
    other = kernel_inception_distance(x, y, 5, 30, torch.Generator().manual_seed(8))
    assert first == again and first.mean != other.mean


def test_rbf_mmd_matches_gaussian_closed_form():
    # P = N(0, s^2 I), Q = N(delta, s^2 I), kernel bandwidth b: E k = (b^2/(b^2+2s^2))^(d/2) exp(-|m|^2/(2(b^2+2s^2)))
    d, s, b = 2, 1.0, 1.0  # here MMD^2 depends on b: 0.324, but 0.220 at b / sqrt(2)
    delta = torch.tensor([2.0, 0.0], dtype=torch.float64)
    c = b**2 + 2 * s**2
    expected = 2 * (b**2 / c) ** (d / 2) * (1 - math.exp(-float(delta @ delta) / (2 * c)))
    g = torch.Generator().manual_seed(3)
    x = s * torch.randn(3000, d, generator=g, dtype=torch.float64)
    y = s * torch.randn(3000, d, generator=g, dtype=torch.float64) + delta
    assert rbf_mmd2(x, y, bandwidths=b, unbiased=True) == pytest.approx(expected, rel=0.08)
    # several bandwidths: the kernel is their average, so MMD^2 is the average too
    pair = rbf_mmd2(x[:500], y[:500], bandwidths=[0.5, 2.0])
    assert pair == pytest.approx((rbf_mmd2(x[:500], y[:500], 0.5) + rbf_mmd2(x[:500], y[:500], 2.0)) / 2, rel=1e-12)


def test_rbf_mmd_zero_for_identical_and_positive_otherwise():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(200, 2, generator=g)
    assert rbf_mmd2(x, x) == pytest.approx(0.0, abs=1e-12)
    assert rbf_mmd2(x, x + 0.3, bandwidths=[0.5, 1.0, 2.0]) > 1e-3
    assert rbf_mmd2(x, x + 0.3) > rbf_mmd2(x, x + 0.1) > 0


def test_median_heuristic_is_the_median_pairwise_distance():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(20, 2))
    expected = np.median(scipy.spatial.distance.pdist(np.vstack([x, y])))
    assert median_heuristic_bandwidth(x, y) == pytest.approx(expected, rel=1e-12)


# --- precision and recall --------------------------------------------------------------------

def test_knn_radii_against_brute_force():
    rng = np.random.default_rng(7)
    p = rng.normal(size=(40, 3))
    dist = scipy.spatial.distance.cdist(p, p)
    expected = np.sort(dist, axis=1)[:, 3]  # column 0 is the point itself
    np.testing.assert_allclose(knn_radii(p, k=3, chunk=7).numpy(), expected, rtol=1e-10)


def test_precision_recall_identical_disjoint_and_edge():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 8, generator=g)
    assert precision_recall(x, x) == precision_recall(x, x.clone())
    assert (precision_recall(x, x).precision, precision_recall(x, x).recall) == (1.0, 1.0)
    far = precision_recall(x, x + 100.0)
    assert (far.precision, far.recall) == (0.0, 0.0)
    # points 0..9 on a line, k=1: each ball has radius 1, so the manifold is [-1, 10]
    line = torch.arange(10.0)[:, None]
    assert fraction_in_manifold(torch.tensor([[9.9], [10.0], [10.5], [-1.2]]), line, knn_radii(line, 1)) == 0.5


def test_precision_recall_see_mode_dropping():
    # real data: two far clusters; the "model" reproduces only one of them
    g = torch.Generator().manual_seed(6)
    centers = torch.tensor([[0.0, 0.0], [50.0, 0.0]])
    real = torch.randn(400, 2, generator=g) + centers[torch.arange(400) % 2]
    fake = torch.randn(400, 2, generator=g) + centers[0]
    pr = precision_recall(real, fake)
    assert pr.precision > 0.9
    assert 0.4 < pr.recall < 0.55


# --- Inception-Score-style score -------------------------------------------------------------

def test_inception_score_bounds():
    assert inception_score(torch.full((50, 10), 0.1)).mean == pytest.approx(1.0)
    confident = torch.eye(10).repeat(5, 1)  # one-hot, each class equally often
    assert inception_score(confident).mean == pytest.approx(10.0)
    one_class = torch.zeros(20, 10)
    one_class[:, 3] = 1
    assert inception_score(one_class).mean == pytest.approx(1.0)


def test_inception_score_equals_entropy_identity_and_splits():
    # exp(E KL(p(y|x) || p(y))) = exp(H(p(y)) - E H(p(y|x)))
    rng = np.random.default_rng(8)
    p = rng.dirichlet(np.full(6, 0.3), size=200)
    expected = np.exp(scipy.stats.entropy(p.mean(0)) - scipy.stats.entropy(p, axis=1).mean())
    assert inception_score(p).mean == pytest.approx(expected, rel=1e-10)
    halves = inception_score(p, splits=2)
    parts = [inception_score(part).mean for part in (p[:100], p[100:])]
    assert halves.mean == pytest.approx(np.mean(parts)) and halves.std == pytest.approx(np.std(parts))
    logits = np.log(p)
    assert inception_score_from_logits(logits).mean == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="probabilities"):
        inception_score(logits)


# --- sliced Wasserstein ----------------------------------------------------------------------

@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(1, 30))
def test_wasserstein_1d_matches_scipy_for_unequal_sizes(seed, n, m):
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=n), rng.normal(1.0, 2.0, size=m)
    assert float(wasserstein_1d(u, v, p=1)[0]) == pytest.approx(
        scipy.stats.wasserstein_distance(u, v), rel=1e-9, abs=1e-12)


def test_sliced_wasserstein_is_exact_w_in_one_dimension():
    rng = np.random.default_rng(9)
    u, v = rng.normal(size=(100, 1)), rng.exponential(size=(100, 1))
    exact_w2 = math.sqrt(np.mean((np.sort(u[:, 0]) - np.sort(v[:, 0])) ** 2))  # equal sizes
    assert sliced_wasserstein(u, v, num_projections=5, p=2) == pytest.approx(exact_w2, rel=1e-12)
    u3 = rng.normal(size=(70, 1))
    assert sliced_wasserstein(u3, v, num_projections=3, p=1) == pytest.approx(
        scipy.stats.wasserstein_distance(u3[:, 0], v[:, 0]), rel=1e-10)


def test_sliced_wasserstein_of_a_translation():
    # SW_2^2(X, X + delta) = E_theta (theta . delta)^2 = |delta|^2 / D
    g = torch.Generator().manual_seed(9)
    x = torch.randn(500, 4, generator=g, dtype=torch.float64)
    delta = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    sw = sliced_wasserstein(x, x + delta, num_projections=4000, generator=g)
    assert sw**2 == pytest.approx(float(delta @ delta) / 4, rel=0.05)
    assert sliced_wasserstein(x, x) == 0.0


# --- mean log-density and floors -------------------------------------------------------------

def test_mean_log_density_is_negative_entropy_for_true_samples():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    log_p = lambda z: -0.5 * (z**2).sum(1) - math.log(2 * math.pi)  # noqa: E731
    result = mean_log_density(x, log_p)
    assert abs(result.mean - (-1.0 - math.log(2 * math.pi))) < 4 * result.stderr
    assert mean_log_density(x + 3.0, log_p).mean < result.mean - 4


def test_metric_floor_is_feature_metrics_with_held_out_data_and_detects_a_shift():
    g = torch.Generator().manual_seed(11)
    train, test = torch.randn(400, 5, generator=g), torch.randn(150, 5, generator=g)
    floor = metric_floor(train, test, kid_subsets=10, generator=torch.Generator().manual_seed(0))
    again = feature_metrics(train, test, kid_subsets=10, generator=torch.Generator().manual_seed(0))
    assert floor == again
    worse = feature_metrics(train, test * 1.5 + 0.5, kid_subsets=10)
    for key in ("fd", "kid"):
        assert worse[key] > 5 * floor[key]
    assert worse["precision"] < floor["precision"]
    logits = torch.randn(150, 10, generator=g)
    scored = metric_floor(train, test, candidate_logits=logits, kid_subsets=2)
    assert scored["is"] == pytest.approx(inception_score_from_logits(logits).mean, rel=1e-12)   # the same float64 path
    # confident predictions spread evenly over the 10 classes (15 each): IS = exp(log 10) = 10; a logit gap
    # of 50 leaks e^-50 of the mass, far below the tolerance
    sharp = 50.0 * torch.nn.functional.one_hot(torch.arange(150) % 10, 10).double()
    assert metric_floor(train, test, candidate_logits=sharp, kid_subsets=2)["is"] == pytest.approx(10.0, rel=1e-9)


def test_point_metrics_on_raw_coordinates_and_their_floor():
    g = torch.Generator().manual_seed(12)
    train, test = torch.randn(600, 2, generator=g), torch.randn(200, 2, generator=g)
    log_p = lambda z: -0.5 * (z**2).sum(1) - math.log(2 * math.pi)  # noqa: E731
    floor = metric_floor(train, test, metrics=point_metrics, log_density=log_p,
                         generator=torch.Generator().manual_seed(0))
    assert floor["mmd2"] == pytest.approx(rbf_mmd2(train, test, median_heuristic_bandwidth(train)))
    assert floor["sw2"] == pytest.approx(
        sliced_wasserstein(train, test, 256, generator=torch.Generator().manual_seed(0)))
    collapsed = test * 0.3  # a model that covers only the centre of the data
    worse = point_metrics(train, collapsed, log_density=log_p)
    assert worse["recall"] < floor["recall"] - 0.3 and worse["sw2"] > 2 * floor["sw2"]
    assert worse["mmd2"] > 5 * floor["mmd2"]
    assert worse["log_density"] > floor["log_density"]  # the log-density alone rewards collapse


# ---------------------------------------------------------------------------- copies
def test_nearest_neighbour_distances_match_brute_force():
    from ddpmkit.evaluation.metrics import nearest_neighbour_distances

    g = torch.Generator().manual_seed(0)
    x, ref = torch.randn(37, 2, 3, generator=g), torch.randn(50, 2, 3, generator=g)
    brute = torch.tensor([min(float((a.double() - b.double()).norm()) for b in ref) for a in x], dtype=torch.float64)
    assert torch.allclose(nearest_neighbour_distances(x, ref, chunk=8), brute, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="features"):
        nearest_neighbour_distances(x, torch.randn(5, 7))


def test_copy_check_flags_copies_and_not_fresh_draws():
    """Copies of training points all fall under the threshold; fresh draws from the same
    Gaussian fall under it about as often as the quantile says (the held-out split's own rate)."""
    from ddpmkit.evaluation.metrics import copy_check

    g = torch.Generator().manual_seed(1)
    train, held_out, fresh = (torch.randn(n, 4, generator=g) for n in (2000, 1000, 4000))
    copied = train[:300] + 1e-3 * torch.randn(300, 4, generator=g)
    assert copy_check(copied, train, held_out)["copy_fraction"] == 1.0
    honest = copy_check(fresh, train, held_out, quantile=0.05)
    assert abs(honest["copy_fraction"] - 0.05) < 0.02
    assert abs(honest["median_nn_distance"] / honest["median_nn_distance_held_out"] - 1) < 0.05
    with pytest.raises(ValueError, match="quantile"):
        copy_check(fresh, train, held_out, quantile=1.0)
