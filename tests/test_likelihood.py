"""The variational bound in bits/dim against closed forms with exact (oracle) denoisers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ddpmkit as dk
from ddpmkit.likelihood.bound import prior_bpd
from oracles import gaussian_oracle

D64 = torch.float64
LN2 = math.log(2.0)


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def prior_closed_form(sched: dk.Schedule, x0: torch.Tensor) -> torch.Tensor:
    """KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)) per example, bits/dim."""
    ab = sched.alpha_bar[-1]
    kl = 0.5 * (-math.log(1 - ab) + (1 - ab) + ab * x0**2 - 1)
    return kl.flatten(1).mean(1) / LN2


# ---------------------------------------------------------------------------- point mass: exact
@pytest.mark.parametrize("schedule", [dk.Schedule.cosine(40), dk.Schedule.linear(100).respace(12)])
def test_point_mass_bound_is_decoder_plus_prior(schedule):
    """x_0 = c with fixed_small and the exact predictor: every KL term is 0 (the posterior is exact)."""
    levels = 256
    c = torch.tensor([-1.0, -1 + 2 * 40 / 255, 2 * 200 / 255 - 1, 1.0], dtype=D64)
    oracle = gaussian_oracle(schedule, c, 0.0)
    process = dk.GaussianDiffusion(schedule, variance="fixed_small")
    x0 = c.expand(5, 4)
    res = dk.vlb_bpd(process, oracle, x0, levels=levels, generator=torch.Generator().manual_seed(0), progress=False)
    assert res.terms[:, 1:].abs().max() < 1e-9
    sigma = math.sqrt(schedule.posterior_variance[1])          # the decoder's clipped variance
    z = (1 / (levels - 1)) / sigma
    edge, inner = -math.log2(normal_cdf(z)), -math.log2(normal_cdf(z) - normal_cdf(-z))
    decoder = (2 * edge + 2 * inner) / 4
    assert torch.allclose(res.decoder, torch.full((5,), decoder, dtype=D64), rtol=1e-9)
    assert torch.allclose(res.prior, prior_closed_form(schedule, x0), rtol=1e-9)
    assert torch.allclose(res.total, res.prior + res.decoder, rtol=1e-12)
    cont = dk.vlb_bpd(process, oracle, x0, levels=None, progress=False)   # a density: log2 of 1 / N(c; c, s^2)
    assert torch.allclose(cont.decoder, torch.full((5,), 0.5 * math.log2(2 * math.pi * sigma**2), dtype=D64))


# ---------------------------------------------------------------------------- Gaussian data
def expected_terms(sched: dk.Schedule, variance: str, s2: np.ndarray) -> np.ndarray:
    """E over x_0 ~ N(mu, s2) and x_t of each term L_t (bits/dim) for the exact predictor.

    With mu_theta = c_t E[x_0|x_t] + d_t x_t, the posterior means differ by c_t (x_0 - E[x_0|x_t]),
    so E KL = 1/2 (log(sigma^2 / beta_tilde) + beta_tilde / sigma^2 - 1 + c_t^2 V_t / sigma^2),
    V_t = Var(x_0 | x_t) = s2 (1 - ab) / (ab s2 + 1 - ab); the continuous decoder's expectation is
    1/2 log(2 pi sigma^2) + V_0 / (2 sigma^2).
    """
    out = []
    for k in range(sched.T):
        ab, c, bt = sched.alpha_bar[k], sched.posterior_mean_coef_x0[k], sched.posterior_variance[k]
        V = s2 * (1 - ab) / (ab * s2 + 1 - ab)
        sigma2 = {"fixed_small": np.exp(sched.posterior_log_variance[k]) + 0 * V,
                  "fixed_large": np.exp(sched.large_log_variance[k]) + 0 * V,
                  "learned_range": bt + c**2 * V}[variance]
        if k == 0:
            nats = 0.5 * np.log(2 * np.pi * sigma2) + V / (2 * sigma2)
        else:
            nats = 0.5 * (np.log(sigma2 / bt) + bt / sigma2 - 1 + c**2 * V / sigma2)
        out.append(nats.mean() / LN2)
    return np.array(out)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_every_term_matches_its_closed_form_expectation(variance):
    sched = dk.Schedule.cosine(15)
    mu, s = np.array([0.3, -0.4, 0.0, 0.5]), np.array([0.5, 1.0, 0.2, 0.8])
    # shape (4, 1): learned_range needs a channel dimension for its second half
    oracle = gaussian_oracle(sched, mu[:, None], s[:, None], var_values="exact" if variance == "learned_range" else None)
    process = dk.GaussianDiffusion(sched, variance=variance)
    g = torch.Generator().manual_seed(0)
    x0 = oracle.sample(4000, g)
    res = dk.vlb_bpd(process, oracle, x0, levels=None, generator=g, progress=False)
    expected = expected_terms(sched, variance, s**2)
    se = res.terms.std(0) / math.sqrt(x0.shape[0])
    assert ((res.terms.mean(0) - torch.from_numpy(expected)).abs() <= 5 * se + 1e-12).all(), (res.terms.mean(0), expected)
    assert torch.allclose(res.prior, prior_closed_form(sched, x0), rtol=1e-9)
    assert torch.allclose(res.total, res.prior + res.terms.sum(1), rtol=1e-12)


def test_stationary_data_bound_is_entropy_plus_decoder_gap():
    """x_0 ~ N(0, I) is stationary: q(x_{t-1}|x_t) = N(sqrt(alpha_t) x_t, beta_t) and q(x_T) = N(0, I).

    With the exact mean and variance at every step (learned_range oracle) the bound is tight:
    E[bound] = H(N(0, 1)) = 1/2 log2(2 pi e) bits/dim. fixed_large has the true variance beta_t
    for t > 0 but, as in improved-diffusion, beta_tilde_2 instead of beta_1 at the decoder, so
    E[bound] = H + KL(N(0, beta_1) || N(0, beta_tilde_2)): the whole gap sits in that one term.
    """
    sched = dk.Schedule.cosine(20)
    x0 = torch.randn(3000, 16, 1, generator=torch.Generator().manual_seed(1), dtype=D64)
    runs = {}
    for variance, var_values in (("learned_range", "exact"), ("fixed_large", None)):
        oracle = gaussian_oracle(sched, np.zeros((16, 1)), 1.0, var_values=var_values)
        process = dk.GaussianDiffusion(sched, variance=variance)
        runs[variance] = dk.vlb_bpd(process, oracle, x0, levels=None, generator=torch.Generator().manual_seed(2),
                                    progress=False)
    tight, large = runs["learned_range"], runs["fixed_large"]
    entropy = 0.5 * math.log2(2 * math.pi * math.e)
    se = float(tight.total.std()) / math.sqrt(x0.shape[0])
    assert float(tight.total.mean()) == pytest.approx(entropy, abs=5 * se)
    assert torch.allclose(tight.terms[:, 1:], large.terms[:, 1:], rtol=1e-9, atol=1e-12)   # same beta_t
    b1, bt2 = sched.betas[0], sched.posterior_variance[1]
    gap = 0.5 * (math.log(bt2 / b1) + b1 / bt2 - 1) / LN2
    diff = large.total - tight.total
    se_diff = float(diff.std()) / math.sqrt(x0.shape[0])
    assert float(diff.mean()) == pytest.approx(gap, abs=5 * se_diff)
    assert 5 * se_diff < gap / 3                                    # the test can tell the two apart


# ---------------------------------------------------------------------------- structure
def test_terms_sum_and_discrete_bpd_is_positive():
    sched = dk.Schedule.cosine(25)
    g = torch.Generator().manual_seed(2)
    x0 = (torch.randint(0, 17, (6, 2, 8), generator=g) / 8.0 - 1.0)   # 17 levels, like the digits
    model = lambda x, t: torch.cat([0.7 * x, torch.tanh(x)], dim=1)  # noqa: E731
    process = dk.GaussianDiffusion(sched, variance="learned_range")
    res = dk.vlb_bpd(process, model, x0, levels=17, generator=g, progress=False)
    assert res.terms.shape == (6, 25) and res.mse.shape == (6, 25) and res.discrete and res.levels == 17
    assert (res.terms >= 0).all() and (res.total > 0).all()
    assert torch.allclose(res.total, res.prior + res.terms.sum(1))
    assert torch.equal(res.decoder, res.terms[:, 0])
    assert torch.allclose(res.prior, prior_bpd(process, x0).double())


def test_t_batch_and_condition_alignment():
    """Evaluating several timesteps per call must keep each example with its own condition."""
    sched = dk.Schedule.linear(10)
    process = dk.GaussianDiffusion(sched, variance="fixed_small")

    def point_mass_eps(x, t, centre):   # the exact predictor of x_0 = centre (per example)
        ab = torch.from_numpy(sched.alpha_bar)[t].reshape(-1, 1)
        return (x - ab.sqrt() * centre) / (1 - ab).sqrt()

    centre = torch.linspace(-1, 1, 256, dtype=D64)[torch.tensor([[3, 100], [250, 7], [128, 128]])]
    runs = [dk.vlb_bpd(process, point_mass_eps, centre, t_batch=k, progress=False, centre=centre) for k in (1, 4, 10)]
    for res in runs:
        assert res.terms[:, 1:].abs().max() < 1e-9
        assert torch.allclose(res.total, runs[0].total, rtol=1e-12)


def test_issue_api_as_written(capsys):
    import ddpmkit as dk   # noqa: F811  (the snippet, verbatim)

    schedule = dk.Schedule.cosine(T=1000)
    assert schedule.betas.shape == (1000,) and schedule.alpha_bar.shape == (1000,)
    assert dk.Schedule.linear(T=1000).T == dk.Schedule.sigmoid(T=1000).T == 1000
    short = schedule.respace(50)
    assert short.T == 50 and schedule.respace("ddim50").T == 50 and schedule.respace("10,15,20").T == 45
    short_process = dk.GaussianDiffusion(short, prediction="eps", variance="learned_range")
    process = dk.GaussianDiffusion(schedule, prediction="eps", variance="learned_range")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 4, 4, generator=g) * 2 - 1
    t, noise = torch.tensor([0, 500, 999]), torch.randn(3, 1, 4, 4, generator=g)
    x_t = process.q_sample(x0, t, noise)
    assert x_t.shape == x0.shape
    model = lambda x, tt: torch.cat([0.1 * x, torch.zeros_like(x)], dim=1)  # noqa: E731
    loss = process.loss(model, x0, objective="hybrid")
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    bpd = dk.vlb_bpd(short_process, model, x0)
    assert bpd.total.shape == (3,) and bpd.terms.shape == (3, 50)
    assert "vlb" in capsys.readouterr().err                     # the progress bar


def test_vlb_bad_input():
    process = dk.GaussianDiffusion(dk.Schedule.linear(5))
    ident = lambda x, t: x  # noqa: E731
    x0 = torch.zeros(2, 3)
    cases = [
        (dict(x0=x0 * float("nan")), ("x0", "NaN")),
        (dict(x0=x0 + 2.0), ("x0", "[-1, 1]", "levels=256")),
        (dict(x0=x0, levels=0), ("levels", "0")),
        (dict(x0=x0, t_batch=0), ("t_batch", "0")),
        (dict(x0=x0, model=lambda x, t: x[:1]), ("model output", "(2, 3)", "(1, 3)")),
    ]
    for kwargs, parts in cases:
        kwargs.setdefault("model", ident)
        with pytest.raises(ValueError) as info:
            dk.vlb_bpd(process, progress=False, **kwargs)
        assert "\n" not in str(info.value) and all(p in str(info.value) for p in parts), str(info.value)
