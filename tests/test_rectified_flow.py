"""dk.RectifiedFlow against closed forms written here from scratch (Liu et al. 2022; SD3 for the times).

For x_0 ~ N(MU, SD^2) and x_t = (1 - t) x_0 + t eps, (x_t, eps - x_0) are jointly Gaussian, so the
exact velocity is E[eps - x_0 | x_t] = -MU + (t - (1 - t) SD^2) / V_t (x_t - (1 - t) MU) with
V_t = (1 - t)^2 SD^2 + t^2 (and likewise for eps and x_0): the "networks" below are these, never
ddpmkit's formulas. The probability-flow ODE moves the quantile z of the prior along
x_t = (1 - t) MU + sqrt(V_t) z, a curved path unless SD = 1.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ddpmkit as dk
from ddpmkit.core.flow import flow_sigmas
from ddpmkit.sampling import SampleOptions
from ddpmkit.sampling.plan import plan_sampling
from ddpmkit.training.config import load_config

MU, SD = 0.3, 0.5


def exact_network(process: dk.RectifiedFlow):
    """What a perfect network outputs (v, eps or x0) given x_t and time_scale * t."""

    def net(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        assert time.shape == (x.shape[0],)
        t = (time.double() / process.time_scale).reshape(-1, *([1] * (x.dim() - 1)))
        x = x.double()
        var = (1 - t) ** 2 * SD**2 + t**2
        centred = x - (1 - t) * MU
        return {"v": -MU + (t - (1 - t) * SD**2) / var * centred,
                "eps": t / var * centred,
                "x0": MU + (1 - t) * SD**2 / var * centred}[process.prediction]

    return net


def path(t: float, z: torch.Tensor) -> torch.Tensor:
    """The exact ODE path of the quantile z (Gaussian data): (1 - t) MU + sqrt((1 - t)^2 SD^2 + t^2) z."""
    return (1 - t) * MU + math.sqrt((1 - t) ** 2 * SD**2 + t**2) * z


# ---------------------------------------------------------------------- the contract
def test_the_contract_is_the_straight_path():
    process = dk.RectifiedFlow()
    t = np.linspace(process.t_min, process.t_max, 7)
    s, sigma = process.scale(t), process.sigma(t)
    x0, eps = 0.7, -1.3
    np.testing.assert_allclose(s * (x0 + sigma * eps), (1 - t) * x0 + t * eps, rtol=1e-12)   # float64 rounding
    np.testing.assert_allclose(process.t_of_sigma(sigma), t, rtol=1e-12)
    h = 1e-6   # central difference of sigma^2: O(h^2) truncation, relative 1e-6 is ample
    fd = (process.sigma(t[1:-1] + h) ** 2 - process.sigma(t[1:-1] - h) ** 2) / (2 * h)
    np.testing.assert_allclose(process.dsigma2_dt(t[1:-1]), fd, rtol=1e-6)
    torch.testing.assert_close(process.sigma_on(torch.tensor(t)), torch.tensor(sigma), rtol=1e-12, atol=0)
    assert process.prior_std == process.t_max and process.sigma_max == pytest.approx(999.0, rel=1e-12)


@pytest.mark.parametrize("prediction", ["v", "eps", "x0"])
def test_the_denoiser_of_the_exact_network_is_the_posterior_mean(prediction):
    process = dk.RectifiedFlow(prediction=prediction)
    D = process.denoiser(exact_network(process))
    x_hat = torch.linspace(-3, 3, 9, dtype=torch.float64).reshape(-1, 1)
    for sigma in (0.01, 0.5, 1.0, 20.0, 900.0):
        expected = MU + SD**2 / (SD**2 + sigma**2) * (x_hat - MU)
        # float64 throughout; at sigma = 900 c_skip x_hat and c_out F cancel to ~1e-13
        torch.testing.assert_close(D(x_hat, sigma), expected, rtol=0, atol=1e-10)
        torch.testing.assert_close(D(x_hat, torch.full((9,), sigma, dtype=torch.float64)), expected, rtol=0, atol=1e-10)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="t_max"):
        dk.RectifiedFlow(t_max=1.0)
    with pytest.raises(ValueError, match="time_sampling"):
        dk.RectifiedFlow(time_sampling="cosine")
    with pytest.raises(ValueError, match="prediction"):
        dk.RectifiedFlow(prediction="score")


# ---------------------------------------------------------------------- the flow-matching loss
def some_network(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear 'network' (the loss identity must hold for any network)."""
    return torch.sin(3 * x) + 0.001 * time.reshape(-1, *([1] * (x.dim() - 1))) * x


