"""Denoising score matching on VE, VP, sub-VP and EDM: each weighting against its published form.

Two kinds of check, with the formulas written here from scratch:
* the process's ``loss`` equals the paper's loss in the paper's own variables (NCSN's
  ||sigma s + z||^2, score_sde's likelihood-weighted score loss, Hang et al.'s min-SNR weights on
  the eps / x0 / v target, NVlabs/edm's EDMLoss), replaying the documented draws (t or ln sigma
  first, then the noise) from the same seed;
* the loss of the exact denoiser of N(MU, SD^2) data equals its analytic minimum
  E[lambda(sigma) Var(x_0 | x_hat)] = E[lambda(sigma) SD^2 sigma^2 / (SD^2 + sigma^2)] (Monte Carlo
  against scipy quadrature, within a few standard errors).
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad
from test_continuous_processes import BETA_MAX, BETA_MIN, MU, SD, alpha_bar, exact_network
from test_sync_free_sampling import count_host_reads

from ddpmkit.core.edm import EDM
from ddpmkit.core.score_losses import denoising_loss, min_snr_weight, min_snr_weights
from ddpmkit.core.sde_vp import VP, SubVP
from ddpmkit.core.ve import VE

B = 64


def some_network(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    """A fixed, imperfect 'network' that depends on its input and time."""
    tt = time.double().reshape(-1, *([1] * (x.dim() - 1)))
    return (0.7 * x.double() + 0.2 * torch.sin(0.01 * tt + x.double()) - 0.1).to(x.dtype)


def draws(process, x0: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented draws of ``process.loss``: u ~ U(0, 1) (or z ~ N(0, 1) for EDM) of shape (B,), then eps."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(x0.shape[0], generator=g, dtype=x0.dtype) if isinstance(process, EDM) else \
        torch.rand(x0.shape[0], generator=g, dtype=x0.dtype)
    return first, torch.randn(x0.shape, generator=g, dtype=x0.dtype)


def col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def mean_dims(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).mean(dim=1)


@pytest.fixture
def x0() -> torch.Tensor:
    return MU + SD * torch.randn(B, 3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


# ---------------------------------------------------------------------- the papers' own losses
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_min_snr_on_vp_is_hang_et_al_on_the_target(x0, prediction):
    process = VP(prediction=prediction)
    got = process.loss(some_network, x0, weighting="min_snr", generator=torch.Generator().manual_seed(7))
    u, eps = draws(process, x0, 7)
    t = 1e-5 + (1 - 1e-5) * u
    ab = col(alpha_bar(t), x0)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    out = some_network(x_t, 999.0 * t)
    target = {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[prediction]
    snr = alpha_bar(t) / (1 - alpha_bar(t))
    weight = torch.minimum(snr, torch.full_like(snr, 5.0))
    weight = {"eps": weight / snr, "v": weight / (snr + 1), "x0": weight}[prediction]
    torch.testing.assert_close(got, weight * mean_dims((out - target) ** 2), rtol=1e-9, atol=1e-12)


def test_ncsn_on_vp_eps_is_l_simple(x0):
    process = VP()
    got = process.loss(some_network, x0, generator=torch.Generator().manual_seed(8))
    u, eps = draws(process, x0, 8)
    t = 1e-5 + (1 - 1e-5) * u
    ab = col(alpha_bar(t), x0)
    out = some_network(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, 999.0 * t)
    torch.testing.assert_close(got, mean_dims((out - eps) ** 2), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("scaling", [False, True])
def test_ncsn_on_ve_score_is_song_and_ermons_loss(x0, scaling):
    """||sigma s_theta(x0 + sigma z, sigma) + z||^2 (Song & Ermon 2019, eq. 2 times sigma^2); NCSNv2: s = F / sigma."""
    process = VE(0.01, 50.0, score_scaling=scaling)
    got = process.loss(some_network, x0, weighting="ncsn", generator=torch.Generator().manual_seed(9))
    u, z = draws(process, x0, 9)
    sigma = col(0.01 * 5000.0**u, x0)
    out = some_network(x0 + sigma * z, u)
    score = out / sigma if scaling else out
    torch.testing.assert_close(got, mean_dims((sigma * score + z) ** 2), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["ve", "vp", "subvp"])
def test_likelihood_weighting_is_score_sdes(x0, kind):
    """score_sde's ``likelihood_weighting``: g(t)^2 ||score + z / std||^2 in x, with score_sde's g and std."""
    process = {"ve": VE(0.01, 50.0), "vp": VP(), "subvp": SubVP()}[kind]
    got = process.loss(some_network, x0, weighting="likelihood", generator=torch.Generator().manual_seed(10))
    u, z = draws(process, x0, 10)
    if kind == "ve":
        t = u
        sigma = 0.01 * 5000.0**t
        std, g2 = sigma, sigma**2 * 2 * math.log(5000.0)
        score = some_network(x0 + col(sigma, x0) * z, t)
    else:
        t = 1e-5 + (1 - 1e-5) * u
        ab = alpha_bar(t)
        beta = BETA_MIN + t * (BETA_MAX - BETA_MIN)
        mean = ab.sqrt()
        std, g2 = ((1 - ab).sqrt(), beta) if kind == "vp" else (1 - ab, beta * (1 - ab**2))
        x_t = col(mean, x0) * x0 + col(std, x0) * z
        score = -some_network(x_t, 999.0 * t) / col(std, x0)   # eps network -> score
    want = col(g2, x0).reshape(-1) * mean_dims((score + z / col(std, x0)) ** 2)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_edm_loss_is_nvlabs_edmloss(x0):
    """NVlabs/edm training/loss.py EDMLoss with EDMPrecond, written out."""
    process = EDM()
    got = process.loss(some_network, x0, generator=torch.Generator().manual_seed(11))
    rnd_normal, eps = draws(process, x0, 11)
    sigma = col((rnd_normal * 1.2 - 1.2).exp(), x0)
    sd = 0.5
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    y_n = x0 + eps * sigma
    c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
    c_in, c_noise = 1 / (sd**2 + sigma**2).sqrt(), sigma.log() / 4
    d_yn = c_skip * y_n + c_out * some_network(c_in * y_n, c_noise.reshape(-1))
    torch.testing.assert_close(got, mean_dims(weight * (d_yn - x0) ** 2), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------- diffusers' min-SNR weights
@pytest.mark.parametrize("prediction, diffusers_type", [("eps", "epsilon"), ("v", "v_prediction"), ("x0", "sample")])
def test_min_snr_weights_equal_diffusers(prediction, diffusers_type):
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=diffusers_type)
    timesteps = torch.arange(0, 1000, 7)
    snr = compute_snr(scheduler, timesteps)
    # diffusers' examples/text_to_image/train_text_to_image.py, --snr_gamma 5
    want = torch.stack([snr, 5.0 * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    if scheduler.config.prediction_type == "epsilon":
        want = want / snr
    elif scheduler.config.prediction_type == "v_prediction":
        want = want / (snr + 1)
    torch.testing.assert_close(min_snr_weights(snr, 5.0, prediction), want)
    # on the x0 error all three are min(SNR, 5): the target's error is the x0 error times sqrt(snr),
    # sqrt(snr + 1) or 1, and SNR = 1 / sigma^2
    factor = {"eps": snr, "v": snr + 1, "x0": torch.ones_like(snr)}[prediction]
    torch.testing.assert_close(want * factor, min_snr_weight(snr.rsqrt(), 5.0), rtol=1e-5, atol=0)


# ---------------------------------------------------------------------- the analytic minimum
def _lambda(process, weighting: str, t: float) -> tuple[float, float]:
    """(sigma, lambda on the x0 error) at time t, from the papers' forms."""
    if isinstance(process, VE):
        sigma = 0.01 * 5000.0**t
        g2_over_s2 = 2 * sigma**2 * math.log(5000.0)
    elif isinstance(process, EDM):
        sigma, g2_over_s2 = t, math.nan
    else:
        ab = math.exp(-(BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t**2))
        beta = BETA_MIN + t * (BETA_MAX - BETA_MIN)
        if isinstance(process, VP):
            sigma, g2 = math.sqrt(1 / ab - 1), beta
        else:
            sigma, g2 = (1 - ab) / math.sqrt(ab), beta * (1 - ab**2)
        g2_over_s2 = g2 / ab
    lam = {"ncsn": lambda: 1 / sigma**2, "likelihood": lambda: g2_over_s2 / sigma**4,
           "min_snr": lambda: min(1 / sigma**2, 5.0),
           "edm": lambda: (sigma**2 + 0.25) / (0.5 * sigma) ** 2}[weighting]()
    return sigma, lam


