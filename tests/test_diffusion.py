"""The Gaussian process against Bayes' rule, Monte Carlo, the oracle, diffusers and properties."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings, strategies as st

import ddpmkit as dk
from oracles import gaussian_oracle

D64 = torch.float64


def moments_close(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, n_se: float = 5.0) -> None:
    """Sample mean and variance (dim 0) equal ``mean`` / ``var`` within n_se standard errors."""
    n = samples.shape[0]
    assert ((samples.mean(0) - mean).abs() <= n_se * (var / n).sqrt()).all(), (samples.mean(0), mean)
    assert ((samples.var(0) - var).abs() <= n_se * var * math.sqrt(2 / n)).all(), (samples.var(0), var)


# ---------------------------------------------------------------------------- forward process
def test_q_sample_formula_and_moments(generator):
    sched = dk.Schedule.cosine(40)
    process = dk.GaussianDiffusion(sched)
    mu, s = torch.tensor([0.4, -0.7], dtype=D64), torch.tensor([0.3, 1.2], dtype=D64)
    n = 40_000
    x0 = mu + s * torch.randn(n, 2, generator=generator, dtype=D64)
    noise = torch.randn(n, 2, generator=generator, dtype=D64)
    for t_int in (0, 7, 39):
        t = torch.full((n,), t_int)
        x_t = process.q_sample(x0, t, noise)
        ab = float(np.prod(1 - sched.betas[: t_int + 1]))
        assert torch.allclose(x_t, math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise, rtol=1e-12, atol=1e-12)
        moments_close(x_t, math.sqrt(ab) * mu, ab * s**2 + 1 - ab)
        mean, var, log_var = process.q_mean_variance(x0[:3], t[:3])
        assert torch.allclose(var, torch.full_like(var, 1 - ab)) and torch.allclose(log_var.exp(), var)


def test_marginal_equals_repeated_single_steps(generator):
    """q(x_t | x_0) (DDPM eq. 4) against t single steps x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) z."""
    sched = dk.Schedule.linear(30)
    process = dk.GaussianDiffusion(sched)
    n = 20_000
    x0 = torch.tensor([-0.9, 0.0, 0.8], dtype=D64).expand(n, 3)
    x = x0.clone()
    for t_int in range(30):
        beta = float(sched.betas[t_int])
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * torch.randn(x.shape, generator=generator, dtype=D64)
        if t_int in (0, 4, 17, 29):
            mean, var, _ = process.q_mean_variance(x0, torch.full((n,), t_int))
            moments_close(x, mean[0], var[0])
            z = ((x - mean) / var.sqrt())[:, 1].numpy()
            assert scipy.stats.kstest(z, "norm").pvalue > 1e-3


def bayes_posterior(x0: float, x_t: float, alpha: float, ab_prev: float) -> tuple[float, float]:
    """q(x_{t-1} | x_t, x_0) by multiplying N(x_t; sqrt(alpha) x, 1 - alpha) N(x; sqrt(ab_prev) x0, 1 - ab_prev)."""
    precision = alpha / (1 - alpha) + 1 / (1 - ab_prev)
    mean = (math.sqrt(alpha) * x_t / (1 - alpha) + math.sqrt(ab_prev) * x0 / (1 - ab_prev)) / precision
    return mean, 1 / precision


@pytest.mark.parametrize("schedule", [dk.Schedule.linear(100), dk.Schedule.cosine(100).respace(20)])
def test_posterior_is_bayes_rule(schedule):
    process = dk.GaussianDiffusion(schedule)
    x0, x_t = torch.tensor([[0.6]], dtype=D64), torch.tensor([[-0.4]], dtype=D64)
    grid = np.linspace(-6, 6, 200_001)
    for t_int in (1, 2, schedule.T // 2, schedule.T - 1):
        alpha, ab_prev = float(schedule.alphas[t_int]), float(schedule.alpha_bar_prev[t_int])
        mean, var, log_var = process.q_posterior(x0, x_t, torch.tensor([t_int]))
        ref_mean, ref_var = bayes_posterior(0.6, -0.4, alpha, ab_prev)
        assert float(mean) == pytest.approx(ref_mean, rel=1e-10) and float(var) == pytest.approx(ref_var, rel=1e-10)
        assert float(log_var) == pytest.approx(math.log(ref_var), rel=1e-10)
        # and by numerical integration of the unnormalised product
        dens = (scipy.stats.norm.pdf(-0.4, math.sqrt(alpha) * grid, math.sqrt(1 - alpha))
                * scipy.stats.norm.pdf(grid, math.sqrt(ab_prev) * 0.6, math.sqrt(1 - ab_prev)))
        w = dens / dens.sum()
        num_mean = (w * grid).sum()
        assert float(mean) == pytest.approx(num_mean, abs=1e-6)
        assert float(var) == pytest.approx((w * (grid - num_mean) ** 2).sum(), rel=1e-4)


def test_posterior_first_step_is_point_mass():
    sched = dk.Schedule.cosine(10)
    process = dk.GaussianDiffusion(sched)
    x0, x_t = torch.tensor([[0.3, -0.2]], dtype=D64), torch.tensor([[1.0, 2.0]], dtype=D64)
    mean, var, log_var = process.q_posterior(x0, x_t, torch.tensor([0]))
    assert torch.allclose(mean, x0, rtol=0, atol=1e-15) and (var == 0).all()
    assert torch.allclose(log_var, torch.full_like(log_var, math.log(sched.posterior_variance[1])))


# ---------------------------------------------------------------------------- reverse process
def true_reverse(mu: float, s2: float, ab_t: float, ab_prev: float, x_t: torch.Tensor):
    """E and Var of x_{t-1} given x_t for x_0 ~ N(mu, s2), from the joint Gaussian of (x_{t-1}, x_t)."""
    alpha = ab_t / ab_prev
    v_prev = ab_prev * s2 + 1 - ab_prev
    v_t = ab_t * s2 + 1 - ab_t
    cov = math.sqrt(alpha) * v_prev
    mean = math.sqrt(ab_prev) * mu + cov / v_t * (x_t - math.sqrt(ab_t) * mu)
    return mean, v_prev - cov**2 / v_t


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("respaced", [False, True])
def test_reverse_mean_of_oracle_is_true_conditional_mean(prediction, respaced):
    """DDPM eq. 11: with the exact predictor, mu_theta(x_t) = E[x_{t-1} | x_t], for every parameterisation."""
    base = dk.Schedule.cosine(60)
    sched = base.respace(12) if respaced else base
    mu, s2 = 0.25, 0.6**2
    oracle = gaussian_oracle(base, [mu, mu, mu], math.sqrt(s2), prediction=prediction)
    process = dk.GaussianDiffusion(sched, prediction=prediction)
    x_t = torch.tensor([[-1.5, 0.1, 2.0]], dtype=D64)
    for t_int in range(1, sched.T):
        pred = process.p_mean_variance(oracle, x_t, torch.tensor([t_int]))
        ref_mean, _ = true_reverse(mu, s2, sched.alpha_bar[t_int], sched.alpha_bar_prev[t_int], x_t)
        assert torch.allclose(pred.mean, ref_mean, rtol=1e-9, atol=1e-10)
        ab = sched.alpha_bar[t_int]
        x0_ref = mu + math.sqrt(ab) * s2 * (x_t - math.sqrt(ab) * mu) / (ab * s2 + 1 - ab)
        assert torch.allclose(pred.pred_x0, x0_ref, rtol=1e-9, atol=1e-10)


def test_fixed_variances_are_the_true_reverse_variance_at_the_extremes():
    """DDPM sec. 3.2: beta_t is optimal for x_0 ~ N(0, I), beta_tilde_t for a point mass."""
    sched = dk.Schedule.linear(50)
    large = dk.GaussianDiffusion(sched, variance="fixed_large")
    small = dk.GaussianDiffusion(sched, variance="fixed_small")
    x = torch.zeros(1, 1, dtype=D64)
    for t_int in range(1, 50):
        t = torch.tensor([t_int])
        ab, ab_prev = sched.alpha_bar[t_int], sched.alpha_bar_prev[t_int]
        assert float(large.variance_from(None, t, x)[0]) == pytest.approx(true_reverse(0, 1.0, ab, ab_prev, 0.0)[1], rel=1e-9)
        assert float(small.variance_from(None, t, x)[0]) == pytest.approx(true_reverse(0, 0.0, ab, ab_prev, 0.0)[1], rel=1e-9)
    # first step: improved-diffusion's fixed_large uses beta_tilde_2, not the paper's beta_1
    assert float(large.variance_from(None, torch.tensor([0]), x)[0]) == pytest.approx(sched.posterior_variance[1])


def test_learned_range_split_and_interpolation():
    sched = dk.Schedule.cosine(20)
    process = dk.GaussianDiffusion(sched, variance="learned_range")
    B, C = 4, 3
    x_t = torch.randn(B, C, 5, dtype=D64, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(B, C, 5, dtype=D64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 1, 10, 19])
    for v in (-1.0, -0.3, 0.0, 1.0):
        out = torch.cat([eps, torch.full_like(eps, v)], dim=1)
        pred = process.p_from_output(out, x_t, t)
        assert torch.equal(pred.var_values, out[:, C:]) and torch.equal(pred.pred_eps, eps)
        frac = (v + 1) / 2
        log_beta = np.log(sched.betas[t.numpy()])
        log_beta_tilde = np.log(np.maximum(sched.posterior_variance, sched.posterior_variance[1])[t.numpy()])
        expected = frac * log_beta + (1 - frac) * log_beta_tilde   # iDDPM eq. 15
        assert torch.allclose(pred.log_variance[:, 0, 0], torch.from_numpy(expected), rtol=1e-12)
        assert torch.allclose(pred.variance, pred.log_variance.exp())
        fixed = dk.GaussianDiffusion(sched).p_from_output(eps, x_t, t)
        assert torch.allclose(pred.mean, fixed.mean, rtol=1e-12)   # the mean ignores the variance half


def test_clip_x0_clips_and_stays_consistent():
    sched = dk.Schedule.linear(20)
    process = dk.GaussianDiffusion(sched, prediction="x0")
    x_t = torch.tensor([[0.5, -3.0]], dtype=D64)
    t = torch.tensor([9])
    out = torch.tensor([[2.5, -0.3]], dtype=D64)
    pred = process.p_from_output(out, x_t, t, clip_x0=True)
    assert pred.pred_x0.tolist() == [[1.0, -0.3]]
    assert torch.allclose(pred.pred_eps, process.eps_from_x0(x_t, t, pred.pred_x0))
    assert torch.allclose(pred.mean, process.q_posterior(pred.pred_x0, x_t, t)[0])
    assert torch.equal(process.p_from_output(out, x_t, t).pred_x0, out)


@settings(max_examples=60)
@given(t_int=st.integers(0, 99), schedule=st.sampled_from(["linear", "cosine"]),
       values=st.lists(st.floats(-3, 3), min_size=6, max_size=6))
def test_conversions_round_trip(t_int, schedule, values):
    process = dk.GaussianDiffusion(dk.Schedule.named(schedule, 100))
    data = torch.tensor(values, dtype=D64).reshape(2, 3)
    x0, eps = data[:1], data[1:]
    t = torch.tensor([t_int])
    x_t = process.q_sample(x0, t, eps)
    ab = float(process.schedule.alpha_bar[t_int])
    tol = dict(rtol=1e-9, atol=1e-9 / math.sqrt(ab))
    assert torch.allclose(process.x0_from_eps(x_t, t, eps), x0, **tol)
    assert torch.allclose(process.eps_from_x0(x_t, t, process.x0_from_eps(x_t, t, eps)), eps, rtol=1e-9, atol=1e-7)
    v = process.v_from(x0, eps, t)
    assert torch.allclose(v, math.sqrt(ab) * eps - math.sqrt(1 - ab) * x0, rtol=1e-12, atol=1e-12)
    assert torch.allclose(process.x0_from_v(x_t, t, v), x0, rtol=1e-9, atol=1e-9)
    assert torch.allclose(process.eps_from_v(x_t, t, v), eps, rtol=1e-9, atol=1e-9)
    for prediction in ("eps", "x0", "v"):
        p = dk.GaussianDiffusion(process.schedule, prediction=prediction)
        got_x0, got_eps = p.to_x0_eps(x_t, t, p.target(x0, eps, t))
        assert torch.allclose(got_x0, x0, **tol) and torch.allclose(got_eps, eps, rtol=1e-9, atol=1e-6)


# ---------------------------------------------------------------------------- diffusers
@pytest.mark.parametrize("prediction, hf_type", [("eps", "epsilon"), ("x0", "sample"), ("v", "v_prediction")])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_step_matches_diffusers_ddpm(prediction, hf_type, variance):
    diffusers = pytest.importorskip("diffusers")
    T = 50
    hf = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2",
                                 prediction_type=hf_type, variance_type=variance, clip_sample=False)
    process = dk.GaussianDiffusion(dk.Schedule.cosine(T), prediction=prediction, variance=variance)
    g = torch.Generator().manual_seed(3)
    x_t, out = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    for t_int in (1, 17, 49):
        ours = process.p_from_output(out, x_t, torch.full((2,), t_int))
        step = hf.step(out, t_int, x_t, generator=torch.Generator().manual_seed(t_int))
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t_int))
        assert torch.allclose(step.pred_original_sample, ours.pred_x0, rtol=1e-4, atol=1e-5)
        assert torch.allclose(step.prev_sample, ours.mean + ours.variance.sqrt() * noise, rtol=1e-4, atol=1e-5)
    # the last step (t = 0) adds no noise: the mean alone
    ours = process.p_from_output(out, x_t, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(hf.step(out, 0, x_t).prev_sample, ours.mean, rtol=1e-4, atol=1e-5)
    # and the documented disagreement at t = 0: diffusers keeps the paper's beta_1 for fixed_large
    if variance == "fixed_large":
        assert float(hf._get_variance(0)) == pytest.approx(float(hf.betas[0]), rel=1e-4)
        assert float(ours.variance[0, 0]) == pytest.approx(process.schedule.posterior_variance[1], rel=1e-6)


# ---------------------------------------------------------------------------- bad input
def one_line_error(fn, *parts):
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and all(p in msg for p in parts), msg


def test_bad_process_input():
    sched = dk.Schedule.linear(10)
    one_line_error(lambda: dk.GaussianDiffusion(sched, prediction="score"), "prediction", "'score'")
    one_line_error(lambda: dk.GaussianDiffusion(sched, variance="learned"), "variance", "'learned'")
    one_line_error(lambda: dk.GaussianDiffusion("linear"), "schedule", "str")
    process = dk.GaussianDiffusion(sched)
    x = torch.zeros(3, 2)
    one_line_error(lambda: process.q_sample(x, torch.tensor([0, 1, 10])), "t", "[0, 10)", "10")
    one_line_error(lambda: process.q_sample(x, torch.tensor([-1, 1, 2])), "t", "-1")
    one_line_error(lambda: process.q_sample(x, torch.tensor([0.5, 1.0, 2.0])), "t", "float")
    one_line_error(lambda: process.q_sample(x, torch.tensor([0, 1])), "t", "(3,)", "(2,)")
    one_line_error(lambda: process.q_sample(x, torch.tensor([0, 1, 2]), torch.zeros(1, 2)), "noise", "(1, 2)")
    nan = x.clone()
    nan[1, 0] = float("nan")
    one_line_error(lambda: process.q_sample(nan, torch.tensor([0, 1, 2])), "x0", "NaN")
    one_line_error(lambda: process.p_mean_variance(lambda a, b: a, nan, torch.tensor([0, 1, 2])), "x_t", "NaN")
    one_line_error(lambda: process.x0_from_eps(x, torch.tensor([0, 1, 2]), torch.zeros(2)), "eps", "(2,)")
    one_line_error(lambda: process.q_posterior(torch.zeros(3, 1), x, torch.tensor([0, 1, 2])), "x0", "(3, 1)")
    one_line_error(lambda: process.q_posterior(x, x, torch.tensor([-2, 1, 2])), "t", "-2")
    one_line_error(lambda: process.p_mean_variance(lambda a, b: a[:, :1], x, torch.tensor([0, 1, 2])),
                   "model output", "(3, 2)", "(3, 1)")
    learned = dk.GaussianDiffusion(sched, variance="learned_range")
    one_line_error(lambda: learned.p_mean_variance(lambda a, b: a, x, torch.tensor([0, 1, 2])),
                   "model output", "(3, 4)", "twice")
    one_line_error(lambda: learned.p_mean_variance(lambda a, b: a, torch.zeros(3), torch.tensor([0, 1, 2])),
                   "learned_range", "(3,)")
