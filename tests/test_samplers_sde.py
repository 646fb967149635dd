"""Score-SDE samplers and the continuous-time view, against closed forms and exact oracles.

The oracle Gaussian's probability-flow ODE has a closed-form solution (each principal axis is
scaled by sqrt(s^2 + sigma^2)), so the ODE samplers are checked sample by sample, free of
sampling noise; the stochastic samplers are checked on their moments and mode weights.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracles import gaussian_oracle, mixture_oracle

import ddpmkit as dk
from ddpmkit.sampling import SAMPLERS, SKIPS, sample, subsequence, time_grid
from ddpmkit.core.predictions import x0_eps_from_prediction

MINE = ("euler", "heun", "rk45", "sde", "pc")
SCHEDULE = dk.Schedule.linear(1000)
PROCESS = dk.GaussianDiffusion(SCHEDULE)
ANGLE = 0.6
ROTATION = torch.tensor([[math.cos(ANGLE), -math.sin(ANGLE)], [math.sin(ANGLE), math.cos(ANGLE)]],
                        dtype=torch.float64)
MEAN = torch.tensor([0.3, -0.2], dtype=torch.float64)   # in the rotated frame
STD = torch.tensor([0.5, 0.15], dtype=torch.float64)


class Rotated:
    """x_0 = R z with z from ``oracle``: a full-covariance Gaussian (eps, x0, v are equivariant)."""

    def __init__(self, oracle, rotation: torch.Tensor = ROTATION):
        self.oracle, self.rotation = oracle, rotation

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        rotation = self.rotation.to(x.dtype)
        return self.oracle(x @ rotation, t) @ rotation.T


def rotated_gaussian(prediction: str = "eps", var_values=None) -> Rotated:
    return Rotated(gaussian_oracle(SCHEDULE, MEAN, STD, prediction=prediction, var_values=var_values))


def exact_ode_map(x_T: torch.Tensor, vp: dk.GaussianDiffusion) -> torch.Tensor:
    """What the PF-ODE from tau_max to tau_min plus the final denoising step gives, exactly.

    In y = x / sqrt(alpha_bar) each principal axis of N(m, s^2) moves as m + (y - m)
    sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2); Tweedie then gives m + s^2 / (s^2 + sigma^2) (y - m).
    """
    z = (x_T * math.sqrt(1 + vp.sigma_max**2)) @ ROTATION - MEAN
    var_min, var_max = STD**2 + vp.sigma_min**2, STD**2 + vp.sigma_max**2
    z = z * (var_min / var_max).sqrt() * STD**2 / var_min
    return (z + MEAN) @ ROTATION.T


def mixture():
    return mixture_oracle(SCHEDULE, means=[[-0.6, -0.5], [0.6, -0.4], [0.0, 0.7]],
                          stds=[[0.15, 0.1], [0.1, 0.2], [0.2, 0.15]], weights=[0.5, 0.3, 0.2])


def noise(n: int, seed: int = 0, dim: int = 2) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def run(name: str, model, x_T: torch.Tensor, steps: int, process=PROCESS, seed: int = 1, **params):
    return sample(process, model, tuple(x_T.shape), name, steps, x_T=x_T, seed=seed, progress=False, **params)


# --- the continuous-time view -----------------------------------------------------------------

@pytest.mark.parametrize("schedule", [SCHEDULE, dk.Schedule.cosine(1000), dk.Schedule.linear(1000).respace(37)])
def test_interpolation_keeps_the_discrete_marginals(schedule):
    vp = dk.GaussianDiffusion(schedule)
    knots = torch.from_numpy(schedule.timesteps.astype(np.float64))
    np.testing.assert_allclose(vp.alpha_bar(knots).numpy(), schedule.alpha_bar, rtol=1e-12)
    # beta(tau) integrates to -log alpha_bar: on each interval it is the constant slope
    tau = np.linspace(vp.t_min, vp.t_max, 2001)[1:-1]
    h = 1e-4
    numeric = -(vp.log_alpha_bar(tau + h) - vp.log_alpha_bar(tau - h)) / (2 * h)
    inside = np.abs(tau - np.round(tau)) > 2 * h if not schedule.is_respaced else ~np.isin(np.round(tau), schedule.timesteps)
    np.testing.assert_allclose(vp.beta(tau)[inside], numeric[inside], rtol=1e-6)
    # sigma and its inverse; fractional alpha_bar lies between the neighbours
    np.testing.assert_allclose(vp.t_of_sigma(vp.sigma(tau)), tau, rtol=1e-9, atol=1e-7)
    ab = vp.alpha_bar(torch.tensor([10.25]))
    if not schedule.is_respaced:
        assert schedule.alpha_bar[11] < ab.item() < schedule.alpha_bar[10]
    with pytest.raises(ValueError, match="t must lie"):
        vp.log_alpha_bar(vp.t_max + 1.0)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_continuous_conversion_agrees_with_the_process(prediction, generator):
    process = dk.GaussianDiffusion(SCHEDULE, prediction=prediction)
    vp = process
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    pred = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    for t in (0, 17, 999):
        x0, eps = x0_eps_from_prediction(prediction, x, float(SCHEDULE.alpha_bar[t]), pred)
        ref_x0, ref_eps = process.to_x0_eps(x, torch.full((5,), t), pred)
        torch.testing.assert_close(x0, ref_x0, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(eps, ref_eps, rtol=1e-12, atol=1e-12)
    # the score is -eps / sqrt(1 - alpha_bar): for the oracle, the true score of q_t
    oracle = gaussian_oracle(SCHEDULE, MEAN, STD, prediction=prediction)
    for tau in (3.0, 250.5):
        ab = vp.alpha_bar(torch.tensor([tau]))
        torch.testing.assert_close(vp.score(oracle, x[:, :2], tau), oracle.score(x[:, :2], ab), rtol=1e-9, atol=1e-9)


def test_model_sees_long_at_training_steps_and_float_between():
    seen = []

    def spy(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    vp = PROCESS
    vp.predict(spy, torch.zeros(3, 2), 40.0)
    vp.predict(spy, torch.zeros(3, 2), 40.5)
    assert seen[0].dtype == torch.long and seen[0].tolist() == [40, 40, 40]
    assert seen[1].dtype == torch.float32 and seen[1].tolist() == [40.5] * 3


def test_grids_run_from_top_to_bottom():
    for skip in ("linspace", "karras", "logsnr"):
        grid = time_grid(PROCESS, 12, skip)
        assert grid[0] == 999 and grid[-1] == 0 and np.all(np.diff(grid) < 0) and grid.size == 12
    for skip in SKIPS:   # the integer grids are the other samplers' sub-sequences, top first
        np.testing.assert_array_equal(time_grid(PROCESS, 10, skip)[::-1], subsequence(PROCESS, 10, skip))
    vp = PROCESS
    sig = vp.sigma(time_grid(PROCESS, 6, "karras", rho=3.0)) ** (1 / 3)
    np.testing.assert_allclose(np.diff(sig), np.full(5, (sig[-1] - sig[0]) / 5), rtol=1e-9)
    # one step: whatever the sub-sequence is (linspace keeps step 0, as respacing does)
    assert time_grid(PROCESS, 1).tolist() == [0.0] and time_grid(PROCESS, 1, "trailing").tolist() == [999.0]
    assert time_grid(PROCESS, 1, "karras").tolist() == [999.0]


# --- ODE samplers: exact solution, order, DDIM ------------------------------------------------

@pytest.mark.parametrize("skip", ["linspace", "uniform", "trailing"])
def test_euler_is_ddim_eta0(skip):
    """DDIM eq. 12 with sigma = 0, written here on the respaced process, step for step."""
    model, x_T, steps = rotated_gaussian(), noise(64), 25
    respaced = PROCESS.respace([int(i) for i in subsequence(PROCESS, steps, skip)])
    x = x_T
    for i in reversed(range(steps)):
        t = torch.full((64,), i)
        x0, eps = respaced.to_x0_eps(x, t, respaced.model_output(model, x, t))
        ab_prev = float(respaced.schedule.alpha_bar_prev[i])
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
    torch.testing.assert_close(run("euler", model, x_T, steps, grid=skip), x, rtol=1e-10, atol=1e-10)
    if "ddim" in SAMPLERS:   # and the DDIM sampler itself
        torch.testing.assert_close(run("ddim", model, x_T, steps, grid=skip, eta=0.0), x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,steps,tol", [("euler", 500, 0.012), ("heun", 100, 0.004), ("rk45", 1, 1e-4)])
def test_ode_samplers_follow_the_exact_flow(name, steps, tol):
    x_T = noise(256)
    exact = exact_ode_map(x_T, PROCESS)
    assert (run(name, rotated_gaussian(), x_T, steps) - exact).abs().max() < tol


def test_heun_is_second_order_euler_first_order():
    """Error against the exact flow when the steps double: x2 for Euler, x4 for Heun."""
    x_T = noise(32, seed=3)
    exact = exact_ode_map(x_T, PROCESS)

    def errors(name, steps_list, disc):
        return np.array([float((run(name, rotated_gaussian(), x_T, s, grid=disc) - exact).abs().max())
                         for s in steps_list])

    for disc in ("linspace", "karras"):
        euler, heun = errors("euler", [20, 40, 80], disc), errors("heun", [20, 40, 80], disc)
        assert np.all((1.7 < euler[:-1] / euler[1:]) & (euler[:-1] / euler[1:] < 2.4)), euler
        assert np.all(heun[:-1] / heun[1:] > 3.4), heun
        # at equal calls (Heun with n steps makes 2n - 1), Heun is far closer
        assert errors("heun", [40], disc)[0] < 0.3 * errors("euler", [79], disc)[0]


def test_rk45_tolerance_controls_the_error_on_a_mixture():
    x_T = noise(64, seed=4)
    model = mixture()
    reference = run("rk45", model, x_T, 1, rtol=1e-9, atol=1e-9)
    loose = (run("rk45", model, x_T, 1, rtol=1e-3, atol=1e-3) - reference).abs().max()
    tight = (run("rk45", model, x_T, 1, rtol=1e-6, atol=1e-6) - reference).abs().max()
    heun = (run("heun", model, x_T, 200) - reference).abs().max()
    assert tight < 1e-4 < loose and tight < loose / 30 and heun < 1e-3


# --- distributions: moments and mode weights --------------------------------------------------

STOCHASTIC_STEPS = {"euler": 200, "heun": 50, "rk45": 1, "sde": 500, "pc": 250}
MIXTURE_STEPS = {"euler": 200, "heun": 100, "rk45": 1, "sde": 400, "pc": 200}


@pytest.mark.parametrize("name", MINE)
def test_samples_have_the_data_mean_and_covariance(name):
    n = 2000
    x = run(name, rotated_gaussian(), noise(n, seed=5), STOCHASTIC_STEPS[name], seed=6)
    true_cov = ROTATION @ torch.diag(STD**2) @ ROTATION.T
    diag = torch.diag(true_cov)
    z_mean = (x.mean(0) - ROTATION @ MEAN) / (diag / n).sqrt()
    z_cov = (torch.cov(x.T) - true_cov) / ((diag[:, None] * diag[None] + true_cov**2) / n).sqrt()
    assert z_mean.abs().max() < 4.0 and z_cov.abs().max() < 4.0, (z_mean, z_cov)


@pytest.mark.parametrize("name", MINE)
def test_mixture_mode_weights(name):
    n = 1200
    oracle = mixture()
    x = run(name, oracle, noise(n, seed=7), MIXTURE_STEPS[name], seed=8)
    nearest = torch.cdist(x, oracle.means).argmin(dim=1)
    freq = torch.bincount(nearest, minlength=3).double() / n
    w = oracle.weights
    assert ((freq - w).abs() / (w * (1 - w) / n).sqrt()).max() < 4.0, freq
    # and the samples sit on the modes: mean log-density near that of true samples
    fresh = oracle.sample(n, torch.Generator().manual_seed(9))
    assert oracle.log_prob(x).mean() > oracle.log_prob(fresh).mean() - 0.2


def test_corrector_and_sde_converge_with_steps():
    """Too few steps shrink the spread; more steps remove that bias."""
    x_T, model = noise(1000, seed=10), rotated_gaussian()
    true_var = float((ROTATION @ torch.diag(STD**2) @ ROTATION.T).trace())
    for name in ("sde", "pc"):
        few = float(run(name, model, x_T, 5).var(0).sum())
        many = float(run(name, model, x_T, 200).var(0).sum())
        assert abs(many - true_var) < abs(few - true_var)


# --- parameterisations, learned variance, determinism, bad input ------------------------------

@pytest.mark.parametrize("name", MINE)
def test_every_prediction_type_and_learned_range_give_the_same_samples(name):
    x_T, steps = noise(16, seed=11), 12
    ref = run(name, rotated_gaussian(), x_T, steps)
    for prediction in ("x0", "v"):
        process = dk.GaussianDiffusion(SCHEDULE, prediction=prediction)
        got = run(name, rotated_gaussian(prediction), x_T, steps, process=process)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    learned = dk.GaussianDiffusion(SCHEDULE, variance="learned_range")
    oracle = gaussian_oracle(SCHEDULE, MEAN, STD, var_values=0.3)

    def model(x, t):   # eps part rotated; the variance half is ignored by these samplers
        out = oracle(x @ ROTATION, t)
        return torch.cat([out[:, :2] @ ROTATION.T, out[:, 2:]], dim=1)

    torch.testing.assert_close(run(name, model, x_T, steps, process=learned), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", MINE)
def test_deterministic_for_a_fixed_generator(name):
    model = mixture()
    first = sample(PROCESS, model, (64, 2), name, 10, seed=123, progress=False)
    again = sample(PROCESS, model, (64, 2), name, 10, seed=123, progress=False)
    other = sample(PROCESS, model, (64, 2), name, 10, seed=124, progress=False)
    assert torch.equal(first, again) and not torch.equal(first, other)
    if name in ("sde", "pc"):   # the same x_T, other path noise: different samples
        x_T = noise(64, seed=1)
        assert not torch.equal(run(name, model, x_T, 10, seed=1), run(name, model, x_T, 10, seed=2))


def test_callback_sees_every_step():
    infos = []
    sample(PROCESS, rotated_gaussian(), (8, 2), "heun", 7, seed=0, progress=False, callback=infos.append)
    assert [i.i for i in infos] == list(range(7)) and infos[0].t == 999 and infos[-1].t == 0


@pytest.mark.parametrize("name", MINE)
def test_bad_input_is_a_one_line_value_error(name):
    model, x_T = rotated_gaussian(), noise(4)

    def fn(process, model, x_T, steps, **params):
        return sample(process, model, None, name, steps, x_T=x_T, progress=False, **params)

    with pytest.raises(ValueError, match="bogus"):
        sample(PROCESS, model, (4, 2), name, 5, x_T=x_T, progress=False, bogus=1)
    if name != "rk45":
        for steps in (0, 1001):
            with pytest.raises(ValueError, match="steps"):
                fn(PROCESS, model, x_T, steps)
        with pytest.raises(ValueError, match="grid"):
            fn(PROCESS, model, x_T, 5, grid="cubic")
        with pytest.raises(ValueError, match="rho"):
            fn(PROCESS, model, x_T, 5, grid="karras", rho=0)
    bad = {"rk45": {"rtol": 0.0}, "pc": {"snr": -0.1}}.get(name)
    if bad:
        with pytest.raises(ValueError, match=next(iter(bad))):
            fn(PROCESS, model, x_T, 5, **bad)
    with pytest.raises(ValueError, match="model output"):
        fn(PROCESS, lambda x, t: x[:, :1], x_T, 5)


def test_pc_with_a_zero_score_skips_the_corrector():
    """A zero-initialised network predicts eps = 0: the Langevin step size (|z| / |score|)^2 is
    undefined, so the corrector leaves x alone instead of blowing up."""
    def zero(x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        return torch.zeros_like(x)

    x_T = noise(6)
    pc = sample(PROCESS, zero, (6, 2), "pc", 8, x_T=x_T, seed=3, progress=False)
    sde = sample(PROCESS, zero, (6, 2), "sde", 8, x_T=x_T, seed=3, progress=False)
    # a zero score lets x grow like 1 / sqrt(alpha_bar_T) under either sampler; without the
    # guard the corrector's "infinite" step sends x to ~1e29
    assert torch.isfinite(pc).all() and pc.abs().max() < 10 * sde.abs().max()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs_without_autograd(name):
    """Called with gradients on and a model with parameters, no sampler returns (or keeps) a graph."""
    net = torch.nn.Linear(2, 2).double()
    model = lambda x, t, **cond: net(x)   # noqa: E731
    x = sample(PROCESS, model, (3, 2), name, 4 if name != "rk45" else None, x_T=noise(3), seed=0, progress=False)
    assert not x.requires_grad
