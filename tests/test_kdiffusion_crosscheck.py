"""ddpmkit's samplers against the peers, on the same denoiser, noise and grid (a test extra).

k-diffusion (``pip install --no-deps k-diffusion==0.1.1.post1 torchsde trampoline``): its
``sampling.py`` is loaded without its package (tests/kdiffusion_loader.py); the module is skipped
when it is not installed. diffusers' ``ScoreSdeVeScheduler`` (predictor ``step_pred``, corrector
``step_correct``) is checked against the VE reverse-diffusion predictor and ddpmkit's Langevin
corrector, step by step and over a whole predictor-corrector chain.

The denoiser is the exact one of x_0 ~ N(mu, diag(s^2)): D = mu + s^2 / (s^2 + sigma^2)(x - mu),
taking a Python sigma (ddpmkit) or k-diffusion's per-example tensor ``sigma * s_in``. Noise is
drawn in the same order from generators with the same seed: through k-diffusion's
``noise_sampler`` argument, or by patching ``torch.randn_like`` where a sampler has none.
Everything runs in float64; the samples must agree to 1e-5.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdiffusion_loader import kdiffusion_dir, load_sampling

import ddpmkit.sampling as dks
from ddpmkit.sampling import SampleOptions
from ddpmkit.sampling.edm import dpmpp3m_sde, euler_churn, heun_churn
from ddpmkit.sampling.score_sde import predictor_corrector, reverse_diffusion_step

MU = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
SD = torch.tensor([0.5, 0.8, 0.2], dtype=torch.float64)
BATCH, SEED, TOL = 64, 7, 1e-5


def denoiser(x: torch.Tensor, sigma: float | torch.Tensor, **cond) -> torch.Tensor:
    """The exact Gaussian denoiser, for a Python sigma or a (B,) tensor of them."""
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
    return MU + SD**2 / (SD**2 + sigma**2) * (x - MU)


GRIDS = {
    "karras": np.append(dks.karras_sigmas(0.002, 80.0, 12), 0.0),
    "geometric": np.append(np.geomspace(50.0, 0.01, 15), 0.0),
}


def start(grid: np.ndarray) -> torch.Tensor:
    return grid[0] * torch.randn(BATCH, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def opts() -> SampleOptions:
    return SampleOptions(generator=torch.Generator().manual_seed(SEED), progress=False)


def noise_sampler(like: torch.Tensor):
    """k-diffusion's noise_sampler drawing what ``opts().randn`` draws, in the same order."""
    generator = torch.Generator().manual_seed(SEED)
    return lambda sigma, sigma_next: torch.randn(like.shape, generator=generator, dtype=like.dtype)


def assert_agree(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    diff = float((ours - theirs).abs().max())
    assert torch.isfinite(ours).all() and diff <= TOL * max(1.0, float(theirs.abs().max())), diff
    return diff


# ---------------------------------------------------------------------------------- k-diffusion
@pytest.fixture(scope="module")
def K():
    if kdiffusion_dir() is None:
        pytest.skip("k-diffusion is not installed: pip install --no-deps k-diffusion==0.1.1.post1 torchsde trampoline")
    try:
        return load_sampling()
    except ImportError as exc:
        pytest.skip(f"k-diffusion's sampling.py cannot be loaded: {exc}")


@pytest.fixture
def patched_randn_like(monkeypatch):
    """torch.randn_like drawing from a generator seeded like ``opts()`` (for samplers with no noise_sampler)."""
    generator = torch.Generator().manual_seed(SEED)
    monkeypatch.setattr(torch, "randn_like", lambda t, **kw: torch.randn(t.shape, generator=generator, dtype=t.dtype))


@pytest.mark.parametrize("steps", [1, 2, 10, 50])
@pytest.mark.parametrize("rho", [7.0, 3.0])
def test_karras_grid_matches_get_sigmas_karras(K, steps, rho):
    ours = np.append(dks.karras_sigmas(0.002, 80.0, steps, rho), 0.0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)   # k-diffusion's ramp is in the default dtype
    try:
        theirs = K.get_sigmas_karras(steps, 0.002, 80.0, rho).numpy()
    finally:
        torch.set_default_dtype(previous)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0.0)
    theirs32 = K.get_sigmas_karras(steps, 0.002, 80.0, rho).double().numpy()   # float32 as shipped
    np.testing.assert_allclose(ours, theirs32, rtol=1e-5, atol=0.0)


