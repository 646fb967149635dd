"""VE, VP, sub-VP and EDM on the noise-level contract, against closed forms written here from scratch.

For x_0 ~ N(MU, SD^2) and x_hat = x_0 + sigma eps the exact denoiser is
E[x_0 | x_hat] = MU + SD^2 / (SD^2 + sigma^2) (x_hat - MU). The "networks" below return what a
perfect network trained on each process would output, computed from the published forms
(Song et al. 2021 eq. 9/11/12 and 30-33; NCSNv2; EDM Table 1), never with ddpmkit's formulas.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ddpmkit.core.edm import EDM
from ddpmkit.core.sde_vp import VP, SubVP
from ddpmkit.core.ve import VE, NCSNSigmas, ncsn_gamma, ncsn_sigmas

MU, SD = 0.3, 0.5
BETA_MIN, BETA_MAX = 0.1, 20.0


def posterior_mean(x_hat: torch.Tensor, sigma) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, *([1] * (x_hat.dim() - 1)))
    return MU + SD**2 / (SD**2 + sigma**2) * (x_hat.double() - MU)


def alpha_bar(t):
    """Song et al. 2021 eq. 33: exp(-int_0^t beta) for the linear beta."""
    return torch.exp(-(BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t**2))


def exact_network(process) -> callable:
    """What a perfect network outputs for ``process`` on N(MU, SD^2) data, from scratch."""

    def net(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        assert time.shape == (x.shape[0],)
        x = x.double()
        time = time.double().reshape(-1, *([1] * (x.dim() - 1)))
        if isinstance(process, VE):   # x = x_0 + sigma eps, sigma = sigma_min (sigma_max / sigma_min)^t
            sigma = process.sigma_min * (process.sigma_max / process.sigma_min) ** (time / process.time_scale)
            d = posterior_mean(x, sigma)
            score = -(x - MU) / (SD**2 + sigma**2)          # grad log N(x; MU, SD^2 + sigma^2)
            out = {"score": sigma * score if process.score_scaling else score,
                   "eps": (x - d) / sigma, "x0": d}[process.prediction]
        elif isinstance(process, (VP, SubVP)):
            ab = alpha_bar(time / process.time_scale)
            mean_coef = ab.sqrt()
            std = (1 - ab).sqrt() if isinstance(process, VP) else 1 - ab    # eq. 33: sub-VP std 1 - alpha_bar
            sigma = std / mean_coef
            d = posterior_mean(x / mean_coef, sigma)
            eps = (x - mean_coef * d) / std
            out = {"eps": eps, "x0": d, "v": mean_coef * eps - (1 - ab).sqrt() * d}[process.prediction]
        else:   # EDM Table 1: c_noise = ln(sigma) / 4
            sigma, sd = torch.exp(4 * time), process.sigma_data
            x_hat = x * torch.sqrt(sigma**2 + sd**2)
            c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / torch.sqrt(sigma**2 + sd**2)
            out = (posterior_mean(x_hat, sigma) - c_skip * x_hat) / c_out
        return out

    return net


CASES = [
    pytest.param(lambda: VE(), id="ve-score"),
    pytest.param(lambda: VE(prediction="score", score_scaling=True, time_scale=999.0), id="ve-score-scaled"),
    pytest.param(lambda: VE(prediction="eps"), id="ve-eps"),
    pytest.param(lambda: VE(sigma_min=0.02, sigma_max=30.0, prediction="x0"), id="ve-x0"),
    pytest.param(lambda: VP(), id="vp-eps"),
    pytest.param(lambda: VP(prediction="x0"), id="vp-x0"),
    pytest.param(lambda: VP(prediction="v", time_scale=1.0), id="vp-v"),
    pytest.param(lambda: SubVP(), id="subvp-eps"),
    pytest.param(lambda: SubVP(prediction="x0"), id="subvp-x0"),
    pytest.param(lambda: EDM(), id="edm"),
    pytest.param(lambda: EDM(sigma_data=1.3, sigma_min=0.01, sigma_max=20.0), id="edm-sd1.3"),
]


@pytest.mark.parametrize("make", CASES)
def test_the_denoiser_of_the_exact_network_is_the_posterior_mean(make):
    process = make()
    D = process.denoiser(exact_network(process))
    x_hat = 3.0 * torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = process.t_min + (process.t_max - process.t_min) * np.array([0.0, 0.1, 0.45, 0.8, 1.0])
    for sigma in process.sigma(ts):
        want = posterior_mean(x_hat, sigma)
        torch.testing.assert_close(D(x_hat, float(sigma)), want, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(D(x_hat, torch.tensor(sigma, dtype=torch.float64)), want, rtol=1e-9, atol=1e-9)
    per_example = torch.from_numpy(process.sigma(np.linspace(process.t_min, process.t_max, 6)))
    torch.testing.assert_close(D(x_hat, per_example), posterior_mean(x_hat, per_example), rtol=1e-9, atol=1e-9)
    # float32 data: the device path in float32 agrees with the host path (moderate sigma)
    x32, s32 = x_hat.float(), torch.tensor([0.05, 0.3, 1.0, 2.0, 5.0, 9.0])
    torch.testing.assert_close(D(x32, s32).double(), posterior_mean(x_hat, s32), rtol=2e-5, atol=2e-5)
    for k in range(6):
        torch.testing.assert_close(D(x32[k:k + 1], float(s32[k])), D(x32, s32)[k:k + 1], rtol=2e-5, atol=2e-5)


def test_sigma_and_scale_are_the_published_forms():
    t = np.array([1e-5, 0.01, 0.3, 0.77, 1.0])
    ab = np.exp(-(BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t**2))
    ve = VE(0.01, 50.0)
    np.testing.assert_allclose(ve.sigma(t), 0.01 * (50.0 / 0.01) ** t, rtol=1e-13)
    np.testing.assert_allclose(ve.scale(t), 1.0)
    np.testing.assert_allclose(VP().sigma(t), np.sqrt(1 / ab - 1), rtol=1e-9)
    np.testing.assert_allclose(VP().scale(t), np.sqrt(ab), rtol=1e-13)
    np.testing.assert_allclose(SubVP().sigma(t), (1 - ab) / np.sqrt(ab), rtol=1e-9)
    np.testing.assert_allclose(SubVP().scale(t) * SubVP().sigma(t), 1 - ab, rtol=1e-9)   # std 1 - alpha_bar
    np.testing.assert_allclose(EDM().sigma([0.002, 1.0, 80.0]), [0.002, 1.0, 80.0])
    assert (ve.sigma_min, ve.sigma_max, ve.prior_std, ve.t_min, ve.t_max) == (0.01, 50.0, 50.0, 0.0, 1.0)
    assert VP().t_min == 1e-5 and VP().prior_std == SubVP().prior_std == 1.0
    assert VP().sigma_max == pytest.approx(math.sqrt(math.expm1(0.1 + 19.9 / 2)), rel=1e-12)
    edm = EDM()
    assert (edm.sigma_min, edm.sigma_max, edm.prior_std) == (0.002, 80.0, 80.0)


@pytest.mark.parametrize("make", CASES[::2] + CASES[-1:])
def test_time_of_sigma_round_trips_on_the_host_and_the_device(make):
    process = make()
    t = np.concatenate([[process.t_min], np.linspace(process.t_min, process.t_max, 33)[1:]])
    sigma = process.sigma(t)
    np.testing.assert_allclose(process.t_of_sigma(sigma), t, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(process.t_of_sigma_on(torch.from_numpy(sigma)).numpy(), t, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(process.sigma_on(torch.from_numpy(t)).numpy(), sigma, rtol=1e-12)
    np.testing.assert_allclose(process.scale_on(torch.from_numpy(t)).numpy(), process.scale(t), rtol=1e-12)
    on32 = process.t_of_sigma_on(torch.from_numpy(sigma).float())
    assert on32.dtype == torch.float32
    np.testing.assert_allclose(on32.double().numpy(), t, rtol=2e-5, atol=1e-9)
    assert process.sigma_on(torch.from_numpy(t).float()).dtype == torch.float32


@pytest.mark.parametrize("make", [VE, VP, SubVP, EDM], ids=["ve", "vp", "subvp", "edm"])
def test_dsigma2_dt_is_g2_over_s2(make):
    """d sigma^2 / dt against a central difference of sigma(t)^2, and against Song et al.'s
    g(t)^2 / s(t)^2 (VE: d[sigma^2]/dt; VP: beta; sub-VP: beta (1 - exp(-2 int beta)), eq. 30-33)."""
    process = make()
    t = process.t_min + (process.t_max - process.t_min) * np.array([0.05, 0.3, 0.6, 0.9])
    h = 1e-6 * (process.t_max - process.t_min)
    fd = (process.sigma(t + h) ** 2 - process.sigma(t - h) ** 2) / (2 * h)
    np.testing.assert_allclose(process.dsigma2_dt(t), fd, rtol=1e-6)
    beta = BETA_MIN + (BETA_MAX - BETA_MIN) * t
    ab = np.exp(-(BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t**2))
    g2 = {VP: beta, SubVP: beta * (1 - ab**2)}.get(type(process))
    if g2 is not None:
        np.testing.assert_allclose(process.dsigma2_dt(t) * process.scale(t) ** 2, g2, rtol=1e-10)
    np.testing.assert_allclose(process.dsigma2_dt_on(torch.from_numpy(t)).numpy(), process.dsigma2_dt(t), rtol=1e-12)


@pytest.mark.parametrize("make", [VE, VP, SubVP, EDM], ids=["ve", "vp", "subvp", "edm"])
def test_marginal_moments_by_monte_carlo(make):
    """x = s(t) (x_0 + sigma(t) eps) for a fixed x_0: mean s x_0 and std s sigma, which is the
    published std: VE sigma(t), VP sqrt(1 - alpha_bar), sub-VP 1 - alpha_bar (Song et al. eq. 33)."""
    process, x0, n = make(), 0.7, 200_000
    eps = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for frac in (0.02, 0.3, 0.9):
        t = process.t_min + frac * (process.t_max - process.t_min)
        s, sigma = float(process.scale(t)), float(process.sigma(t))
        x = s * (x0 + sigma * eps)
        if isinstance(process, (VP, SubVP)):
            ab = math.exp(-(BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t**2))
            want_mean, want_std = math.sqrt(ab) * x0, (math.sqrt(1 - ab) if isinstance(process, VP) else 1 - ab)
        else:
            want_mean, want_std = x0, t if isinstance(process, EDM) else 0.01 * 5000.0**t
        assert abs(float(x.mean()) - want_mean) < 4 * want_std / math.sqrt(n)
        assert abs(float(x.std()) - want_std) < 4 * want_std / math.sqrt(2 * n)


@pytest.mark.parametrize("make", [lambda: VE(0.01, 7.0), VP, SubVP, lambda: EDM(sigma_max=3.0)],
                         ids=["ve", "vp", "subvp", "edm"])
def test_prior_logp_is_the_normal_log_density(make):
    process = make()
    x = 2.0 * torch.randn(5, 3, 2, generator=torch.Generator().manual_seed(2))
    want = norm.logpdf(x.double().numpy(), 0.0, process.prior_std).reshape(5, -1).sum(axis=1)
    got = process.prior_logp(x)
    assert got.dtype == torch.float64 and got.shape == (5,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("make", [VE, VP, SubVP, EDM], ids=["ve", "vp", "subvp", "edm"])
def test_the_network_gets_a_float32_time_per_example_whatever_the_data_dtype(make):
    seen = []

    def spy(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    process = make()
    D = process.denoiser(spy)
    x = torch.zeros(3, 2, dtype=torch.bfloat16)
    sigma = float(process.sigma(process.t_min + 0.37 * (process.t_max - process.t_min)))
    assert D(x, sigma).dtype == torch.bfloat16
    D(x, torch.tensor(sigma, dtype=torch.float64))
    D(x.float(), torch.full((3,), sigma, dtype=torch.float64))
    for t in seen:
        assert t.dtype == torch.float32 and t.shape == (3,)
        torch.testing.assert_close(t, seen[0])
    with pytest.raises(ValueError, match="sigma"):
        D(x, torch.ones(2))
    with pytest.raises(ValueError, match="model output"):
        process.denoiser(lambda x, t: x[:, :1])(x, sigma)


def test_clip_x0_clips_the_estimate():
    D = VE(prediction="x0").denoiser(lambda x, t: 3 * x, clip_x0=True)
    x = torch.tensor([[-2.0, 0.1, 2.0]])
    torch.testing.assert_close(D(x, 1.0), torch.tensor([[-1.0, 0.3, 1.0]]))


@pytest.mark.parametrize("make", CASES)
def test_repr_rebuilds_the_process(make):
    process = make()
    again = eval(repr(process), {"VE": VE, "VP": VP, "SubVP": SubVP, "EDM": EDM})
    assert repr(again) == repr(process)


@pytest.mark.parametrize("build, name", [
    (lambda: VE(sigma_min=1.0, sigma_max=1.0), "sigma_min"),
    (lambda: VE(sigma_min=5.0, sigma_max=1.0), "sigma_min"),
    (lambda: VE(sigma_min=-1.0), "sigma_min"),
    (lambda: VE(sigma_max=math.inf), "sigma_max"),
    (lambda: VE(prediction="v"), "prediction"),
    (lambda: VE(prediction="eps", score_scaling=True), "score_scaling"),
    (lambda: VP(beta_min=20.0, beta_max=0.1), "beta_min"),
    (lambda: VP(beta_min=-0.1), "beta_min"),
    (lambda: VP(prediction="score"), "prediction"),
    (lambda: VP(t_min=1.5), "t_min"),
    (lambda: SubVP(prediction="v"), "prediction"),
    (lambda: EDM(sigma_min=80.0, sigma_max=0.002), "sigma_min"),
    (lambda: EDM(sigma_data=0.0), "sigma_data"),
    (lambda: EDM(prediction="eps"), "prediction"),
    (lambda: VP().sigma(1.5), "t"),
    (lambda: VE().sigma(-0.5), "t"),
    (lambda: VE().t_of_sigma(-1.0), "sigma"),
    (lambda: VP().prior_logp([1.0]), "x"),
])
def test_bad_arguments_are_one_line_errors_naming_them(build, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b") as info:
        build()
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------- NCSNv2 techniques 1-2
def test_ncsn_sigmas_follow_techniques_one_and_two(capsys):
    x = torch.randn(40, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    flat = x.reshape(40, -1).double().numpy()
    farthest = max(np.linalg.norm(flat[i] - flat[j]) for i in range(40) for j in range(i + 1, 40))
    choice = ncsn_sigmas(x, sigma_min=0.01)
    assert choice.sigma_max == pytest.approx(farthest, rel=1e-12) and choice.dim == 48
    g, root = choice.gamma, math.sqrt(2 * 48)
    assert g > 1 and norm.cdf(root * (g - 1) + 3 * g) - norm.cdf(root * (g - 1) - 3 * g) == pytest.approx(0.5, abs=1e-10)
    ratio = (farthest / 0.01) ** (1 / (choice.levels - 1))
    assert ratio <= g < (farthest / 0.01) ** (1 / (choice.levels - 2))    # the fewest levels with ratio <= gamma
    np.testing.assert_allclose(choice.sigmas()[[0, -1]], [farthest, 0.01])
    process = VE.from_data(x)
    assert process.sigma_max == choice.sigma_max and process.score_scaling and process.ncsn == choice
    printed = capsys.readouterr().out
    assert f"{choice.sigma_max:.4g}" in printed and f"L = {choice.levels}" in printed
    assert 1.03 < ncsn_gamma(3072) < 1.05   # CIFAR-10: NCSNv2 used L = 232 from 50 to 0.01, ratio 1.0376


def test_ncsn_sigmas_without_a_ratio_for_low_dimensions():
    choice = ncsn_sigmas(np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]]))
    assert choice.sigma_max == pytest.approx(5.0) and choice.gamma is None and choice.levels is None
    assert "no root" in str(choice) and isinstance(choice, NCSNSigmas)
    with pytest.raises(ValueError, match="x_train"):
        ncsn_sigmas(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="sigma_min"):
        ncsn_sigmas(np.array([[0.0], [0.001]]), sigma_min=0.01)
