"""The score-based point-cloud denoiser against a Gaussian oracle.

For points drawn i.i.d. from N(mu, s^2 I) in 3-D, the denoiser at level sigma is exactly linear,
D(x, sigma) = mu + (1 - r) (x - mu) with r = sigma^2 / (s^2 + sigma^2), so
- the ascent x <- x + a_k (D - x) gives x_K - mu = prod_k (1 - a_k r) (x_0 - mu): it converges to
  mu, the mode of p_sigma (and of the posterior), at a known rate; one step of size 1 is the
  posterior mean (Tweedie);
- annealed Langevin is a linear Gaussian chain whose variance about mu follows
  V <- (1 - c r_i)^2 V + 2 c sigma_i^2 exactly, and the final denoising step scales by (1 - r_L).
- method="ode" is one Tweedie step, then Euler (DDIM eta 0) steps x' - mu = (s^2 + sigma' sigma) /
  (s^2 + sigma^2) (x - mu) down the grid, the last one (to 0) a Tweedie step; as the steps grow
  the Euler product tends to the exact probability-flow map from a to b,
  x_b - mu = sqrt((s^2 + b^2) / (s^2 + a^2)) (x_a - mu).
The closed forms are written here from scratch (float64), not with the library's helpers.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ddpmkit as dk
from ddpmkit.sampling.point_denoise import denoise_points
from oracles import gaussian_oracle

MU = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
POINTS = 256


def _setup(s: float, points: int = POINTS):
    # Luo & Hu 2021 (CVPR): T = 100, betas 1e-4 .. 0.02 (linear() scales its endpoints by 1000 / T)
    schedule = dk.Schedule.linear(100, beta_start=1e-5, beta_end=2e-3)
    process = dk.GaussianDiffusion(schedule)
    oracle = gaussian_oracle(schedule, MU.expand(points, 3), s)
    return process, oracle


def _noisy(s: float, sigma: float, batch: int, points: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    clean = MU + s * torch.randn((batch, points, 3), generator=g, dtype=torch.float64)
    return clean + sigma * torch.randn((batch, points, 3), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("steps,step_size,decay", [(30, 0.2, 0.95), (1, 1.0, 1.0), (200, 0.5, 1.0)])
def test_ascent_follows_the_closed_form(steps, step_size, decay):
    s, sigma = 0.05, 0.03
    process, oracle = _setup(s)
    y = _noisy(s, sigma, 2, POINTS)
    out = denoise_points(process, oracle, y, sigma=sigma, steps=steps, step_size=step_size, decay=decay, anneal=1.0)
    r = sigma**2 / (s**2 + sigma**2)
    factor = math.prod(1.0 - step_size * decay**k * r for k in range(steps))
    expected = MU + factor * (y - MU)
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-9)
    if steps == 200:    # converged to the mode mu of p_sigma
        assert (out - MU).abs().max() < 1e-6 * (y - MU).abs().max()
    if steps == 1:      # one Tweedie step: the posterior mean E[x_0 | y]
        torch.testing.assert_close(out, MU + s**2 / (s**2 + sigma**2) * (y - MU), rtol=1e-7, atol=1e-9)


def test_annealed_ascent_follows_the_closed_form():
    """With anneal, step k asks the denoiser at sigma_k = sigma anneal^(k / (K - 1)), so the factor
    is prod_k (1 - a_k r_k), r_k = sigma_k^2 / (s^2 + sigma_k^2)."""
    s, sigma, steps, anneal = 0.05, 0.04, 12, 0.5
    process, oracle = _setup(s)
    y = _noisy(s, sigma, 2, POINTS)
    out = denoise_points(process, oracle, y, sigma=sigma, steps=steps, anneal=anneal)
    factor = 1.0
    for k in range(steps):
        level = sigma * anneal ** (k / (steps - 1))
        factor *= 1.0 - 0.2 * 0.95**k * level**2 / (s**2 + level**2)
    torch.testing.assert_close(out, MU + factor * (y - MU), rtol=1e-7, atol=1e-9)


def test_ascent_reduces_the_error_to_the_clean_points():
    """Not a closed form but what denoising is for: the ascent's output is nearer to the clean
    points than the noisy input (here the mean squared error drops from s^2 + sigma^2 toward s^2)."""
    s, sigma = 0.01, 0.03
    process, oracle = _setup(s)
    g = torch.Generator().manual_seed(1)
    clean = MU + s * torch.randn((2, POINTS, 3), generator=g, dtype=torch.float64)
    y = clean + sigma * torch.randn((2, POINTS, 3), generator=g, dtype=torch.float64)
    out = denoise_points(process, oracle, y, sigma=sigma, anneal=1.0)
    assert ((out - clean) ** 2).mean() < 0.25 * ((y - clean) ** 2).mean()


def test_langevin_matches_the_linear_gaussian_chain():
    s, sigma, steps, c = 0.02, 0.03, 40, 0.2
    points = 4000
    process, oracle = _setup(s, points)
    y = _noisy(s, sigma, 2, points, seed=2)
    g = torch.Generator().manual_seed(3)
    out = denoise_points(process, oracle, y, sigma=sigma, steps=steps, step_size=c, method="langevin", generator=g)
    end = max(sigma / 4, process.sigma_min)
    levels = np.geomspace(sigma, end, steps)
    variance = s**2 + sigma**2                      # of the noisy points about mu
    for level in levels:
        r = level**2 / (s**2 + level**2)
        variance = (1 - c * r) ** 2 * variance + 2 * c * level**2
    r_last = levels[-1] ** 2 / (s**2 + levels[-1] ** 2)
    variance *= (1 - r_last) ** 2                    # the final denoising step
    centred = out - MU
    n = centred.numel()
    assert abs(float(centred.mean())) < 4 * math.sqrt(variance / n)
    measured = float((centred**2).mean())
    assert measured == pytest.approx(variance, rel=4 * math.sqrt(2 / n))
    again = denoise_points(process, oracle, y, sigma=sigma, steps=steps, step_size=c, method="langevin",
                           generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


@pytest.mark.parametrize("kwargs,message", [
    ({"sigma": 5.0}, "noise range"),
    ({"sigma": 0.0}, "sigma must be"),
    ({"sigma": 0.03, "method": "newton"}, "method must be"),
    ({"sigma": 0.03, "steps": 0}, "steps must be"),
    ({"sigma": 0.03, "decay": 1.5}, "decay must be"),
    ({"sigma": 0.03, "anneal": 1.5}, "anneal must be in"),
    ({"sigma": 0.03, "anneal": 0.01}, "anneal \\* sigma must lie"),
    ({"sigma": 0.03, "method": "langevin", "step_size": 2.5}, "step_size must be < 2"),
    ({"sigma": 0.03, "method": "ode", "anneal": 0.01}, "anneal \\* sigma must lie"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    process, oracle = _setup(0.05)
    y = _noisy(0.05, 0.03, 1, POINTS)
    with pytest.raises(ValueError, match=message):
        denoise_points(process, oracle, y, **kwargs)


def test_a_cloud_with_nan_or_the_wrong_shape_is_refused():
    process, oracle = _setup(0.05)
    y = _noisy(0.05, 0.03, 1, POINTS)
    y[0, 5, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        denoise_points(process, oracle, y, sigma=0.03)
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        denoise_points(process, oracle, torch.zeros(4, 3, dtype=torch.float64), sigma=0.03)


def test_one_level_per_cloud_equals_separate_calls():
    s = 0.05
    process, oracle = _setup(s)
    y = _noisy(s, 0.03, 3, POINTS)
    levels = [0.02, 0.03, 0.05]
    together = denoise_points(process, oracle, y, sigma=torch.tensor(levels, dtype=torch.float64), anneal=0.6)
    for i, level in enumerate(levels):
        alone = denoise_points(process, oracle, y[i:i + 1], sigma=level, anneal=0.6)
        torch.testing.assert_close(together[i:i + 1], alone, rtol=1e-7, atol=1e-9)


def _ode_levels(process, sigma: float, steps: int, start: float = 0.5) -> np.ndarray:
    """The ODE's levels (without the final 0): geometric from start sigma to a tenth of it, at least
    the process's sigma_min (the method's documented grid, written out here)."""
    top = max(start * sigma, float(process.sigma_min))
    return np.geomspace(top, max(0.1 * top, float(process.sigma_min)), steps)


@pytest.mark.parametrize("steps,start", [(5, None), (1, 0.5), (12, 0.8)])
def test_ode_method_follows_the_closed_form(steps, start):
    s, sigma = 0.05, 0.03
    process, oracle = _setup(s)
    y = _noisy(s, sigma, 2, POINTS)
    out = denoise_points(process, oracle, y, sigma=sigma, steps=steps, method="ode", anneal=start)
    levels = _ode_levels(process, sigma, steps, 0.5 if start is None else start)
    factor = s**2 / (s**2 + sigma**2)                                   # the Tweedie step
    for high, low in zip(levels, np.append(levels[1:], 0.0)):           # Euler = DDIM eta 0; the last: Tweedie
        factor *= (s**2 + low * high) / (s**2 + high**2)
    torch.testing.assert_close(out, MU + factor * (y - MU), rtol=1e-7, atol=1e-9)


def test_ode_method_converges_to_the_exact_flow():
    """2000 Euler steps: the product is the exact probability-flow map from a = sigma / 2 to b = a / 10
    to within Euler's first-order error, O(log(a / b) / steps) ~ 1e-3 relative."""
    s, sigma, steps = 0.1, 0.3, 2000
    process, oracle = _setup(s)
    y = _noisy(s, sigma, 1, POINTS)
    out = denoise_points(process, oracle, y, sigma=sigma, steps=steps, method="ode")
    a, b = sigma / 2, sigma / 20
    assert b > process.sigma_min    # the grid is not clipped
    flow = math.sqrt((s**2 + b**2) / (s**2 + a**2))
    factor = s**2 / (s**2 + sigma**2) * flow * s**2 / (s**2 + b**2)
    torch.testing.assert_close(out, MU + factor * (y - MU), rtol=1e-3, atol=1e-6)
    one_step = denoise_points(process, oracle, y, sigma=sigma, steps=1, method="ode")   # far from it: the test can fail
    assert not torch.allclose(one_step, out, rtol=1e-3, atol=1e-6)