DETERMINISTIC = [("euler", dks.euler, "sample_euler"), ("heun", dks.heun, "sample_heun"),
                 ("dpmpp2m", dks.dpmpp2m, "sample_dpmpp_2m")]


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("name,ours,theirs", DETERMINISTIC, ids=[d[0] for d in DETERMINISTIC])
def test_deterministic_samplers_match_kdiffusion(K, grid, name, ours, theirs):
    sigmas = GRIDS[grid]
    x = start(sigmas)
    assert_agree(ours(denoiser, x, sigmas, opts()), getattr(K, theirs)(denoiser, x, torch.from_numpy(sigmas), disable=True))


NOISY = [("euler_ancestral", dks.euler_ancestral, "sample_euler_ancestral", {"eta": 1.0}),
         ("euler_ancestral_eta", dks.euler_ancestral, "sample_euler_ancestral", {"eta": 0.5}),
         ("dpmpp2m_sde", dks.dpmpp2m_sde, "sample_dpmpp_2m_sde", {"eta": 1.0}),
         ("dpmpp2m_sde_heun", dks.dpmpp2m_sde, "sample_dpmpp_2m_sde", {"eta": 0.7, "solver": "heun"}),
         ("dpmpp3m_sde", dpmpp3m_sde, "sample_dpmpp_3m_sde", {"eta": 1.0}),
         ("dpmpp3m_sde_eta", dpmpp3m_sde, "sample_dpmpp_3m_sde", {"eta": 0.5}),
         ("dpmpp3m_ode", dpmpp3m_sde, "sample_dpmpp_3m_sde", {"eta": 0.0})]


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("name,ours,theirs,params", NOISY, ids=[d[0] for d in NOISY])
def test_stochastic_samplers_match_kdiffusion_with_the_same_noise(K, grid, name, ours, theirs, params):
    sigmas = GRIDS[grid]
    x = start(sigmas)
    theirs_params = {("solver_type" if k == "solver" else k): v for k, v in params.items()}
    expected = getattr(K, theirs)(denoiser, x, torch.from_numpy(sigmas), disable=True,
                                  noise_sampler=noise_sampler(x), **theirs_params)
    assert_agree(ours(denoiser, x, sigmas, opts(), **params), expected)


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("name,ours,theirs", [("heun_churn", heun_churn, "sample_heun"),
                                              ("euler_churn", euler_churn, "sample_euler")])
@pytest.mark.parametrize("s_noise", [1.0, 1.007])
def test_churn_matches_kdiffusion(K, patched_randn_like, grid, name, ours, theirs, s_noise):
    """Churn on every step (S_tmin = 0, S_tmax = inf): k-diffusion draws one randn_like per step,
    as we do, so the same generator gives the same noise."""
    sigmas = GRIDS[grid]
    x = start(sigmas)
    params = dict(s_churn=5.0, s_noise=s_noise)
    expected = getattr(K, theirs)(denoiser, x, torch.from_numpy(sigmas), disable=True, **params)
    assert_agree(ours(denoiser, x, sigmas, opts(), **params), expected)


class FixedNoise(SampleOptions):
    """Options whose every draw is the same tensor (so the number of draws does not matter)."""

    def randn(self, like: torch.Tensor) -> torch.Tensor:
        return torch.linspace(-1.5, 1.5, like.numel(), dtype=like.dtype).reshape(like.shape)


