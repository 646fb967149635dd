"""Discrete-time samplers (ddpm, ddim, dpmpp2m, dpmpp3m) and DDIM inversion against exact oracles.

Data x_0 ~ N(MU, diag(SD^2)) on the linear T = 1000 schedule, and a 3-component 2-D mixture.
For Gaussian data the exact noise predictor is affine in x_t, so a deterministic sampler is an
affine map x_T -> A x_T + b per dimension and its output law is exactly N(b, A^2): two runs (x_T
= 0 and x_T = 1) measure its distance to the data with no sampling error (``exact_w2``).
Stochastic samplers are checked by Monte Carlo within a few standard errors.

Run ``python tests/test_samplers_discrete.py`` for the table of oracle errors in the report.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from oracles import gaussian_oracle, mixture_oracle
from scipy.integrate import quad

import ddpmkit as dk
from ddpmkit.sampling import (SAMPLERS, SKIPS, SampleOptions, dpmpp_multistep, dpmpp_update, invert, sample,
                              sigma_grid, subsequence)

LINEAR = dk.Schedule.linear(1000)
MU = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
SD = torch.tensor([0.25, 1.0, 0.5], dtype=torch.float64)
MINE = ("ddpm", "ddim", "dpmpp2m", "dpmpp3m")
MIXTURE = dict(means=[[-0.6, -0.5], [0.6, -0.4], [0.0, 0.7]],
               stds=[[0.15, 0.1], [0.1, 0.2], [0.2, 0.15]], weights=[0.5, 0.3, 0.2])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    """max |a - b| <= tol (torch.testing.assert_close would import torch.distributed: seconds)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    error = float((a - b).abs().max())
    assert error <= tol, f"max abs difference {error:.3g} > {tol:g}"


def dpm_solver_pp(process, model, x_T, steps, opts, order, grid):
    """DPM-Solver++ of any order over the process's denoiser and grid, started from x_T (x-space)."""
    sigmas = sigma_grid(process, steps, grid)
    return dpmpp_multistep(process.denoiser(model), x_T * math.sqrt(1 + sigmas[0] ** 2), sigmas, opts, order)


def exact_law(process, model, sampler: str, steps: int, **params) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) of a deterministic sampler that is affine in x_T (Gaussian oracle), per dimension."""
    zero, one = (torch.full((1, MU.numel()), v, dtype=torch.float64) for v in (0.0, 1.0))
    b = sample(process, model, None, sampler, steps, x_T=zero, progress=False, **params)[0]
    return sample(process, model, None, sampler, steps, x_T=one, progress=False, **params)[0] - b, b


def exact_w2(process, model, sampler: str, steps: int, **params) -> float:
    """Mean over dimensions of W2(N(b, A^2), N(MU, SD^2)) / SD: the sampler's exact error."""
    A, b = exact_law(process, model, sampler, steps, **params)
    return float(((((b - MU) ** 2 + (A.abs() - SD) ** 2).sqrt()) / SD).mean())


def assert_moments(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, z: float = 4.5) -> None:
    """Sample mean and full covariance within ``z`` standard errors of N(mean, diag(std^2))."""
    x = x.double()
    n = x.shape[0]
    mean_z = (x.mean(0) - mean) / (std / math.sqrt(n))
    assert mean_z.abs().max() < z, f"mean off by {mean_z.tolist()} standard errors"
    cov = torch.cov(x.T)
    true = torch.diag(std**2)
    se = torch.outer(std, std) * torch.sqrt((1.0 + torch.eye(len(std), dtype=torch.float64)) / n)
    cov_z = (cov - true) / se
    assert cov_z.abs().max() < z, f"covariance off by {cov_z.numpy().round(1).tolist()} standard errors"


@pytest.fixture(scope="module")
def gauss():
    return dk.GaussianDiffusion(LINEAR), gaussian_oracle(LINEAR, MU, SD)


# ---------------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("sampler,steps,tol", [("ddim", 500, 0.012), ("dpmpp2m", 50, 0.006),
                                               ("dpmpp3m", 50, 0.006)])
def test_deterministic_samplers_reproduce_gaussian_exactly(gauss, sampler, steps, tol):
    # The floor (~0.004) is x_T ~ N(0, I) standing in for q(x_999), whose mean is 0.006 MU.
    assert exact_w2(*gauss, sampler, steps) < tol


def test_dpmpp2m_at_20_steps_is_as_close_as_ddim_at_100(gauss):
    ddim_100 = exact_w2(*gauss, "ddim", 100)
    ddim_20 = exact_w2(*gauss, "ddim", 20)
    dpm_20 = exact_w2(*gauss, "dpmpp2m", 20)
    assert dpm_20 < 1.25 * ddim_100 < ddim_20
    assert ddim_20 > 5 * dpm_20    # the metric resolves a first- from a second-order solver


