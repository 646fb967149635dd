"""Losses and timestep samplers against closed forms, scipy, and the oracle's analytic minimum."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch

import ddpmkit as dk
from ddpmkit.core.gaussian import approx_standard_normal_cdf, discretized_gaussian_log_likelihood, normal_kl
from ddpmkit.core.losses import ImportanceSampler, UniformSampler, training_losses, vlb_term
from oracles import gaussian_oracle

D64 = torch.float64


# ---------------------------------------------------------------------------- L_simple
def min_mse(prediction: str, ab: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Var(target | x_t) for x_0 ~ N(mu, s2): the least L_simple any model can reach at alpha_bar."""
    v_t = ab * s2 + 1 - ab
    return {"eps": ab * s2 / v_t, "x0": s2 * (1 - ab) / v_t, "v": s2 / v_t}[prediction]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_l_simple_of_oracle_is_the_analytic_minimum(prediction, generator):
    T, n = 20, 40_000
    sched = dk.Schedule.cosine(T)
    mu, s = np.array([0.2, -0.5, 0.0]), np.array([0.4, 1.0, 0.7])
    oracle = gaussian_oracle(sched, mu, s, prediction=prediction)
    process = dk.GaussianDiffusion(sched, prediction=prediction)
    x0 = oracle.sample(n, generator)
    t = torch.randint(0, T, (n,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=D64)
    mse = training_losses(process, oracle, x0, "simple", t=t, noise=noise)["mse"]
    # E over t (uniform) and the dimensions of Var(target | x_t)
    expected = np.mean([min_mse(prediction, sched.alpha_bar[k], s**2).mean() for k in range(T)])
    se = float(mse.std()) / math.sqrt(n)
    assert float(mse.mean()) == pytest.approx(expected, abs=5 * se)
    # the oracle's value is the floor: an offset of 0.1 costs exactly 0.1^2 more, on the same draws
    worse = training_losses(process, lambda x, tt: oracle(x, tt) + 0.1, x0, "simple", t=t, noise=noise)["mse"]
    excess = worse - mse
    assert float(excess.mean()) == pytest.approx(0.01, abs=5 * float(excess.std()) / math.sqrt(n))


# ---------------------------------------------------------------------------- Gaussian pieces
@pytest.mark.parametrize("m1, v1, m2, v2", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 2.0), (1.0, 1e-3, 0.9, 4e-3)])
def test_normal_kl_against_scipy_integration(m1, v1, m2, v2):
    p, q = scipy.stats.norm(m1, math.sqrt(v1)), scipy.stats.norm(m2, math.sqrt(v2))
    lo, hi = m1 - 12 * math.sqrt(v1), m1 + 12 * math.sqrt(v1)
    ref, _ = scipy.integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), lo, hi, epsabs=1e-12, limit=200)
    got = normal_kl(*(torch.tensor(v, dtype=D64) for v in (m1, math.log(v1), m2, math.log(v2))))
    assert float(got) == pytest.approx(ref, rel=1e-7, abs=1e-10)


def scipy_discretized_log_prob(x: np.ndarray, mean: np.ndarray, std: np.ndarray, levels: int) -> np.ndarray:
    """log P(bin of x) under N(mean, std^2), edges to +-inf, computed with scipy's log CDF / SF."""
    h = 1.0 / (levels - 1)
    a, b = (x - h - mean) / std, (x + h - mean) / std
    lower = x < -1 + h
    upper = x > 1 - h
    # an interval's mass from whichever tail is accurate: SF above the mean, CDF below
    above = a > 0
    log_hi = np.where(above, scipy.stats.norm.logsf(a), scipy.stats.norm.logcdf(b))
    log_lo = np.where(above, scipy.stats.norm.logsf(b), scipy.stats.norm.logcdf(a))
    inside = log_hi + np.log1p(-np.exp(log_lo - log_hi))
    return np.where(lower, scipy.stats.norm.logcdf(b), np.where(upper, scipy.stats.norm.logsf(a), inside))