@pytest.mark.parametrize("ours,theirs", [(heun_churn, "sample_heun"), (euler_churn, "sample_euler")])
def test_churn_window_matches_kdiffusion(K, monkeypatch, ours, theirs):
    """S_tmin / S_tmax select the churned levels as k-diffusion does (it draws on every step,
    we only where gamma > 0: a constant draw makes the two comparable)."""
    sigmas = GRIDS["karras"]
    x = start(sigmas)
    fixed = FixedNoise(progress=False)
    monkeypatch.setattr(torch, "randn_like", lambda t, **kw: fixed.randn(t))
    params = dict(s_churn=20.0, s_tmin=0.05, s_tmax=10.0, s_noise=1.003)
    expected = getattr(K, theirs)(denoiser, x, torch.from_numpy(sigmas), disable=True, **params)
    assert_agree(ours(denoiser, x, sigmas, fixed, **params), expected)
    plain = getattr(K, theirs)(denoiser, x, torch.from_numpy(sigmas), disable=True)
    assert float((expected - plain).abs().max()) > 1e-3   # the churn did something


# ---------------------------------------------------------------------------------- diffusers
@pytest.fixture
def sde_ve(monkeypatch):
    """diffusers' ScoreSdeVeScheduler in float64, its noise drawn in float64 from the generator passed."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.schedulers import scheduling_sde_ve

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    monkeypatch.setattr(scheduling_sde_ve, "randn_tensor", randn_tensor)
    steps, sigma_min, sigma_max = 20, 0.01, 50.0
    scheduler = diffusers.ScoreSdeVeScheduler(num_train_timesteps=steps, snr=0.16, sigma_min=sigma_min, sigma_max=sigma_max)
    scheduler.set_timesteps(steps)
    scheduler.set_sigmas(steps)
    scheduler.discrete_sigmas = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), steps,
                                                         dtype=torch.float64))
    return scheduler


def score(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return (denoiser(x, sigma) - x) / sigma**2


def test_sde_ve_step_pred_is_the_reverse_diffusion_predictor(sde_ve):
    levels = sde_ve.discrete_sigmas.numpy()
    x = start(np.array([levels[-1]]))
    for index in (len(levels) - 1, 7, 0):
        t = (index + 0.5) / (len(levels) - 1)   # diffusers' level index is int(t (n - 1))
        sigma, sigma_next = float(levels[index]), (float(levels[index - 1]) if index > 0 else 0.0)
        out = sde_ve.step_pred(score(x, sigma), t, x, generator=torch.Generator().manual_seed(SEED))
        ours, denoised = reverse_diffusion_step(denoiser, x, sigma, sigma_next, opts())
        if sigma_next > 0.0:
            assert_agree(ours, out.prev_sample)
        assert_agree(denoised if sigma_next == 0.0 else ours - math.sqrt(sigma**2 - sigma_next**2) * opts().randn(x),
                     out.prev_sample_mean)


def test_sde_ve_step_correct_is_the_langevin_corrector(sde_ve):
    x = start(np.array([3.0]))
    for sigma in (3.0, 0.2):
        out = sde_ve.step_correct(score(x, sigma), x, generator=torch.Generator().manual_seed(SEED))
        assert_agree(dks.langevin_step(denoiser, x, sigma, 0.16, 1.0, opts()), out.prev_sample)


def test_sde_ve_pc_chain_matches_predictor_corrector(sde_ve):
    """diffusers' ScoreSdeVePipeline loop (corrector, then predictor, at each level; the last
    predictor's mean returned) is one corrector step at the top followed by ours."""
    levels = sde_ve.discrete_sigmas.numpy()
    n = len(levels)
    x = start(levels[::-1])
    generator = torch.Generator().manual_seed(SEED)
    after_first_corrector = None
    for i, t in enumerate(sde_ve.timesteps):
        index = int(t * (n - 1))
        assert index == n - 1 - i   # diffusers' own map from time to level
        sigma = float(levels[index])
        x = sde_ve.step_correct(score(x, sigma), x, generator=generator).prev_sample
        after_first_corrector = x if i == 0 else after_first_corrector
        out = sde_ve.step_pred(score(x, sigma), t, x, generator=generator)
        x, x_mean = out.prev_sample, out.prev_sample_mean
    ours_opts = opts()
    ours_opts.randn(after_first_corrector)   # the draw of diffusers' first corrector step
    grid = np.append(levels[::-1], 0.0)
    ours = predictor_corrector(denoiser, after_first_corrector, grid, ours_opts, "reverse_diffusion", snr=0.16)
    assert_agree(ours, x_mean)