def test_dpm_solver_first_order_is_ddim(gauss):
    process, model = gauss
    x_T = torch.randn(64, 3, generator=gen(), dtype=torch.float64)
    opts = SampleOptions(progress=False)
    for skip in ("uniform", "logsnr"):
        first = dpm_solver_pp(process, model, x_T, 15, opts, order=1, grid=skip)
        ddim = sample(process, model, None, "ddim", 15, x_T=x_T, grid=skip, progress=False)
        assert_close(first, ddim, 1e-10)


def _one_update(x0, order: int, h: float) -> tuple[float, float]:
    """(DPM-Solver++ update, exact solution) for one step of size h in lambda with data
    prediction x0(lambda), history at gaps 0.6 h and 0.9 h: x_t = (sigma_t / sigma_s) x_s +
    sigma_t int_{lambda_s}^{lambda_t} e^lambda x0(lambda) dlambda (DPM-Solver++ eq. 9)."""
    lam_s = 0.4
    lambdas = [lam_s, lam_s - 0.6 * h, lam_s - 1.5 * h][:order]
    sigma = lambda lam: 1.0 / math.sqrt(1.0 + math.exp(2 * lam))  # noqa: E731
    alpha_t, sigma_t, sigma_s = math.exp(lam_s + h) * sigma(lam_s + h), sigma(lam_s + h), sigma(lam_s)
    integral = quad(lambda lam: math.exp(lam) * x0(lam), lam_s, lam_s + h, epsabs=1e-15, epsrel=1e-13)[0]
    x0s = [torch.tensor([x0(lam)], dtype=torch.float64) for lam in lambdas]
    got = dpmpp_update(torch.tensor([0.8], dtype=torch.float64), sigma_s, alpha_t, sigma_t, lam_s + h,
                       lambdas, x0s, order)
    return float(got), sigma_t / sigma_s * 0.8 + sigma_t * integral


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpmpp_update_local_error_is_of_order_plus_one(order):
    smooth = lambda lam: math.sin(1.3 * lam) + 0.5 * lam**2  # noqa: E731
    errors = [abs(np.subtract(*_one_update(smooth, order, h))) for h in (0.1, 0.05)]
    assert 0.7 * 2 ** (order + 1) < errors[0] / errors[1] < 1.4 * 2 ** (order + 1), errors


def test_dpmpp3m_integrates_a_quadratic_data_prediction_exactly():
    # The third-order term D2 is the exact second Taylor term. DPM-Solver's and diffusers'
    # multistep third-order code use half of it, which this test would catch.
    quadratic = lambda lam: 0.3 - 1.2 * lam + 0.7 * lam**2  # noqa: E731
    got, exact = _one_update(quadratic, 3, 0.5)
    assert abs(got - exact) < 1e-12
    linear = lambda lam: 0.3 - 1.2 * lam  # noqa: E731
    got, exact = _one_update(linear, 2, 0.5)   # 2M (Algorithm 2) is second order, not exact here
    assert 1e-4 < abs(got - exact) < 1e-1


CONFIGS = [  # (sampler, steps, process variance, oracle var_values, params, n)
    ("ddpm", 1000, "fixed_small", None, {}, 1000),
    ("ddpm", 1000, "fixed_large", None, {}, 1000),
    ("ddpm", 10, "learned_range", "exact", {}, 2000),
    ("ddim", 200, "fixed_small", None, {}, 2000),
    ("dpmpp2m", 20, "fixed_small", None, {}, 2000),
    ("dpmpp3m", 20, "fixed_small", None, {}, 2000),
]


@pytest.mark.parametrize("sampler,steps,variance,var_values,params,n", CONFIGS)
def test_samples_match_gaussian_moments(sampler, steps, variance, var_values, params, n):
    process = dk.GaussianDiffusion(LINEAR, variance=variance)
    # learned_range: the oracle outputs the optimal variance relative to the *respaced* betas, so
    # this passes at 10 steps only if the sampler re-derives beta and beta_tilde after respacing.
    kept = [int(i) for i in subsequence(process, steps, "linspace")]
    model = gaussian_oracle(LINEAR.respace(kept) if var_values else LINEAR, MU, SD, var_values=var_values)
    x = sample(process, model, (n, 3), sampler, steps, generator=gen(1), progress=False, **params)
    assert_moments(x, MU, SD)