@pytest.mark.parametrize("levels", [256, 17, 2])
def test_discretized_decoder_against_scipy(levels, generator):
    grid = torch.linspace(-1, 1, levels, dtype=D64)
    x = grid[torch.randint(0, levels, (500,), generator=generator)]
    mean = torch.rand(500, generator=generator, dtype=D64) * 2.4 - 1.2
    std = torch.exp(torch.rand(500, generator=generator, dtype=D64) * 5 - 6)   # 0.0025 .. 0.37
    got = discretized_gaussian_log_likelihood(x, mean, std.log(), levels=levels)
    ref = scipy_discretized_log_prob(x.numpy(), mean.numpy(), std.numpy(), levels)
    assert np.isfinite(got.numpy()).all()
    assert np.allclose(got.numpy(), ref, rtol=1e-8, atol=1e-10)   # exact even hundreds of nats out
    assert got.min() < -100
    # a distribution over the levels: the bin probabilities sum to one
    for m, s in ((0.1, 0.05), (-0.97, 0.3), (2.0, 0.5)):
        lp = discretized_gaussian_log_likelihood(grid, torch.tensor(m, dtype=D64), torch.tensor(math.log(s), dtype=D64), levels)
        assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_tanh_cdf_approximation_is_close_but_not_exact():
    """DDPM / improved-diffusion use a tanh approximation of Phi; its error is below 2e-4."""
    z = torch.linspace(-6, 6, 10_001, dtype=D64)
    err = (approx_standard_normal_cdf(z) - torch.special.ndtr(z)).abs()
    assert 1e-5 < float(err.max()) < 2e-4
    x = torch.linspace(-1, 1, 256, dtype=D64)
    exact = discretized_gaussian_log_likelihood(x, x + 0.01, torch.tensor(math.log(0.02)))
    approx = discretized_gaussian_log_likelihood(x, x + 0.01, torch.tensor(math.log(0.02)), exact_cdf=False)
    assert float((exact - approx).abs().max()) < 1e-3


# ---------------------------------------------------------------------------- the VLB term
def test_vlb_term_is_ddpm_kl_and_decoder(generator):
    """L_t from an eps output against an independent numpy route: Bayes posterior, DDPM eq. 11, scipy."""
    T = 30
    sched = dk.Schedule.linear(T)
    process = dk.GaussianDiffusion(sched, variance="fixed_large")
    x0 = torch.linspace(-1, 1, 256, dtype=D64)[torch.randint(0, 256, (6, 4), generator=generator)]
    t = torch.tensor([0, 0, 1, 5, 17, 29])
    noise = torch.randn(6, 4, generator=generator, dtype=D64)
    eps_hat = noise + 0.3 * torch.randn(6, 4, generator=generator, dtype=D64)
    x_t = process.q_sample(x0, t, noise)
    got = vlb_term(process, eps_hat, x0, x_t, t, levels=256)
    for i, k in enumerate(t.tolist()):
        beta, ab, ab_prev = sched.betas[k], sched.alpha_bar[k], sched.alpha_bar_prev[k]
        mean_p = (x_t[i].numpy() - beta / math.sqrt(1 - ab) * eps_hat[i].numpy()) / math.sqrt(1 - beta)  # DDPM eq. 11
        var_p = sched.posterior_variance[1] if k == 0 else beta
        if k == 0:
            ref = -scipy_discretized_log_prob(x0[i].numpy(), mean_p, math.sqrt(var_p), 256).mean()
        else:
            prec = (1 - beta) / beta + 1 / (1 - ab_prev)
            mean_q = (math.sqrt(1 - beta) * x_t[i].numpy() / beta + math.sqrt(ab_prev) * x0[i].numpy() / (1 - ab_prev)) / prec
            var_q = 1 / prec
            ref = np.mean(0.5 * (np.log(var_p / var_q) + var_q / var_p + (mean_q - mean_p) ** 2 / var_p - 1))
        assert float(got[i]) == pytest.approx(ref / math.log(2), rel=1e-9)


def test_objectives_values():
    sched = dk.Schedule.cosine(40)
    process = dk.GaussianDiffusion(sched, variance="learned_range")
    model = lambda x, t: torch.cat([0.5 * x, torch.tanh(x)], dim=1)  # noqa: E731
    x0 = torch.rand(8, 2, 3, generator=torch.Generator().manual_seed(0), dtype=D64) * 2 - 1
    kw = dict(t=torch.arange(0, 40, 5), noise=torch.randn(8, 2, 3, generator=torch.Generator().manual_seed(1), dtype=D64))
    res = {o: training_losses(process, model, x0, o, **kw) for o in ("simple", "vlb", "hybrid")}
    assert torch.allclose(res["simple"]["loss"], res["simple"]["mse"])
    assert torch.allclose(res["vlb"]["loss"], 40 * res["vlb"]["vlb"])
    assert torch.allclose(res["hybrid"]["loss"], res["hybrid"]["mse"] + 0.001 * 40 * res["hybrid"]["vlb"])
    assert torch.allclose(process.loss(model, x0, "hybrid", **kw), res["hybrid"]["loss"])
    assert res["hybrid"]["loss"].shape == (8,)


