"""The one process protocol (issue 21): every process, the discrete chain included, on one contract.

Each process here is asked the same questions: its host maps invert each other, its device maps
agree with its host maps, its one denoiser is ``ProcessDenoiser`` (c_skip x_hat + c_out F(c_in x_hat,
c_noise)), its loss draws in the stated order (levels first, then the noise) so that a trainer's
draws handed in with ``draws=`` give the same numbers, and what only some processes have is a
capability with a value, never a class to test.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ddpmkit as dk

SCHEDULE = dk.Schedule.cosine(200)
PROCESSES = {
    "discrete-eps": lambda: dk.GaussianDiffusion(SCHEDULE, "eps"),
    "discrete-v": lambda: dk.GaussianDiffusion(SCHEDULE, "v"),
    "discrete-x0-learned": lambda: dk.GaussianDiffusion(SCHEDULE, "x0", "learned_range"),
    "discrete-respaced": lambda: dk.GaussianDiffusion(SCHEDULE, "eps").respace(25),
    "ve": lambda: dk.VE(),
    "vp": lambda: dk.VP(),
    "subvp": lambda: dk.SubVP(),
    "edm": lambda: dk.EDM(),
    "flow": lambda: dk.RectifiedFlow(),
}


def _net(process: dk.Process):
    """A smooth stand-in network of the right output shape (twice the channels for learned variance)."""
    def net(x, t, **cond):
        tf = t.to(torch.float64).reshape(-1, *([1] * (x.dim() - 1))) / 1000.0
        out = torch.sin(x.double() * (1.0 + tf)) + 0.1 * tf
        if process.learned_variance:
            out = torch.cat([out, torch.tanh(x.double())], dim=1)
        return out.to(x.dtype)
    return net


@pytest.fixture(params=sorted(PROCESSES))
def process(request):
    return PROCESSES[request.param]()


def test_every_process_is_a_process_with_one_denoiser(process):
    assert isinstance(process, dk.Process)
    assert type(process.denoiser(_net(process))) is dk.ProcessDenoiser
    assert process.training_steps is None or process.training_steps >= 1
    assert isinstance(process.supports_bound, bool) and isinstance(process.learned_variance, bool)
    assert process.supports_bound == (process.training_steps is not None)   # the bound needs the chain's steps
    assert process.sigma_min < process.sigma_max and process.prior_std > 0


def test_host_maps_invert_each_other_and_the_device_maps_agree(process):
    t = np.linspace(process.t_min, process.t_max, 9)
    sigma = process.sigma(t)
    assert np.all(np.diff(sigma) > 0)
    # float64 round trip: interpolation and closed forms invert to ~1e-9 relative (no float32 anywhere)
    np.testing.assert_allclose(process.t_of_sigma(sigma), t, rtol=1e-7, atol=1e-7 * max(1.0, process.t_max))
    t64 = torch.from_numpy(t)
    np.testing.assert_allclose(process.sigma_on(t64).numpy(), sigma, rtol=1e-10)
    np.testing.assert_allclose(process.scale_on(t64).numpy(), process.scale(t), rtol=1e-10)
    np.testing.assert_allclose(process.t_of_sigma_on(torch.from_numpy(sigma)).numpy(), t, rtol=1e-7,
                               atol=1e-7 * max(1.0, process.t_max))


def test_the_denoiser_is_the_preconditioned_network_on_host_and_device(process):
    x_hat = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net = _net(process)
    D = process.denoiser(net)
    for sigma in np.geomspace(process.sigma_min * 1.5, process.sigma_max / 1.5, 4):
        c_in, c_skip, c_out, c_noise = process.preconditioning(float(sigma))
        out = net(x_hat * c_in, process.network_time(c_noise, x_hat))
        expected = c_skip * x_hat + c_out * process.prediction_part(out, x_hat)
        torch.testing.assert_close(D(x_hat, float(sigma)), expected, rtol=1e-12, atol=1e-12)
        # the device path (a tensor sigma) computes the same coefficients in torch: a time between
        # two of the chain's steps is then interpolated on the device rather than on the host
        torch.testing.assert_close(D(x_hat, torch.tensor(sigma, dtype=torch.float64)), expected, rtol=1e-9,
                                   atol=1e-9)


def test_the_loss_draws_levels_then_noise_and_takes_a_trainers_draws(process):
    x0 = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(1))
    net = _net(process)
    expected = process.loss(net, x0, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    draws = process.draw_levels(6, g, "cpu", torch.float32)
    draws["noise"] = torch.randn(x0.shape, generator=g)
    got = process.loss(net, x0, draws=draws)
    assert got.shape == (6,)
    assert torch.equal(got, expected)   # the same numbers through the same code: bit for bit
    terms = process.loss_terms(net, x0, draws=draws)
    assert set(process.logged_terms) <= set(terms)


def test_only_the_chain_samples_its_timesteps_and_says_so(process):
    sampler = process.timestep_sampler("uniform")
    assert (sampler is None) == (process.training_steps is None)
    if process.training_steps is None:
        with pytest.raises(ValueError, match="timestep_sampler='importance' needs a process with training steps"):
            process.timestep_sampler("importance")
    else:
        assert process.timestep_sampler("importance").T == process.training_steps


def test_capabilities_that_only_some_processes_have(process):
    sigmas = process.sigma(np.linspace(process.t_max, process.t_min, 4))
    alphas = process.corrector_alphas(sigmas)
    assert (alphas is None) == (process.training_steps is None)
    if alphas is not None:
        assert len(alphas) == 4 and all(0 < a < 1 for a in alphas)
    grid = process.sigmas_to_zero(4)
    assert (grid is not None) == isinstance(process, dk.RectifiedFlow)
    if grid is not None:
        assert grid.shape == (5,) and grid[-1] == 0 and np.all(np.diff(grid) < 0)
    assert process.consistency_function is False


def test_a_consistency_process_is_asked_not_tested():
    process = dk.Consistency()
    assert process.consistency_function is True and process.training_steps is None
    with pytest.raises(ValueError, match="trained by a consistency objective"):
        process.loss(lambda x, t: x, torch.zeros(2, 3))
