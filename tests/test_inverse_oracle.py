"""Inverse problems measured against the exact conditional of Gaussian (mixture) data.

x_0 ~ N(mu, Sigma), Sigma strongly correlated (AR(1), rho = 0.9, rotated), the exact denoiser
wrapped as the network of the discrete process and of EDM; p(x_unknown | x_known) in closed
form. KL = Gaussian KL of the samples' fitted moments to the truth, beside the floor (exact
samples of the same count). Seeds are fixed; the asserted margins are wide of the measurements
written next to them.
"""
from __future__ import annotations

import pytest
import torch

import ddpmkit as dk
from ddpmkit.inverse import GaussianOracle, Mask, gaussian_kl, solve_inverse
from ddpmkit.inverse.oracle import fit_gaussian
from oracles import gaussian_oracle

N = 1000
KNOWN = torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool)


@pytest.fixture(scope="module")
def setup():
    oracle = GaussianOracle.correlated(6, 0.9)
    x_true = oracle.sample(1, torch.Generator().manual_seed(5))
    mean, cov = oracle.conditional_moments(KNOWN, x_true[0, KNOWN])
    exact = mean + torch.randn(N, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) \
        @ torch.linalg.cholesky(cov).T
    floor = gaussian_kl(*fit_gaussian(exact), mean, cov)
    return oracle, x_true * KNOWN, mean, cov, floor


def run(process, oracle, y, method, **kw):
    x = solve_inverse(process, oracle.model(process), y, Mask(KNOWN.double()), shape=(N, 6), method=method,
                      seed=0, progress=False, **kw)
    assert torch.equal(x[:, KNOWN], y.expand(N, -1)[:, KNOWN]) or method == "dps"   # the known part is y exactly
    return x


def kl_of(x, mean, cov):
    return gaussian_kl(*fit_gaussian(x[:, ~KNOWN]), mean, cov)


def test_oracle_denoiser_matches_the_diagonal_oracle():
    """A diagonal covariance: the full-covariance oracle equals tests/oracles.py's (written apart)."""
    process = dk.GaussianDiffusion(dk.Schedule.linear(1000))
    mean, std = torch.tensor([0.3, -0.2, 0.1]), torch.tensor([0.5, 0.2, 0.9])
    full = GaussianOracle(mean[None], torch.diag(std**2)[None]).model(process)
    diag = gaussian_oracle(process.schedule, mean, std)
    x = torch.randn(7, 3, dtype=torch.float64)
    t = torch.tensor([0, 10, 100, 300, 500, 800, 999])
    assert torch.allclose(full(x, t), diag(x, t), atol=1e-10)


def test_repaint_beats_replacement_and_improves_with_resamplings(setup):
    oracle, y, mean, cov, floor = setup
    process = dk.EDM()
    replace = run(process, oracle, y, "replace", steps=100)
    assert torch.equal(run(process, oracle, y, "repaint", steps=100, jump_n_sample=1), replace)
    kl = {r: kl_of(run(process, oracle, y, "repaint", steps=100, jump_n_sample=r), mean, cov) for r in (3, 8)}
    kl[1] = kl_of(replace, mean, cov)
    # measured: 0.118, 0.025, 0.018 against a floor of about 0.005
    assert kl[1] > 2.5 * kl[3] and kl[8] < kl[3] and kl[8] < 5 * floor + 0.01
    # the setting, the discrete process with ancestral steps: measured 0.137 vs 0.043
    discrete = dk.GaussianDiffusion(dk.Schedule.linear(1000))
    kl_replace = kl_of(run(discrete, oracle, y, "replace", steps=100), mean, cov)
    kl_repaint = kl_of(run(discrete, oracle, y, "repaint", steps=100, jump_n_sample=5), mean, cov)
    assert kl_replace > 2.0 * kl_repaint and kl_replace > 10 * floor


def test_smc_falls_toward_the_floor_as_particles_grow(setup):
    oracle, y, mean, cov, floor = setup
    kl = {p: kl_of(run(dk.EDM(), oracle, y, "smc", steps=100, particles=p), mean, cov) for p in (1, 8, 32)}
    # measured: 0.19, 0.023, 0.0097; floor about 0.005
    assert kl[1] > 3 * kl[8] > 3 * kl[32] / 1.5 and kl[32] < 3 * floor + 0.003


def test_dps_lowers_the_observation_residual(setup):
    oracle, y, mean, cov, floor = setup
    process = dk.GaussianDiffusion(dk.Schedule.linear(1000))
    free, guided = (run(process, oracle, y, "dps", steps=100, step_size=s) for s in (0.0, 1.0))
    residual = lambda x: float((x - y)[:, KNOWN].norm(dim=1).mean())  # noqa: E731
    assert residual(guided) < 0.7 * residual(free)                    # measured 0.50 vs 0.92
    assert kl_of(guided, mean, cov) < 0.2 * kl_of(free, mean, cov)     # measured 0.19 vs 4.6


def test_mixture_conditional_weights_and_means():
    """Two overlapping components: the true conditional is the re-weighted mixture of the
    components' conditionals. y = the known part of a data draw whose weights are mixed."""
    oracle = GaussianOracle.correlated(6, 0.9, seed=1, components=2, spread=0.6)
    draws = oracle.sample(500, torch.Generator().manual_seed(7))
    w0 = torch.stack([oracle.conditional(KNOWN, d[KNOWN])[0][0] for d in draws])
    y = draws[int((w0 - 0.4).abs().argmin())][None] * KNOWN
    w, m, c = oracle.conditional(KNOWN, y[0, KNOWN])
    assert 0.3 < float(w[0]) < 0.6
    mix_mean = (w[:, None] * m).sum(0)
    frac, err = {}, {}
    for method, kw in (("replace", {}), ("repaint", dict(jump_n_sample=5)), ("smc", dict(particles=16))):
        x = run(dk.EDM(), oracle, y, method, steps=100, **kw)[:, ~KNOWN]
        # assign each sample to the likelier component conditional
        d = torch.stack([((x - m[k]) @ torch.linalg.inv(c[k]) * (x - m[k])).sum(1) + torch.logdet(c[k])
                         for k in range(2)], 1)
        frac[method] = float((d.argmin(1) == 0).double().mean())
        err[method] = float((x.mean(0) - mix_mean).norm())
    # measured: weight of component 0 0.73 / 0.71 / 0.52 (truth 0.445), mean error 0.71 / 0.63 / 0.22
    assert abs(frac["smc"] - float(w[0])) < 0.12 and abs(frac["replace"] - float(w[0])) > 0.2
    assert err["smc"] < 0.5 * err["replace"] and err["repaint"] < err["replace"]