def _expected(process, weighting: str) -> float:
    def term(t: float) -> float:
        sigma, lam = _lambda(process, weighting, t)
        return lam * SD**2 * sigma**2 / (SD**2 + sigma**2)

    if isinstance(process, EDM):   # ln sigma ~ N(-1.2, 1.2^2)
        density = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
        return quad(lambda z: term(math.exp(-1.2 + 1.2 * z)) * density(z), -12, 12, limit=200)[0]
    lo = process.t_min
    return quad(term, lo, 1.0, limit=400, points=[1e-4, 1e-3, 1e-2, 0.1])[0] / (1.0 - lo)


@pytest.mark.parametrize("kind, weighting", [
    ("ve", "ncsn"), ("ve", "likelihood"), ("ve", "min_snr"),
    ("vp", "ncsn"), ("vp", "likelihood"), ("vp", "min_snr"),
    ("subvp", "ncsn"), ("subvp", "likelihood"), ("subvp", "min_snr"),
    ("edm", "edm"), ("edm", "ncsn"), ("edm", "min_snr"),
])
def test_the_exact_denoiser_reaches_the_analytic_minimum(kind, weighting):
    # t_min = 1e-3: the likelihood weight of VP / sub-VP grows as 1 / t near 0, and the Monte Carlo
    # variance as 1 / t_min
    process = {"ve": VE(0.01, 50.0), "vp": VP(prediction="v", t_min=1e-3), "subvp": SubVP(t_min=1e-3),
               "edm": EDM()}[kind]
    n = 100_000
    x0 = MU + SD * torch.randn(n, 4, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    losses = process.loss(exact_network(process), x0, weighting=weighting, generator=torch.Generator().manual_seed(13))
    assert losses.shape == (n,) and losses.dtype == torch.float64
    mean, se = float(losses.mean()), float(losses.std()) / math.sqrt(n)
    want = _expected(process, weighting)
    assert abs(mean - want) < 4 * se, (mean, want, se)
    assert se < 0.05 * want     # the check has teeth
    # a slightly wrong denoiser does measurably worse
    worse = process.loss(lambda x, t: 1.05 * exact_network(process)(x, t), x0, weighting=weighting,
                         generator=torch.Generator().manual_seed(13))
    assert float(worse.mean()) > mean


def test_denoising_loss_at_fixed_sigma_is_the_posterior_variance():
    n, sigma = 200_000, 0.8
    x0 = MU + SD * torch.randn(n, 1, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    noise = torch.randn(n, 1, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    exact = lambda x_hat, s: MU + SD**2 / (SD**2 + col(s, x_hat) ** 2) * (x_hat - MU)  # noqa: E731
    losses = denoising_loss(exact, x0, torch.full((n,), sigma, dtype=torch.float64), noise,
                            torch.full((n,), 2.0, dtype=torch.float64))
    want = 2.0 * SD**2 * sigma**2 / (SD**2 + sigma**2)
    assert abs(float(losses.mean()) - want) < 4 * float(losses.std()) / math.sqrt(n)


# ---------------------------------------------------------------------- dtypes, devices, bad input
@pytest.mark.parametrize("make", [VE, VP, SubVP, EDM], ids=["ve", "vp", "subvp", "edm"])
def test_loss_trains_a_network_without_host_reads(make, device, sync_guard):
    process = make()
    net = torch.nn.Linear(2, 2).to(device)
    model = lambda x, t: net(x.float()).to(x.dtype) * (1 + 0.01 * t[:, None]).to(x.dtype)  # noqa: E731
    x0 = torch.randn(16, 2, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    # on every device the host reads are counted (Tensor.item, bool, float, .cpu(), ... patched): none;
    # on CUDA the sync guard also fails on any synchronising call the patch cannot see
    with sync_guard(), count_host_reads() as reads:
        loss = process.loss(model, x0, generator=g).mean()
        loss.backward()
        D = process.denoiser(model)
        D(x0, 1.0)
        D(x0, torch.full((16,), 0.5, device=device))
    assert sum(reads.values()) == 0, reads
    assert net.weight.grad is not None and bool(net.weight.grad.abs().sum() > 0)
    for weighting in process.weightings:
        losses = process.loss(model, x0.to(torch.bfloat16), weighting=weighting, generator=g)
        assert losses.shape == (16,) and losses.dtype == torch.float32 and bool(torch.isfinite(losses).all())


@pytest.mark.parametrize("build, name", [
    (lambda: VE().loss(some_network, torch.zeros(2, 3), weighting="edm"), "weighting"),
    (lambda: VP().loss(some_network, torch.zeros(2, 3), weighting="simple"), "weighting"),
    (lambda: EDM().loss(some_network, torch.zeros(2, 3), weighting="likelihood"), "weighting"),
    (lambda: VP().loss(some_network, torch.zeros(2, 3), weighting="min_snr", snr_gamma=0.0), "snr_gamma"),
    (lambda: VP().loss(some_network, torch.zeros(2, 3, dtype=torch.long)), "x0"),
    (lambda: VP().loss(some_network, torch.zeros(3)), "x0"),
    (lambda: min_snr_weights(torch.ones(3), 5.0, "score"), "prediction"),
])
def test_bad_loss_arguments_are_one_line_errors(build, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b") as info:
        build()
    assert "\n" not in str(info.value)
