"""The score-based and EDM samplers (ddpmkit/sampling/score_sde.py, edm.py) on exact denoisers.

Data N(MU, SD^2): the exact denoiser in x_hat = x_0 + sigma eps is D = MU + SD^2 / (SD^2 + sigma^2)
(x - MU) (written here from scratch). Data a two-component mixture: D is the responsibility-
weighted sum of the components' posterior means. Grids: geometric (VE, sigma 50 to 0.01) and
Karras (rho = 7), both with the final 0. Every sampler must reproduce the data's mean and
standard deviation within sampling error at enough steps; ALD's output law is also computed
exactly and must match its samples, and approach the data as the steps per level grow.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracles import gaussian_oracle
from test_sync_free_sampling import count_host_reads

import ddpmkit as dk
import ddpmkit.sampling as dks
from ddpmkit.sampling import SampleOptions
from ddpmkit.sampling.edm import dpmpp3m_sde, euler_churn, heun_churn
from ddpmkit.sampling.registry import SAMPLERS, Sampler
from ddpmkit.sampling.score_sde import (PREDICTORS, ald, ancestral_ve, euler_maruyama, predictor_corrector,
                                        reverse_diffusion)

MU, SD, N = 0.3, 0.5, 20000


def gaussian_denoiser(x: torch.Tensor, sigma: float, **cond) -> torch.Tensor:
    return MU + SD**2 / (SD**2 + sigma**2) * (x - MU)


WEIGHTS, MEANS, STDS = (0.7, 0.3), (-1.0, 1.5), (0.2, 0.3)


def mixture_denoiser(x: torch.Tensor, sigma: float, **cond) -> torch.Tensor:
    """E[x_0 | x_hat] for x_0 ~ sum_k w_k N(m_k, s_k^2): responsibilities under N(m_k, s_k^2 + sigma^2)."""
    log_r, post = [], []
    for w, m, s in zip(WEIGHTS, MEANS, STDS):
        var = s * s + sigma * sigma
        log_r.append(math.log(w) - 0.5 * math.log(var) - 0.5 * (x - m) ** 2 / var)
        post.append(m + (s * s / var) * (x - m))
    resp = torch.softmax(torch.stack(log_r), dim=0)
    return (resp * torch.stack(post)).sum(0)


def grid(kind: str, levels: int) -> np.ndarray:
    top = np.geomspace(50.0, 0.01, levels) if kind == "geometric" else dks.karras_sigmas(0.01, 50.0, levels)
    return np.append(top, 0.0)


def run(sampler, D, sigmas: np.ndarray, n: int = N, seed: int = 0, **params) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = sigmas[0] * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    return sampler(D, x, sigmas, SampleOptions(generator=generator, progress=False), **params)


def z_scores(x: torch.Tensor, mean: float, std: float) -> tuple[float, float]:
    n = x.shape[0]
    return (float(x.mean()) - mean) / (std / math.sqrt(n)), (float(x.std()) - std) / (std / math.sqrt(2 * n))


# sampler, params, levels: enough steps for each to reach the data
SAMPLERS_AT_ENOUGH_STEPS = [
    ("ald", ald, dict(steps_per_level=20, eps=1e-4), 100),
    ("reverse_diffusion", reverse_diffusion, {}, 1000),
    ("ancestral_ve", ancestral_ve, {}, 1000),
    ("predictor_corrector", predictor_corrector, {}, 300),
    ("pc_ancestral", predictor_corrector, dict(predictor="ancestral_ve", snr=0.1, corrector_steps=2), 300),
    ("heun_churn", heun_churn, dict(s_churn=40.0), 100),
    ("euler_churn", euler_churn, dict(s_churn=40.0), 1000),
    ("dpmpp3m_sde", dpmpp3m_sde, {}, 100),
    ("dpmpp3m_sde_eta", dpmpp3m_sde, dict(eta=0.5), 100),
]


@pytest.mark.parametrize("kind", ["geometric", "karras"])
@pytest.mark.parametrize("name,sampler,params,levels", SAMPLERS_AT_ENOUGH_STEPS, ids=[s[0] for s in SAMPLERS_AT_ENOUGH_STEPS])
def test_every_sampler_reproduces_the_gaussian(kind, name, sampler, params, levels):
    z_mean, z_std = z_scores(run(sampler, gaussian_denoiser, grid(kind, levels), **params), MU, SD)
    assert abs(z_mean) < 4.5 and abs(z_std) < 4.5, (z_mean, z_std)


def ald_law(sigmas: np.ndarray, steps_per_level: int, eps: float) -> tuple[float, float]:
    """The exact output law of ALD with the final denoising step for the Gaussian data: each
    Langevin step maps x - MU to (1 - alpha / v)(x - MU) + sqrt(2 alpha) z, v = SD^2 + sigma^2."""
    lowest = sigmas[-2]
    mean, var = 0.0, sigmas[0] ** 2
    for sigma in sigmas[:-1]:
        alpha = eps * sigma**2 / lowest**2
        c = 1.0 - alpha / (SD**2 + sigma**2)
        for _ in range(steps_per_level):
            mean, var = MU + c * (mean - MU), c * c * var + 2.0 * alpha
    k = SD**2 / (SD**2 + lowest**2)
    return MU + k * (mean - MU), k * math.sqrt(var)


def test_ald_follows_its_exact_law_and_small_steps_reach_the_target():
    sigmas = grid("geometric", 50)
    law = ald_law(sigmas, 5, 2e-5)
    assert abs(law[1] - SD) > 0.02   # coarse: visibly off the data, and the samples must show it
    z_mean, z_std = z_scores(run(ald, gaussian_denoiser, sigmas, steps_per_level=5, eps=2e-5), *law)
    assert abs(z_mean) < 4.5 and abs(z_std) < 4.5, (z_mean, z_std, law)
    errors = [abs(ald_law(sigmas, n, 2e-5)[1] - SD) for n in (5, 20, 80)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.005, errors
    assert ald_law(sigmas, 5, 2e-5)[1] != ald_law(sigmas, 5, 2e-5 * 0.5)[1]


def test_ald_without_denoising_keeps_the_lowest_level_noise():
    sigmas = np.append(np.geomspace(5.0, 0.3, 40), 0.0)
    law = ald_law(sigmas, 20, 0.05)
    out = run(ald, gaussian_denoiser, sigmas, steps_per_level=20, eps=0.05, denoise=False)
    k = SD**2 / (SD**2 + 0.3**2)
    z_mean, z_std = z_scores(out, law[0], law[1] / k)   # the law before the denoising step
    assert abs(z_mean) < 4.5 and abs(z_std) < 4.5, (z_mean, z_std)


MIXTURE_SAMPLERS = [("ald", ald, dict(steps_per_level=10, eps=2e-5), 200),
                    ("predictor_corrector", predictor_corrector, {}, 200),
                    ("heun_churn", heun_churn, dict(s_churn=20.0), 60),
                    ("dpmpp3m_sde", dpmpp3m_sde, {}, 60)]


@pytest.mark.parametrize("name,sampler,params,levels", MIXTURE_SAMPLERS, ids=[s[0] for s in MIXTURE_SAMPLERS])
def test_mixture_mode_weights_are_recovered(name, sampler, params, levels):
    n = 8000
    x = run(sampler, mixture_denoiser, grid("geometric", levels), n=n, **params)[:, 0]
    right = x > 0.25
    weight = float(right.double().mean())
    assert abs(weight - WEIGHTS[1]) < 4.5 * math.sqrt(WEIGHTS[0] * WEIGHTS[1] / n), weight
    for mode, m, s in ((~right, MEANS[0], STDS[0]), (right, MEANS[1], STDS[1])):
        assert abs(float(x[mode].mean()) - m) < 0.05 and abs(float(x[mode].std()) - s) < 0.1 * s


def test_heun_and_euler_churn_without_churn_are_heun_and_euler():
    sigmas = grid("karras", 12)
    for ours, plain in ((heun_churn, dks.heun), (euler_churn, dks.euler)):
        assert torch.equal(run(ours, gaussian_denoiser, sigmas, n=64), run(plain, gaussian_denoiser, sigmas, n=64))
        assert torch.equal(run(ours, gaussian_denoiser, sigmas, n=64, s_churn=10.0, s_tmin=100.0),
                           run(plain, gaussian_denoiser, sigmas, n=64))   # no level in the churn window
    churned = run(heun_churn, gaussian_denoiser, sigmas, n=64, s_churn=10.0)
    assert not torch.equal(churned, run(dks.heun, gaussian_denoiser, sigmas, n=64))


def test_score_sde_predictors_reuse_the_exact_step_where_they_are_it():
    sigmas = grid("geometric", 20)
    assert euler_maruyama is reverse_diffusion and PREDICTORS["euler_maruyama"] is PREDICTORS["reverse_diffusion"]
    assert torch.equal(run(ancestral_ve, gaussian_denoiser, sigmas, n=64), run(dks.sde, gaussian_denoiser, sigmas, n=64))
    assert torch.equal(run(predictor_corrector, gaussian_denoiser, sigmas, n=64, predictor="ancestral_ve", snr=0.2,
                           corrector_steps=2), run(dks.pc, gaussian_denoiser, sigmas, n=64, snr=0.2, corrector_steps=2))
    # reverse diffusion: the same mean as the exact step, sigma / sigma' times its noise
    rd, anc = (run(f, gaussian_denoiser, sigmas, n=64) for f in (reverse_diffusion, ancestral_ve))
    assert not torch.allclose(rd, anc)


def test_reverse_diffusion_overshoots_the_variance_on_a_coarse_grid_and_converges():
    """Its noise sqrt(sigma^2 - sigma'^2) ignores D's shrinkage: too much variance at 20 levels."""
    coarse = z_scores(run(reverse_diffusion, gaussian_denoiser, grid("geometric", 20)), MU, SD)[1]
    fine = z_scores(run(reverse_diffusion, gaussian_denoiser, grid("geometric", 1000)), MU, SD)[1]
    assert coarse > 10.0 and abs(fine) < 4.5, (coarse, fine)


ALL = [(ald, {}), (reverse_diffusion, {}), (ancestral_ve, {}), (predictor_corrector, {}),
       (predictor_corrector, dict(predictor="euler_maruyama", corrector_steps=2)),
       (heun_churn, dict(s_churn=5.0, s_noise=1.003)), (euler_churn, dict(s_churn=5.0)),
       (dpmpp3m_sde, {}), (dpmpp3m_sde, dict(eta=0.3))]


@pytest.mark.parametrize("sampler,params", ALL, ids=lambda v: getattr(v, "__name__", str(v)))
def test_deterministic_for_a_fixed_generator(sampler, params):
    sigmas = grid("karras", 8)
    first = run(sampler, gaussian_denoiser, sigmas, n=32, seed=3, **params)
    assert torch.equal(first, run(sampler, gaussian_denoiser, sigmas, n=32, seed=3, **params))
    assert not torch.equal(first, run(sampler, gaussian_denoiser, sigmas, n=32, seed=4, **params))


@pytest.mark.parametrize("sampler,params,name", [
    (predictor_corrector, dict(snr=-0.1), "snr"), (predictor_corrector, dict(snr=0.0), "snr"),
    (predictor_corrector, dict(predictor="langevin"), "predictor"),
    (predictor_corrector, dict(corrector_steps=-1), "corrector_steps"),
    (predictor_corrector, dict(alphas=[1.0, 1.0]), "alphas"),
    (ald, dict(steps_per_level=0), "steps_per_level"), (ald, dict(steps_per_level=2.5), "steps_per_level"),
    (ald, dict(eps=-1e-5), "eps"), (ald, dict(eps=1e-3), "eps"), (ald, dict(denoise="yes"), "denoise"),
    (dpmpp3m_sde, dict(eta=-0.5), "eta"), (dpmpp3m_sde, dict(eta=1.5), "eta"), (dpmpp3m_sde, dict(eta="1"), "eta"),
    (heun_churn, dict(s_churn=-1.0), "s_churn"), (heun_churn, dict(s_tmin=2.0, s_tmax=1.0), "s_tmax"),
    (euler_churn, dict(s_noise=-1.0), "s_noise"), (euler_churn, dict(s_tmax=float("nan")), "s_tmax"),
])
def test_bad_input_is_a_one_line_error_naming_the_argument(sampler, params, name):
    with pytest.raises(ValueError, match=rf"^{name} must") as info:
        run(sampler, gaussian_denoiser, grid("karras", 8), n=4, **params)
    assert "\n" not in str(info.value)
    assert name == "alphas" or f"{name}=" in str(info.value)


def host_reads(sampler, levels: int, **params) -> int:
    sigmas = torch.from_numpy(grid("karras", levels))   # a tensor grid: read once, at the edge
    with count_host_reads() as counts:
        run(sampler, gaussian_denoiser, sigmas, n=8, **params)
    return sum(counts.values())


@pytest.mark.parametrize("sampler,params", ALL, ids=lambda v: getattr(v, "__name__", str(v)))
def test_host_reads_do_not_grow_with_the_steps(sampler, params):
    assert host_reads(sampler, 5, **params) == host_reads(sampler, 10, **params) == host_reads(sampler, 20, **params)


PROPOSED = [("ald", ald, "logsnr", {}), ("predictor_corrector", predictor_corrector, "linspace", {}),
            ("reverse_diffusion", reverse_diffusion, "linspace", {}),
            ("euler_maruyama", euler_maruyama, "linspace", {}), ("ancestral_ve", ancestral_ve, "linspace", {}),
            ("heun_churn", heun_churn, "karras", {}), ("euler_churn", euler_churn, "karras", {}),
            ("dpmpp3m_sde", dpmpp3m_sde, "logsnr", {})]


@pytest.mark.parametrize("name,fn,default_grid,params", PROPOSED, ids=[p[0] for p in PROPOSED])
def test_the_proposed_registry_entries_sample_a_vp_process(monkeypatch, name, fn, default_grid, params):
    """dk.sample with each entry proposed for registry.py (registered only inside this test)."""
    monkeypatch.setitem(SAMPLERS, name, Sampler(name, fn, default_grid))
    schedule = dk.Schedule.linear(1000)
    process = dk.GaussianDiffusion(schedule)
    oracle = gaussian_oracle(schedule, [MU], [SD])
    extra = {"s_churn": 10.0} if "churn" in name else {}
    x = dk.sample(process, oracle, (4000, 1), name, 100, seed=0, progress=False, **extra)
    assert abs(float(x.mean()) - MU) < 0.05 and abs(float(x.std()) - SD) < 0.05, (float(x.mean()), float(x.std()))