def test_ancestral_with_fixed_variances_is_off_at_few_steps():
    # The moment check has power: at 10 respaced steps beta_tilde under- and beta over-disperses
    # (DDIM paper, Table 1's sigma-hat row); only the exact variance (test above) passes there.
    std = {}
    for variance in ("fixed_small", "fixed_large"):
        process = dk.GaussianDiffusion(LINEAR, variance=variance)
        x = sample(process, gaussian_oracle(LINEAR, MU, SD), (2000, 3), "ddpm", 10, generator=gen(1), progress=False)
        std[variance] = x.double().std(0) / SD
    assert (std["fixed_small"] < 0.9).all() and std["fixed_large"][0] > 1.3


@pytest.mark.parametrize("sampler,steps,params", [("ddpm", 50, {}), ("ddim", 50, {}), ("ddim", 25, {"eta": 1.0}),
                                                   ("dpmpp2m", 20, {}), ("dpmpp3m", 20, {})])
def test_mixture_mode_weights(sampler, steps, params):
    oracle = mixture_oracle(dk.Schedule.cosine(50), **MIXTURE)
    process = dk.GaussianDiffusion(oracle.schedule)
    n = 2000
    x = sample(process, oracle, (n, 2), sampler, steps, generator=gen(3), progress=False, **params).double()
    nearest = ((x[:, None] - oracle.means[None]) ** 2).sum(-1).argmin(1)
    frac = torch.bincount(nearest, minlength=3).double() / n
    w = oracle.weights
    assert ((frac - w).abs() < 4.5 * torch.sqrt(w * (1 - w) / n)).all(), frac
    for k in range(3):   # each mode sits where it should (its spread is shrunk by the last denoising)
        assert (x[nearest == k].mean(0) - oracle.means[k]).abs().max() < 0.03


# ---------------------------------------------------------------------------------- identities
@pytest.mark.parametrize("sampler,params", [("ddpm", {}), ("ddim", {"eta": 0.0}), ("ddim", {"eta": 0.7}),
                                            ("dpmpp2m", {}), ("dpmpp3m", {})])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_every_parameterisation_gives_the_same_samples(sampler, params, variance):
    schedule = dk.Schedule.cosine(200)
    x_T = torch.randn(32, 2, generator=gen(), dtype=torch.float64)
    runs = []
    for prediction in ("eps", "x0", "v"):
        oracle = mixture_oracle(schedule, **MIXTURE, prediction=prediction,
                                var_values=0.3 if variance == "learned_range" else None)
        process = dk.GaussianDiffusion(schedule, prediction=prediction, variance=variance)
        runs.append(sample(process, oracle, None, sampler, 40, x_T=x_T, generator=gen(5), progress=False, **params))
    assert_close(runs[1], runs[0], 1e-9)
    assert_close(runs[2], runs[0], 1e-9)


@pytest.mark.parametrize("steps,skip", [(200, "uniform"), (20, "uniform"), (20, "quadratic")])
def test_ddim_eta_one_is_ancestral_with_fixed_small(steps, skip):
    schedule = dk.Schedule.linear(200)
    process = dk.GaussianDiffusion(schedule, variance="fixed_small")
    oracle = gaussian_oracle(schedule, MU, SD)
    ddim = sample(process, oracle, (64, 3), "ddim", steps, eta=1.0, grid=skip, generator=gen(2), progress=False)
    ddpm = sample(process, oracle, (64, 3), "ddpm", steps, grid=skip, generator=gen(2), progress=False)
    assert_close(ddim, ddpm, 1e-5)


@pytest.mark.parametrize("steps", [100, 30])
def test_learned_range_extremes_are_the_fixed_variances(steps):
    schedule = dk.Schedule.linear(100)
    x_T = torch.randn(16, 3, generator=gen(), dtype=torch.float64)
    runs = {}
    for name, variance, v in [("small", "fixed_small", None), ("large", "fixed_large", None),
                              ("-1", "learned_range", -1.0), ("+1", "learned_range", 1.0)]:
        process = dk.GaussianDiffusion(schedule, variance=variance)
        oracle = gaussian_oracle(schedule, MU, SD, var_values=v)
        runs[name] = sample(process, oracle, None, "ddpm", steps, x_T=x_T, generator=gen(4), progress=False)
    assert_close(runs["-1"], runs["small"], 1e-9)
    assert_close(runs["+1"], runs["large"], 1e-9)
    assert not torch.allclose(runs["small"], runs["large"])