def test_ode_method_with_one_level_per_cloud_equals_separate_calls():
    s = 0.05
    process, oracle = _setup(s)
    y = _noisy(s, 0.03, 3, POINTS)
    levels = [0.02, 0.03, 0.05]
    together = denoise_points(process, oracle, y, sigma=np.array(levels), steps=4, method="ode")
    for i, level in enumerate(levels):
        alone = denoise_points(process, oracle, y[i:i + 1], sigma=level, steps=4, method="ode")
        torch.testing.assert_close(together[i:i + 1], alone, rtol=1e-7, atol=1e-9)


def _zero_mean_oracle(s: float, points: int):
    schedule = dk.Schedule.linear(100, beta_start=1e-5, beta_end=2e-3)
    return dk.GaussianDiffusion(schedule), gaussian_oracle(schedule, torch.zeros(points, 3, dtype=torch.float64), s)


def test_patch_denoiser_against_a_brute_force_loop():
    """One Tweedie step by patches: every point's k nearest neighbours, centred on their mean m,
    go through the exact denoiser D(p) = (1 - r) p; the estimate of a point is the mean of
    m + D(its position - m) over the patches that hold it. Written here as plain loops."""
    s, sigma, n, k = 0.05, 0.03, 40, 8
    y = _noisy(s, sigma, 2, n, seed=4)
    r = sigma**2 / (s**2 + sigma**2)
    expected = torch.zeros_like(y)
    for b in range(2):
        sums, counts = torch.zeros(n, 3, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        for i in range(n):
            members = torch.argsort((y[b] - y[b, i]).norm(dim=1))[:k]
            centre = y[b, members].mean(dim=0)
            for j in members:
                sums[j] += centre + (1 - r) * (y[b, j] - centre)
                counts[j] += 1
        expected[b] = sums / counts[:, None]
    process, oracle = _zero_mean_oracle(s, k)
    out = denoise_points(process, oracle, y, sigma=sigma, steps=1, step_size=1.0, patch_points=k)
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-9)
    process, oracle = _zero_mean_oracle(s, n)   # one patch, the whole cloud: shrink toward the cloud's mean
    whole = denoise_points(process, oracle, y, sigma=sigma, steps=1, step_size=1.0, patch_points=n)
    mean = y.mean(dim=1, keepdim=True)
    torch.testing.assert_close(whole, mean + (1 - r) * (y - mean), rtol=1e-7, atol=1e-9)
