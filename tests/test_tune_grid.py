"""Explicit sigma grids (plan_sampling) and the step-schedule tuner (ddpmkit.sampling.tune).

Exact oracle: for Gaussian data N(MU, SD^2) every deterministic solver is an affine map of x_T,
so a grid's error on one noise batch is the error of its slope and offset, the same on any
other batch up to the batch's own second moments: a grid tuned on one batch must be better on
another. The reference is DPM-Solver++ 2M at 200 steps (its error is below 1e-6 here).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from oracles import gaussian_oracle
from test_continuous_processes import MU as CONTINUOUS_MU, SD as CONTINUOUS_SD, exact_network

import ddpmkit as dk
from ddpmkit.sampling.plan import EXPLICIT_GRID, plan_sampling

MU, SD = 0.3, 0.5
PROCESS = dk.GaussianDiffusion(dk.Schedule.named("cosine", 1000))
ORACLE = gaussian_oracle(PROCESS.schedule, [MU], [SD])


def noise(seed: int, n: int = 64) -> torch.Tensor:
    return torch.randn((n, 1), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_an_explicit_grid_runs_exactly_the_named_grid_it_lists():
    plan = plan_sampling(PROCESS, "unipc", 4)
    x_T = noise(0)
    named = dk.sample(PROCESS, ORACLE, None, "unipc", 4, x_T=x_T, progress=False)
    listed = dk.sample(PROCESS, ORACLE, None, "unipc", x_T=x_T, grid=plan.sigmas.tolist(), progress=False)
    torch.testing.assert_close(listed, named, rtol=0, atol=0)
    explicit = plan_sampling(PROCESS, "unipc", None, list(plan.sigmas))
    assert explicit.grid == EXPLICIT_GRID and explicit.steps == 4
    np.testing.assert_array_equal(explicit.sigmas, plan.sigmas)


@pytest.mark.parametrize("grid, sampler, steps, message", [
    ([1.0, 0.5], "unipc", None, "ending in 0"),
    ([1.0, 2.0, 0.0], "unipc", None, "decrease strictly"),
    ([1e9, 1.0, 0.0], "unipc", None, "must lie in"),
    ([float("nan"), 1.0, 0.0], "unipc", None, "finite"),
    ([2.0, 1.0, 0.0], "unipc", 3, "length less one"),
    ([2.0, 1.0, 0.0], "ddpm", None, "steps over a denoiser"),
    ([2.0, 1.0, 0.0], "rk45", None, "steps over a denoiser"),
    (["a", "b"], "unipc", None, "list of noise levels"),
])
def test_bad_explicit_grids_are_one_line_errors(grid, sampler, steps, message):
    with pytest.raises(ValueError, match=message) as err:
        dk.sample(PROCESS, ORACLE, (2, 1), sampler, steps, grid=grid, progress=False)
    assert "\n" not in str(err.value)


def test_the_tuned_grid_beats_the_default_on_other_noise_and_is_deterministic():
    tuned = dk.tune_grid(PROCESS, ORACLE, "euler", 3, (1,), samples=64, reference_steps=200, clip_x0=False,
                         progress=False)
    again = dk.tune_grid(PROCESS, ORACLE, "euler", 3, (1,), samples=64, reference_steps=200, clip_x0=False,
                         progress=False)
    np.testing.assert_array_equal(tuned.sigmas, again.sigmas)
    assert tuned.loss < 0.7 * tuned.default_loss       # a real gain on the tuning batch (0.58 of it here)
    assert tuned.sigmas[0] == tuned.default_sigmas[0] and tuned.sigmas[-1] == 0.0 and (np.diff(tuned.sigmas) < 0).all()
    # on fresh noise, against the exact solution of the affine ODE, the tuned grid is better too
    x_T = noise(1, 256)
    top = float(tuned.sigmas[0])
    x_hat = x_T * np.hypot(1.0, top)          # x_T / s(top), s(sigma) = 1 / sqrt(1 + sigma^2) on the chain
    exact = MU + SD / np.hypot(SD, top) * (x_hat - MU)

    def err(grid: np.ndarray) -> float:
        x = dk.sample(PROCESS, ORACLE, None, "euler", x_T=x_T, grid=grid.tolist(), progress=False)
        return float(((x - exact) ** 2).mean())

    assert err(tuned.sigmas) < 0.7 * err(tuned.default_sigmas)   # 0.056 against 0.097 here
    assert tuned.to_dict()["sigmas"] == tuned.sigmas.tolist()


def test_tuning_works_in_continuous_time_too():
    """EDM (Karras et al. 2022) on its exact network for N(MU, SD^2): the same search on its karras
    grid, against the affine ODE's exact solution x_0 = MU + SD / sqrt(SD^2 + sigma^2) (x - MU)."""
    assert (CONTINUOUS_MU, CONTINUOUS_SD) == (MU, SD)
    process = dk.EDM()
    net = exact_network(process)
    tuned = dk.tune_grid(process, net, "euler", 3, (1,), samples=64, reference_steps=200, clip_x0=False,
                         progress=False)
    assert tuned.sigmas[0] == process.sigma_max and tuned.loss < 0.7 * tuned.default_loss
    x_hat = process.sigma_max * noise(2, 256)
    exact = MU + SD / np.hypot(SD, process.sigma_max) * (x_hat - MU)

    def err(grid: np.ndarray) -> float:
        x = dk.sample(process, net, None, "euler", x_T=x_hat, grid=grid.tolist(), progress=False)
        return float(((x - exact) ** 2).mean())

    assert err(tuned.sigmas) < 0.7 * err(tuned.default_sigmas)


def test_tuning_refuses_what_it_cannot_tune():
    with pytest.raises(ValueError, match="steps must be >= 2"):
        dk.tune_grid(PROCESS, ORACLE, "euler", 1, (1,), progress=False)
    with pytest.raises(ValueError, match="samples must be an integer"):
        dk.tune_grid(PROCESS, ORACLE, "euler", 3, (1,), samples=0, progress=False)
    with pytest.raises(ValueError, match="steps over a denoiser"):
        dk.tune_grid(PROCESS, ORACLE, "ddpm", 3, (1,), progress=False)