# ---------------------------------------------------------------------------------- inversion
@pytest.mark.parametrize("steps,skip", [(50, "uniform"), (20, "quadratic")])
def test_ddim_inversion_reconstructs_x0(gauss, steps, skip):
    process, model = gauss
    x0 = model.sample(300, generator=gen(6))

    def round_trip(n_steps: int, iters: int = 0) -> torch.Tensor:
        z = invert(process, model, x0, steps=n_steps, grid=skip, fixed_point_iters=iters, progress=False)
        decoded = sample(process, model, None, "ddim", n_steps, x_T=z, grid=skip, progress=False)
        return (((decoded - x0) / SD) ** 2).mean(0).sqrt().max()   # worst dimension's rms / SD

    # Explicit inversion (eps taken at the start of each inverse step) is first order: small and
    # four times the steps cut it at least 2.5-fold. A misaligned timestep would not converge.
    coarse, fine = round_trip(steps), round_trip(4 * steps)
    assert coarse < 0.4 and fine < coarse / 2.5, (coarse, fine)
    # Solving each inverse step's implicit equation makes sampling its exact inverse.
    assert round_trip(steps, iters=16) < 1e-5


def test_ddim_inversion_of_a_mixture():
    oracle = mixture_oracle(dk.Schedule.cosine(50), **MIXTURE)
    process = dk.GaussianDiffusion(oracle.schedule)
    x0 = oracle.sample(300, generator=gen(7))
    errors = []
    for iters in (0, 12):
        z = invert(process, oracle, x0, steps=50, fixed_point_iters=iters, progress=False)
        decoded = sample(process, oracle, None, "ddim", 50, x_T=z, progress=False)
        errors.append((decoded - x0).abs().max(1).values)
    assert_moments(z, torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    # Fixed-point iteration contracts slowly where the responsibilities change fast (between the
    # modes at small noise): 12 iterations cut the typical error tenfold and make none worse.
    assert errors[0].median() < 0.05 and errors[1].median() < errors[0].median() / 10
    assert errors[1].max() <= errors[0].max()


# ---------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("sampler", MINE)
def test_fixed_generator_gives_identical_samples(gauss, sampler):
    process, model = gauss
    params = {"eta": 0.5} if sampler == "ddim" else {}
    first = sample(process, model, (8, 3), sampler, 20, generator=gen(9), progress=False, **params)
    torch.manual_seed(123)   # the global generator must not matter
    again = sample(process, model, (8, 3), sampler, 20, seed=9, progress=False, **params)
    other = sample(process, model, (8, 3), sampler, 20, generator=gen(10), progress=False, **params)
    assert torch.equal(first, again) and not torch.allclose(first, other)


def test_registered():
    assert set(MINE) <= set(SAMPLERS)


@pytest.mark.parametrize("sampler", MINE)
def test_callback_cond_and_original_timesteps(sampler):
    process = dk.GaussianDiffusion(LINEAR)
    oracle = gaussian_oracle(LINEAR, MU, SD)
    seen_t, infos = [], []

    def model(x, t, *, shift):
        seen_t.append(int(t[0]))
        return oracle(x - shift, t)

    x = sample(process, model, (4, 3), sampler, 10, generator=gen(), callback=infos.append,
               cond={"shift": 0.0}, progress=False)
    kept = subsequence(process, 10, "linspace" if sampler == "ddpm" else
                       "uniform" if sampler == "ddim" else "logsnr")
    assert seen_t == [int(t) for t in kept[::-1]]
    assert [info.t for info in infos] == seen_t and [info.i for info in infos] == list(range(10))
    assert all(info.n == 10 and info.pred_x0.shape == x.shape for info in infos)
    assert torch.equal(infos[-1].x, x)


@pytest.mark.parametrize("sampler", MINE)
def test_nan_stops_at_the_step_it_appears(sampler):
    process = dk.GaussianDiffusion(LINEAR)

    def model(x, t):
        return torch.full_like(x, float("nan")) if int(t[0]) < 500 else torch.zeros_like(x)

    with pytest.raises(FloatingPointError, match=r"step \d+ of 10"):
        sample(process, model, (2, 3), sampler, 10, generator=gen(), progress=False)


@pytest.mark.parametrize("kwargs,name", [
    ({"steps": 0}, "steps"), ({"steps": 1001}, "steps"), ({"steps": 2.5}, "steps"),
    ({"sampler": "ddim", "eta": -0.1}, "eta"), ({"sampler": "ddim", "eta": 1.5}, "eta"),
    ({"sampler": "nope"}, "sampler"), ({"x_T": torch.zeros(3, 3)}, "x_T"),
    ({"sampler": "ddim", "grid": "cubic"}, "grid"), ({"sampler": "ddpm", "eta": 0.5}, "eta"),
])
def test_bad_input_is_a_one_line_value_error(gauss, kwargs, name):
    process, model = gauss
    kwargs = {"sampler": "ddim", "steps": 10, **kwargs}
    with pytest.raises(ValueError, match=name) as info:
        sample(process, model, (2, 3), progress=False, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs,name", [({"steps": 0}, "steps"), ({"grid": "cubic"}, "grid"),
                                         ({"fixed_point_iters": -1}, "fixed_point_iters")])