@pytest.mark.parametrize("sampling", ["uniform", "logit_normal"])
def test_the_loss_is_the_conditional_flow_matching_loss(sampling):
    """process.loss (weighted x_0 error through the denoiser) equals ||F(x_t, t) - (eps - x_0)||^2 with
    the documented draws: u ~ U(0, 1) then t = t_min + (t_max - t_min) u, or z ~ N(0, 1) then
    t = clip(sigmoid(p_mean + p_std z)) (SD3's logit-normal); then eps."""
    process = dk.RectifiedFlow(time_sampling=sampling, p_mean=0.3, p_std=1.2)
    x0 = torch.randn(64, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = process.loss(some_network, x0, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    if sampling == "uniform":
        t = process.t_min + (process.t_max - process.t_min) * torch.rand(64, generator=g, dtype=torch.float64)
    else:
        t = torch.sigmoid(0.3 + 1.2 * torch.randn(64, generator=g, dtype=torch.float64))
        t = t.clamp(process.t_min, process.t_max)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    tc = t.reshape(-1, 1, 1)
    x_t = (1 - tc) * x0 + tc * eps
    expected = ((some_network(x_t, 999.0 * t) - (eps - x0)) ** 2).mean(dim=(1, 2))
    # float64; the weight (1 + 1/sigma)^2 undoes the factor t of the x_0 error: rounding only
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_logit_normal_times_have_the_logit_normal_law():
    """logit t = ln sigma ~ N(p_mean, p_std^2): the 4000 draws' logits have that mean and std."""
    process = dk.RectifiedFlow(time_sampling="logit_normal", p_mean=-0.5, p_std=0.8, t_min=1e-6, t_max=1 - 1e-6)
    t, sigma = process.training_sigmas(4000, torch.Generator().manual_seed(0), "cpu", torch.float64)
    logit = torch.log(t / (1 - t))
    torch.testing.assert_close(torch.log(sigma), logit, rtol=0, atol=1e-9)   # float64 rounding
    # sampling error of the mean: 0.8 / sqrt(4000) = 0.013; of the std: 0.8 / sqrt(8000) = 0.009 (5 se)
    assert abs(float(logit.mean()) + 0.5) < 0.065 and abs(float(logit.std()) - 0.8) < 0.045


# ---------------------------------------------------------------------- samplers and likelihood
N = 4000
STEPS = {"ddim": 100, "euler": 200, "heun": 60, "rk45": 1, "dpmpp2m": 60, "dpmpp3m": 60, "sde": 400, "pc": 200,
         "dpmpp2m_sde": 100, "dpmpp3m_sde": 100, "heun_churn": 60, "euler_churn": 200, "ald": 200,
         "reverse_diffusion": 400, "euler_maruyama": 400, "ancestral_ve": 400, "predictor_corrector": 200}
FEW_STEPS = 60   # any other (e.g. a multistep solver registered later): an ODE solver at 60 steps
# consistency sampling (Song et al. 2023, Alg. 1) needs a consistency model, not a denoiser: with the exact
# denoiser each step returns the posterior mean, whose spread is below the data's
NOT_DENOISER_SAMPLERS = {"consistency"}


@pytest.mark.parametrize("sampler", sorted(name for name, entry in dk.SAMPLERS.items()
                                           if not entry.discrete and name not in NOT_DENOISER_SAMPLERS))
def test_every_sampler_reproduces_the_data(sampler):
    """Every registered sampler but the discrete chain's, from the prior N(0, t_max^2)."""
    process = dk.RectifiedFlow()
    params = {"s_churn": 10.0} if sampler in ("heun_churn", "euler_churn") else {}
    if sampler == "ald":   # Langevin stability: eps < 2 sigma_L^2 = 2.004e-6 at sigma_L = sigma(t_min)
        params = {"eps": 1e-6}
    x = dk.sample(process, exact_network(process), (N, 1), sampler, STEPS.get(sampler, FEW_STEPS), seed=1, progress=False,
                  x_T=process.prior_std * torch.randn(N, 1, generator=torch.Generator().manual_seed(0),
                                                      dtype=torch.float64), **params)
    mean, std = float(x.mean()), float(x.std())
    z_mean, z_std = (mean - MU) / (SD / math.sqrt(N)), (std - SD) / (SD / math.sqrt(2 * N))
    assert abs(z_mean) < 4.5 and abs(z_std) < 4.5, (mean, std)   # 4.5 standard errors: seeds vary by CPU


def test_euler_on_the_flow_grid_is_the_flows_euler_in_t():
    """x_hat' = D + (sigma'/sigma)(x_hat - D) on flow_sigmas is x' = x + (t' - t) F(x, t) in x, for any
    network; one step from t_max returns x - t_max F."""
    process = dk.RectifiedFlow()
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for steps in (1, 2, 4):
        sigmas = flow_sigmas(process, steps)
        t = sigmas / (1 + sigmas)
        x_hat = dk.samplers.euler(process.denoiser(some_network), z / process.scale(t[0]), sigmas,
                                  SampleOptions(progress=False))
        x = z
        for k in range(steps):
            x = x + (t[k + 1] - t[k]) * some_network(x, torch.full((16,), 999.0 * t[k], dtype=torch.float64))
        torch.testing.assert_close(x_hat, x, rtol=1e-9, atol=1e-9)   # float64: only the rounding differs


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp2m", "dpmpp3m"])
def test_the_flows_default_grid_is_uniform_in_t_down_to_zero(sampler):
    """A flow's default grid (the samplers without a continuous grid of their own, and DPM-Solver++ below
    10 steps) is uniform in t down to 0: n levels t_k = t_max - k (t_max - t_min) / n, then t = 0, so n
    Euler steps are n network calls and none is spent moving from t_min to 0 (the old ``uniform``
    grid's last call); it is flow_sigmas bit for bit, the grid a k-step student is trained on."""
    process = dk.RectifiedFlow()
    for steps in (1, 2, 3, 8):
        plan = plan_sampling(process, sampler, steps)
        t = plan.sigmas / (1 + plan.sigmas)
        k = np.arange(steps)
        expected = np.append(process.t_max - k * (process.t_max - process.t_min) / steps, 0.0)
        np.testing.assert_allclose(t, expected, rtol=1e-12, atol=1e-15)   # float64, two conversions
        np.testing.assert_array_equal(plan.sigmas, flow_sigmas(process, steps))   # the same float64 ops
        assert plan.grid == "uniform_open"


def test_the_exact_flows_paths_are_curved_and_heun_follows_them():
    """Heun from the exact point of the quantile z at t_max stays on (1 - t) MU + sqrt(V_t) z; the midpoint
    of that path is off the chord between its ends (curvature), so one Euler step cannot reach the data:
    from t_max it lands on the posterior mean, whose spread is ~0, not SD."""
    process = dk.RectifiedFlow()
    z = torch.linspace(-2, 2, 5, dtype=torch.float64).reshape(-1, 1)
    seen = []
    x = dk.sample(process, exact_network(process), None, "heun", 200, x_T=path(process.t_max, z),
                  progress=False, grid="uniform", callback=lambda info: seen.append((info.sigma_next, info.x)))
    # Heun's O(h^2) error at 200 steps uniform in t (measured 1e-4: its steps are large in sigma at the top)
    torch.testing.assert_close(x, path(0.0, z), rtol=0, atol=5e-4)
    for sigma_next, x_t in seen[:-1:20]:   # StepInfo.x: x_t at the step's end, sigma_next
        torch.testing.assert_close(x_t, path(float(process.t_of_sigma(sigma_next)), z), rtol=0, atol=5e-4)
    chord = 0.5 * (path(0.0, z) + path(1.0, z))
    assert float((path(0.5, z) - chord).abs().max()) > 0.1   # |sqrt(0.25 SD^2 + 0.25) - (SD + 1)/2| 2 = 0.13
    one = dk.samplers.euler(process.denoiser(exact_network(process)), path(process.t_max, z) / process.scale(process.t_max),
                            flow_sigmas(process, 1), SampleOptions(progress=False))
    assert float(one.std()) < 0.01 * SD


def test_the_ode_likelihood_is_the_exact_log_density():
    """ode_bpd evaluates the density of x_0 + sigma_min eps in x_hat: N(MU, SD^2 + sigma_min^2).
    Tolerance 1e-3 relative: the prior N(0, t_max^2) stands for N((1 - t_max) MU, V_{t_max}), which
    moves log p by about 4 dims x 1e-3 x MU x |x| (1e-3 of these NLLs), plus the solver's 1e-6."""
    process = dk.RectifiedFlow()
    x = MU + SD * torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = dk.ode_bpd(process, exact_network(process), x, levels=None, trace="exact", rtol=1e-6, atol=1e-6,
                        progress=False)
    var = SD**2 + process.sigma_min**2
    expected = (0.5 * ((x - MU) ** 2 / var + math.log(2 * math.pi * var))).sum(dim=1)
    assert torch.all((result.nll - expected).abs() <= 1e-3 * expected.abs()), (result.nll, expected)


# ---------------------------------------------------------------------- presets and config keys
@pytest.mark.parametrize("preset", ["digits-flow", "toy2d-flow"])
def test_the_presets_build_a_velocity_flow(preset):
    config = load_config(preset, [])
    process = config.diffusion.build()
    assert isinstance(process, dk.RectifiedFlow) and process.prediction == "v"
    assert config.diffusion.weighting == "flow"
    logit = load_config(preset, ["diffusion.time_sampling=logit_normal"]).diffusion.build()
    assert logit.time_sampling == "logit_normal" and (logit.p_mean, logit.p_std) == (0.0, 1.0)


def test_flow_keys_are_refused_elsewhere_and_checked_here():
    with pytest.raises(ValueError, match="time_sampling"):
        load_config("digits-edm", ["diffusion.time_sampling=uniform"])
    with pytest.raises(ValueError, match="t_max"):
        load_config("digits-flow", ["diffusion.t_max=1.0"])
    with pytest.raises(ValueError, match="weighting"):
        load_config("digits-flow", ["diffusion.weighting=edm"])
