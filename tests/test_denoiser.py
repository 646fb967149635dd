"""The noise-level contract: process.sigma / scale / t_of_sigma and D(x_hat, sigma) against closed forms.

For x_0 ~ N(mu, s^2) and x_hat = x_0 + sigma eps, E[x_0 | x_hat] = mu + s^2 / (s^2 + sigma^2) (x_hat - mu),
written here from scratch: a network trained on the process (the oracle, in every
parameterisation) must give exactly that through ``process.denoiser``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracles import gaussian_oracle

import ddpmkit as dk
from ddpmkit.sampling import model_device
from ddpmkit.sampling.guidance import ClassifierFreeGuidance

MU, SD = 0.3, 0.5
SCHEDULE = dk.Schedule.cosine(1000)


def posterior_mean(x_hat: torch.Tensor, sigma) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, *([1] * (x_hat.dim() - 1)))
    return MU + SD**2 / (SD**2 + sigma**2) * (x_hat - MU)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_the_denoiser_of_the_exact_model_is_the_posterior_mean(prediction):
    process = dk.GaussianDiffusion(SCHEDULE, prediction=prediction)
    D = process.denoiser(gaussian_oracle(SCHEDULE, [MU], [SD], prediction=prediction))
    x_hat = 3.0 * torch.randn(6, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0.0, 10.0, 437.25, 998.0):   # training steps and a time between two
        sigma = float(process.sigma(t))
        torch.testing.assert_close(D(x_hat, sigma), posterior_mean(x_hat, sigma), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(D(x_hat, torch.tensor(sigma, dtype=torch.float64)), posterior_mean(x_hat, sigma),
                                   rtol=1e-9, atol=1e-9)
    sigmas = torch.tensor([0.05, 0.5, 5.0, 50.0, 120.0, 0.01], dtype=torch.float64)   # one level per example
    torch.testing.assert_close(D(x_hat, sigmas), posterior_mean(x_hat, sigmas), rtol=1e-9, atol=1e-9)


def test_sigma_scale_and_time_are_the_schedules():
    process = dk.GaussianDiffusion(SCHEDULE)
    t = np.array([0.0, 17.0, 500.0, 999.0])
    ab = SCHEDULE.alpha_bar[t.astype(int)]
    np.testing.assert_allclose(process.sigma(t), np.sqrt((1 - ab) / ab), rtol=1e-12)
    np.testing.assert_allclose(process.scale(t), np.sqrt(ab), rtol=1e-12)
    np.testing.assert_allclose(process.t_of_sigma(process.sigma(t)), t, atol=1e-7)
    assert process.sigma_max == pytest.approx(process.sigma(999.0)) and process.sigma_min == pytest.approx(process.sigma(0.0))


def test_the_network_gets_long_at_steps_and_float32_between_whatever_the_data_dtype():
    seen = []

    def spy(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    process = dk.GaussianDiffusion(SCHEDULE)
    D = process.denoiser(spy)
    x = torch.zeros(3, 2, dtype=torch.bfloat16)
    D(x, float(process.sigma(937.0)))
    D(x, float(process.sigma(937.3)))
    D(x, torch.tensor(float(process.sigma(937.3))))
    assert seen[0].dtype == torch.long and seen[0].tolist() == [937] * 3
    for t in seen[1:]:   # bf16 would round 937.3 to 936 or 938
        assert t.dtype == torch.float32 and abs(float(t[0]) - 937.3) < 1e-2


def test_samples_follow_the_models_device_through_wrappers():
    net = torch.nn.Linear(2, 2)
    assert model_device(net) == torch.device("cpu")
    wrapped = ClassifierFreeGuidance(dk.GaussianDiffusion(SCHEDULE), net, 2.0, 3)
    assert model_device(wrapped) == torch.device("cpu")
    assert model_device(lambda x, t: x) is None


def test_a_bad_grid_is_a_one_line_error():
    D = dk.GaussianDiffusion(SCHEDULE).denoiser(lambda x, t: torch.zeros_like(x))
    x = torch.zeros(2, 1)
    for bad in ([5.0, 1.0], [1.0, 5.0, 0.0], [5.0, 5.0, 0.0], [5.0, math.nan, 0.0]):
        with pytest.raises(ValueError, match="sigmas"):
            dk.samplers.euler(D, x, torch.tensor(bad))