def test_invert_bad_input(gauss, kwargs, name):
    process, model = gauss
    with pytest.raises(ValueError, match=name):
        invert(process, model, torch.zeros(2, 3), progress=False, **kwargs)


@given(T=st.integers(1, 1200), data=st.data(), skip=st.sampled_from(SKIPS))
def test_subsequences_have_exactly_steps_distinct_indices(T, data, skip):
    steps = data.draw(st.integers(1, T))
    keep = subsequence(dk.GaussianDiffusion(dk.Schedule.linear(T)), steps, skip)
    assert keep.size == steps and keep[0] >= 0 and keep[-1] <= T - 1 and np.all(np.diff(keep) > 0)
    if skip == "uniform":
        assert np.array_equal(keep, np.arange(steps) * (T // steps))
    if skip == "trailing":
        assert keep[-1] == T - 1
    if skip == "linspace" and steps > 1:
        assert keep[0] == 0 and keep[-1] == T - 1


def test_quadratic_skip_is_the_ddim_repos():
    keep = subsequence(dk.GaussianDiffusion(LINEAR), 10, "quadratic")
    ddim_repo = [int(s) for s in np.linspace(0, np.sqrt(1000 * 0.8), 10) ** 2]
    assert keep.tolist() == ddim_repo


# ---------------------------------------------------------------------------------- report table
def _table() -> None:  # pragma: no cover - run by hand for the report
    steps_list = (10, 20, 50, 100, 1000)
    process, model = dk.GaussianDiffusion(LINEAR), gaussian_oracle(LINEAR, MU, SD)
    print("Gaussian oracle, linear T=1000, MU=(0.5,-1,0.2), SD=(0.25,1,0.5); steps:", steps_list)
    print("deterministic: exact W2(output, data) / SD, mean over dims")
    for sampler, skip in [("ddim", "uniform"), ("ddim", "quadratic"), ("ddim", "logsnr"),
                          ("dpmpp2m", "logsnr"), ("dpmpp2m", "uniform"), ("dpmpp3m", "logsnr")]:
        errors = [exact_w2(process, model, sampler, s, grid=skip) for s in steps_list]
        print(f"  {sampler:8s} {skip:10s}" + "".join(f"{e:9.4f}" for e in errors))
    print("stochastic (Monte Carlo, n=4000): max |mean - MU| / SD and max |std / SD - 1|")
    for sampler, variance, params in [("ddpm", "fixed_small", {}), ("ddpm", "fixed_large", {}),
                                      ("ddpm", "learned_range", {}), ("ddim", "fixed_small", {"eta": 1.0})]:
        row = []
        for steps in steps_list:
            kept = [int(i) for i in subsequence(process, steps, "uniform" if sampler == "ddim" else "linspace")]
            exact = variance == "learned_range"
            oracle = gaussian_oracle(LINEAR.respace(kept) if exact else LINEAR, MU, SD, var_values="exact" if exact else None)
            x = sample(dk.GaussianDiffusion(LINEAR, variance=variance), oracle, (4000, 3), sampler, steps,
                       generator=gen(1), progress=False, **params).double()
            row.append(f"{float(((x.mean(0) - MU) / SD).abs().max()):.3f}/{float((x.std(0) / SD - 1).abs().max()):.3f}")
        name = f"{sampler} {'eta=1' if params else ('exact var' if variance == 'learned_range' else variance)}"
        print(f"  {name:19s}" + "".join(f"{r:>13s}" for r in row))
    oracle = mixture_oracle(dk.Schedule.cosine(50), **MIXTURE)
    mix = dk.GaussianDiffusion(oracle.schedule)
    print("mixture (cosine T=50, n=4000): max |mode weight - true| for steps (5, 10, 20, 50)")
    for sampler in MINE:
        row = []
        for steps in (5, 10, 20, 50):
            x = sample(mix, oracle, (4000, 2), sampler, steps, generator=gen(3), progress=False).double()
            nearest = ((x[:, None] - oracle.means[None]) ** 2).sum(-1).argmin(1)
            row.append(float((torch.bincount(nearest, minlength=3) / 4000.0 - oracle.weights).abs().max()))
        print(f"  {sampler:8s}" + "".join(f"{r:9.4f}" for r in row))


if __name__ == "__main__":  # pragma: no cover
    torch.set_num_threads(1)
    _table()