def test_hybrid_vlb_gradient_reaches_only_the_variance_half():
    """iDDPM sec. 3.1: in L_hybrid the vlb term trains Sigma only (stop-gradient on the mean)."""
    sched = dk.Schedule.cosine(20)
    process = dk.GaussianDiffusion(sched, variance="learned_range")
    B, C = 6, 2
    x0 = torch.rand(B, C, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = torch.tensor([0, 1, 3, 8, 13, 19])
    noise = torch.randn(B, C, 4, generator=torch.Generator().manual_seed(1))
    init = torch.randn(B, 2 * C, 4, generator=torch.Generator().manual_seed(2)) * 0.5

    def grads(objective: str, key: str) -> torch.Tensor:
        out = init.clone().requires_grad_(True)
        res = training_losses(process, lambda x, tt: out, x0, objective, t=t, noise=noise)
        res[key].sum().backward()
        return out.grad

    vlb_only = grads("hybrid", "vlb")
    assert (vlb_only[:, :C] == 0).all()                       # the mean half gets nothing from L_vlb
    assert (vlb_only[:, C:].abs() > 0).all()                  # the variance half does, at every t
    hybrid, mse_only = grads("hybrid", "loss"), grads("hybrid", "mse")
    assert torch.equal(hybrid[:, :C], mse_only[:, :C])        # the mean learns from L_simple alone
    assert torch.allclose(hybrid[:, C:], 0.001 * 20 * vlb_only[:, C:])
    assert (grads("vlb", "loss")[:, :C].abs().sum(dim=(1, 2)) > 0).all()   # plain L_vlb trains the mean


# ---------------------------------------------------------------------------- timestep samplers
def warm(sampler: ImportanceSampler, losses_per_t: np.ndarray, rounds: int) -> None:
    T = sampler.T
    for _ in range(rounds):
        sampler.update(torch.arange(T), torch.from_numpy(losses_per_t))


def test_importance_sampler_uniform_until_warm_then_second_moment():
    T = 12
    sampler = ImportanceSampler(T, history=10, uniform_prob=0.001)
    rng = np.random.default_rng(0)
    warm(sampler, np.full(T, 1e6), 1)                          # to be pushed out of the history
    for r in range(8):
        sampler.update(torch.arange(T), torch.from_numpy(rng.uniform(0.5, 2.0, T) * np.arange(1, T + 1)))
        assert np.allclose(sampler.probabilities(), 1 / T) and not sampler.warmed_up()
    history = [rng.uniform(0.5, 2.0, T) * np.arange(1, T + 1) for _ in range(10)]
    for row in history:
        sampler.update(torch.arange(T), torch.from_numpy(row))
    assert sampler.warmed_up()
    w = np.sqrt(np.mean(np.stack(history) ** 2, axis=0))       # sqrt(E[L_t^2]) over the last 10
    expected = 0.999 * w / w.sum() + 0.001 / T
    assert np.allclose(sampler.probabilities(), expected, rtol=1e-12)
    t, weights = sampler.sample(64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(weights.double(), torch.from_numpy(1 / (T * expected[t.numpy()])), rtol=1e-6)
    restored = ImportanceSampler(T)
    restored.load_state_dict(sampler.state_dict())
    assert np.array_equal(restored.probabilities(), sampler.probabilities())


def test_importance_weights_keep_the_loss_unbiased():
    """E_{t~p}[w(t) L(t)] = (1/T) sum_t L(t) with w = 1/(T p_t): exactly, and by sampling."""
    T = 25
    L = np.linspace(0.1, 5.0, T) ** 2
    sampler = ImportanceSampler(T)
    warm(sampler, L, 10)
    p = sampler.probabilities()
    assert not np.allclose(p, 1 / T)
    assert np.sum(p * (1 / (T * p)) * L) == pytest.approx(L.mean(), rel=1e-12)
    n = 200_000
    t, w = sampler.sample(n, generator=torch.Generator().manual_seed(0))
    est = w.double() * torch.from_numpy(L)[t]
    assert float(est.mean()) == pytest.approx(L.mean(), abs=5 * float(est.std()) / math.sqrt(n))
    # importance sampling lowers the variance of the estimate against uniform draws
    assert float(est.var()) < float(torch.from_numpy(L).var())
    t_u, w_u = UniformSampler(T).sample(100, generator=torch.Generator().manual_seed(0))
    assert (w_u == 1).all() and t_u.min() >= 0 and t_u.max() < T


def test_sampler_bad_input():
    sampler = ImportanceSampler(5)
    for bad_t in ([0, 5], [-1, 0]):
        with pytest.raises(ValueError, match=r"t must hold integer timesteps in \[0, 5\)"):
            sampler.update(torch.tensor(bad_t), torch.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        sampler.update(torch.tensor([0, 1]), torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="losses must have the shape"):
        sampler.update(torch.tensor([0, 1]), torch.ones(3))
    with pytest.raises(ValueError, match="sampler='adaptive'"):
        dk.make_timestep_sampler("adaptive", 10)
    with pytest.raises(ValueError, match="T=0"):
        ImportanceSampler(0)
    warm(sampler, np.zeros(5), 10)
    assert np.allclose(sampler.probabilities(), 0.2)           # all-zero losses: uniform, not NaN


def test_sampler_update_and_unchecked_q_sample_read_the_host_once():
    """The importance sampler's update takes each argument to the host once (a CPU tensor: one
    ``.numpy()``, no copy) and checks in numpy; ``q_sample(validate=False)`` reads nothing and
    draws exactly what the checked call draws."""
    from test_sync_free_training import count_host_reads

    gen = torch.Generator().manual_seed(0)
    sampler, reference = ImportanceSampler(6, history=2), ImportanceSampler(6, history=2)
    for batch in (4, 64):
        t, losses = torch.randint(0, 6, (batch,), generator=gen), torch.rand(batch, generator=gen)
        with count_host_reads() as counts:
            sampler.update(t, losses)
        assert sum(counts.values()) == 2, counts
        for ti, li in zip(t.tolist(), losses.double().tolist()):   # one at a time: the same history
            reference.update(torch.tensor([ti]), torch.tensor([li], dtype=D64))
    assert sampler.state_dict() == reference.state_dict()
    process = dk.GaussianDiffusion(dk.Schedule.cosine(50))
    x0, noise = torch.randn(8, 3, generator=gen), torch.randn(8, 3, generator=gen)
    t = torch.randint(0, 50, (8,), generator=gen)
    with count_host_reads() as counts:
        fast = process.q_sample(x0, t, noise, validate=False)
    assert not counts and torch.equal(fast, process.q_sample(x0, t, noise))
    with pytest.raises(ValueError, match="noise must have the shape"):
        process.q_sample(x0, t, noise[:4], validate=False)


def test_loss_bad_input():
    process = dk.GaussianDiffusion(dk.Schedule.linear(10))
    x0 = torch.zeros(4, 3)
    ident = lambda x, t: x  # noqa: E731

    def err(fn, *parts):
        with pytest.raises(ValueError) as info:
            fn()
        assert "\n" not in str(info.value) and all(p in str(info.value) for p in parts), str(info.value)

    err(lambda: process.loss(ident, x0, objective="kl"), "objective", "'kl'")
    err(lambda: process.loss(ident, x0 + float("nan")), "x0", "NaN")
    err(lambda: process.loss(ident, x0, t=torch.tensor([0, 1, 2, 10])), "t", "10")
    err(lambda: process.loss(lambda x, t: x[:, :2], x0), "model output", "(4, 3)", "(4, 2)")
    err(lambda: process.loss(ident, x0, noise=torch.zeros(4)), "noise", "(4,)")
    err(lambda: process.loss(ident, x0 + 3.0, objective="hybrid"), "x0", "[-1, 1]", "levels=256")
    err(lambda: process.loss(ident, x0, objective="vlb", levels=1), "levels", "1")
    assert process.loss(ident, x0 + 3.0, objective="hybrid", levels=None).shape == (4,)
