"""Every sampler on every schedule: linear, cosine and sigmoid, at 10, 20 and 50 steps.

Data x_0 ~ N(0.3, 0.5^2), eps prediction, T = 1000, the exact (oracle) noise predictor. The
oracle is affine in x_t, so

* a deterministic sampler maps x_T to A x_T + b: two runs give its output law N(b, A^2) with no
  sampling error, and its W2 distance to the data must be at most twice DDIM's at the same
  number of steps (the suite's other oracles use the linear schedule only, which is how heun at
  10 cosine steps once gave a sample sd of 7.4 unnoticed);
* an ancestral step (DDIM's eta = 1, DDPM with fixed-small variance, the reverse SDE's exact
  step) maps N(m, v) to N(mu + c (m - mu), c^2 v + sigma_up^2) with c and sigma_up from the grid:
  the samples must match that law within sampling error, and the law must approach the data as
  the steps grow (a first-order sampler's bias);
* the second-order stochastic sampler (DPM-Solver++(2M) SDE) and DDPM with the exact learned
  variance (iDDPM) must match the data itself within sampling error at 50 steps.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from oracles import gaussian_oracle

import ddpmkit as dk
from ddpmkit.sampling import SIGMA_MAX, sigma_grid

MU, SD, T = 0.3, 0.5, 1000
SCHEDULES = ("linear", "cosine", "sigmoid")
STEPS = (10, 20, 50)
DETERMINISTIC = ("euler", "heun", "dpmpp2m", "dpmpp3m", "rk45", "heun_churn")   # heun_churn: s_churn = 0, karras grid
pytestmark = pytest.mark.filterwarnings("ignore:grid=")   # DDIM's 'uniform' grid misses the top: it warns


def setup(schedule: str, learned: bool = False):
    sched = dk.Schedule.named(schedule, T)
    process = dk.GaussianDiffusion(sched, variance="learned_range" if learned else "fixed_small")
    return process, gaussian_oracle(sched, [MU], [SD], var_values="exact" if learned else None)


def w2(mean: float, std: float) -> float:
    """W2 distance between N(mean, std^2) and the data N(MU, SD^2)."""
    return math.hypot(mean - MU, std - SD)


def affine_law(process, model, sampler: str, steps: int, **params) -> tuple[float, float]:
    """(b, |A|) of a deterministic sampler: x_T -> A x_T + b."""
    zero, one = (torch.full((1, 1), v, dtype=torch.float64) for v in (0.0, 1.0))
    b = float(dk.sample(process, model, None, sampler, steps, x_T=zero, progress=False, **params)[0, 0])
    a = float(dk.sample(process, model, None, sampler, steps, x_T=one, progress=False, **params)[0, 0]) - b
    return b, abs(a)


@pytest.fixture(scope="module")
def ddim_errors() -> dict[tuple[str, int], float]:
    out = {}
    for schedule in SCHEDULES:
        process, oracle = setup(schedule)
        for steps in STEPS:
            out[schedule, steps] = w2(*affine_law(process, oracle, "ddim", steps))
    return out


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_deterministic_samplers_are_no_worse_than_twice_ddim(schedule, sampler, ddim_errors):
    process, oracle = setup(schedule)
    errors = {steps: w2(*affine_law(process, oracle, sampler, steps)) for steps in STEPS}
    for steps, error in errors.items():
        assert error <= 2.0 * ddim_errors[schedule, steps] + 1e-3, (steps, errors, ddim_errors)


def ancestral_law(sigmas: np.ndarray) -> tuple[float, float]:
    """The exact output law of eta = 1 ancestral steps over ``sigmas`` for N(MU, SD^2) data,
    written from scratch: in x_hat = x_0 + sigma eps the exact denoiser is
    mu + k (x - mu), k = SD^2 / (SD^2 + sigma^2), and the step is D + r^2 (x - D) + sigma_up z,
    r = sigma'/sigma, sigma_up^2 = sigma'^2 (1 - r^2). x_hat starts as sigma_0 N(0, 1)."""
    mean, var = 0.0, sigmas[0] ** 2
    for sigma, nxt in zip(sigmas[:-1], sigmas[1:]):
        k = SD**2 / (SD**2 + sigma**2)
        r2 = (nxt / sigma) ** 2
        c = k + r2 * (1.0 - k)
        mean = MU + c * (mean - MU)
        var = c * c * var + nxt**2 * (1.0 - r2)
    return mean, math.sqrt(var)


def monte_carlo(process, model, sampler: str, steps: int, n: int = 20000, **params) -> tuple[float, float]:
    x_T = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = dk.sample(process, model, None, sampler, steps, x_T=x_T, seed=1, progress=False, **params)
    return float(x.mean()), float(x.std())


def assert_within_sampling_error(got: tuple[float, float], law: tuple[float, float], n: int = 20000) -> None:
    (m, s), (m0, s0) = got, law
    z_mean, z_std = (m - m0) / (s0 / math.sqrt(n)), (s - s0) / (s0 / math.sqrt(2 * n))
    assert abs(z_mean) < 4.5 and abs(z_std) < 4.5, (got, law, z_mean, z_std)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sampler,params,bounded", [("sde", {}, True), ("ddpm", {}, False),
                                                    ("ddim", {"eta": 1.0}, False)])
def test_ancestral_samplers_follow_their_exact_law(schedule, sampler, params, bounded):
    process, oracle = setup(schedule)
    grid = {"sde": "linspace", "ddpm": "linspace", "ddim": "uniform"}[sampler]
    errors = []
    for steps in STEPS:
        law = ancestral_law(sigma_grid(process, steps, grid, sigma_max=SIGMA_MAX if bounded else None))
        assert_within_sampling_error(monte_carlo(process, oracle, sampler, steps, **params), law)
        errors.append(w2(*law))
    assert errors[0] > errors[1] > errors[2], errors   # first order: the bias shrinks with the steps


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sampler,learned", [("dpmpp2m_sde", False), ("dpmpp3m_sde", False), ("ddpm", True)])
def test_second_order_and_learned_variance_samplers_match_the_data_at_50_steps(schedule, sampler, learned):
    process, oracle = setup(schedule, learned)
    assert_within_sampling_error(monte_carlo(process, oracle, sampler, 50), (MU, SD))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_corrector_moves_the_reverse_sde_towards_the_data(schedule):
    process, oracle = setup(schedule)
    for steps in STEPS:
        assert w2(*monte_carlo(process, oracle, "pc", steps)) < w2(*monte_carlo(process, oracle, "sde", steps))


@pytest.mark.parametrize("schedule", ("cosine", "sigmoid"))
def test_bounded_samplers_start_at_sigma_max_and_ddim_at_the_top(schedule):
    process, oracle = setup(schedule)
    assert process.sigma_max > SIGMA_MAX
    assert sigma_grid(process, 10, "linspace", sigma_max=SIGMA_MAX)[0] <= SIGMA_MAX
    seen = []
    dk.sample(process, oracle, (2, 1), "heun", 10, seed=0, progress=False, callback=lambda i: seen.append(i.sigma))
    assert seen[0] <= SIGMA_MAX
    seen.clear()
    dk.sample(process, oracle, (2, 1), "ddim", 10, seed=0, progress=False, grid="linspace",
              callback=lambda i: seen.append(i.sigma))
    assert seen[0] == pytest.approx(process.sigma_max)


def test_linear_schedule_grids_are_unbounded():
    """The bound leaves the linear schedule (sigma_max 157.4) as it was."""
    process, _ = setup("linear")
    for grid in ("linspace", "logsnr", "karras"):
        np.testing.assert_array_equal(sigma_grid(process, 20, grid), sigma_grid(process, 20, grid, sigma_max=SIGMA_MAX))


def test_a_grid_below_the_top_warns_and_is_biased():
    process, oracle = setup("cosine")
    with pytest.warns(UserWarning, match="keeps"):   # x_T drawn from N(0, I) at a level below the top
        dk.sample(process, oracle, (2, 1), "ddim", 20, grid="quadratic", seed=0, progress=False)
    mean, _ = affine_law(process, oracle, "ddim", 20, grid="quadratic")
    assert mean < MU - 0.03   # the bias the warning is about


def test_a_given_x_T_does_not_warn():
    """An x_T handed in (e.g. from DDIM inversion, which stops where the grid starts) is at its level."""
    process, oracle = setup("cosine")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dk.sample(process, oracle, None, "ddim", 20, grid="quadratic", x_T=torch.zeros(2, 1, dtype=torch.float64),
                  progress=False)


if __name__ == "__main__":   # the table: mean / sd of each sampler's output (data: 0.3 / 0.5)
    import warnings

    warnings.simplefilter("ignore")
    for schedule in SCHEDULES:
        print(schedule)
        for sampler in ("ddim",) + DETERMINISTIC + ("ddpm", "sde", "pc", "dpmpp2m_sde"):
            process, oracle = setup(schedule)
            cells = [affine_law(process, oracle, sampler, steps) if sampler in ("ddim",) + DETERMINISTIC
                     else monte_carlo(process, oracle, sampler, steps) for steps in STEPS]
            print(f"  {sampler:12s}" + "  ".join(f"{m:.3f} / {s:.3f}" for m, s in cells))
