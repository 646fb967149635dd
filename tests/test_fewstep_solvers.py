"""The few-step solvers (iPNDM, iPNDM-v, DEIS-tAB, UniPC), the open grids and the step-count defaults.

Exact oracles: for Gaussian data N(MU, SD^2) the denoiser is D(x, sigma) = MU + k (x - MU),
k = SD^2 / (SD^2 + sigma^2), and the probability-flow ODE maps x at sigma_0 to
x_0 = MU + SD / sqrt(SD^2 + sigma_0^2) (x - MU) (the solution is smooth in sigma down to 0), so
every solver's error is known without sampling noise, and its order of convergence is the slope
of log error against log steps. UniPC's cross-check with diffusers is tests/test_unipc_diffusers.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracles import gaussian_oracle
from test_continuous_processes import exact_network

import ddpmkit as dk
from ddpmkit.sampling import SAMPLERS, SIGMA_MAX, karras_sigmas, sigma_grid
from ddpmkit.sampling.grids import OPEN_GRIDS, continuous_sigmas
from ddpmkit.sampling.loop import SampleOptions
from ddpmkit.sampling.multistep import AB_COEFFICIENTS, ab_weights, deis, ipndm, ipndm_v, unipc, vp_time

MU, SD, SIGMA_0 = 0.3, 0.5, 80.0
NEW = ("ipndm", "ipndm_v", "deis", "unipc")
QUIET = SampleOptions(progress=False)


def denoiser(x: torch.Tensor, sigma: float, **cond) -> torch.Tensor:
    return MU + SD**2 / (SD**2 + sigma**2) * (x - MU)


X = SIGMA_0 * torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
EXACT = MU + SD / math.hypot(SD, SIGMA_0) * (X - MU)


def error(solver, sigmas: np.ndarray, **params) -> float:
    return float((solver(denoiser, X, sigmas, QUIET, **params) - EXACT).abs().max())


def test_ab_weights_are_the_classic_ones_on_a_uniform_grid_and_exact_for_polynomials():
    h = -0.37
    for order, classic in AB_COEFFICIENTS.items():
        past = [2.0 - j * h for j in range(order)]   # newest first, uniform spacing
        assert np.allclose(ab_weights(past, 2.0, 2.0 + h), h * np.asarray(classic), rtol=0, atol=1e-13)
    rng = np.random.default_rng(0)
    past = [1.3, 1.9, 2.2, 3.5]   # irregular: the interpolant of a cubic is the cubic
    c = rng.normal(size=4)
    w = ab_weights(past, 1.3, 0.4)
    poly = np.polynomial.Polynomial(c)
    exact = poly.integ()(0.4) - poly.integ()(1.3)
    assert abs(float(np.dot(w, poly(np.asarray(past)))) - exact) < 1e-12   # float64 rounding


def test_deis_weights_are_the_integral_in_vp_time():
    """DEIS-tAB (their eq. 15) writes the weights in t: int sigma'(t) L_j(t) dt; ours are the same
    integral by substitution in sigma. Checked against a fine trapezoid rule in t (1e-6: its error)."""
    past, lo, hi = [1.2, 4.0, 20.0], 1.2, 0.3
    t_past, t = vp_time(np.asarray(past)), np.linspace(vp_time(lo), vp_time(hi), 200001)
    sigma = np.sqrt(np.expm1(0.1 * t + 9.95 * t * t))
    dsigma = (0.1 + 19.9 * t) * (1.0 + sigma**2) / (2.0 * sigma)
    for j in range(3):
        basis = np.prod([(t - t_past[m]) / (t_past[j] - t_past[m]) for m in range(3) if m != j], axis=0)
        expected = np.trapezoid(dsigma * basis, t)
        assert abs(ab_weights(past, lo, hi, vp_time)[j] - expected) < 1e-6


def test_ipndm_is_ipndm_v_on_a_grid_uniform_in_sigma_and_order_one_is_euler():
    sigmas = np.append(karras_sigmas(0.002, SIGMA_0, 12), 0.0)
    uniform = np.linspace(SIGMA_0, 0.0, 13)
    assert torch.allclose(ipndm(denoiser, X, uniform, QUIET), ipndm_v(denoiser, X, uniform, QUIET), atol=1e-9)
    euler = dk.sampling.euler(denoiser, X, sigmas, QUIET)
    for solver in (ipndm, ipndm_v, deis):
        assert torch.allclose(solver(denoiser, X, sigmas, QUIET, order=1), euler, atol=1e-10)


# (solver, params, expected order on a Karras grid). The lower-order start costs nothing on the
# Karras grid (its first steps are where d barely changes), so the variable-step methods show
# their full order; iPNDM's constant-step weights on a non-uniform grid are second order, and
# UniPC's corrector adds one to its predictor's order (Zhao et al. 2023, Theorem 3.3).
ORDERS = [(ipndm, {}, 2), (ipndm_v, {}, 4), (ipndm_v, {"order": 3}, 3), (deis, {}, 3), (deis, {"order": 2}, 2),
          (unipc, {}, 4), (unipc, {"variant": "bh1"}, 4), (unipc, {"order": 2}, 3),
          (unipc, {"corrector": False}, 3)]


@pytest.mark.parametrize("solver,params,order", ORDERS, ids=[f"{s.__name__}{p}" for s, p, _ in ORDERS])
def test_order_of_convergence_on_the_gaussian_oracle(solver, params, order):
    # sigma_min 1e-4: UniPC's last step, x_0 = D(x, sigma_min), errs by O(sigma_min^2) (2e-8 here)
    errors = [error(solver, np.append(karras_sigmas(1e-4, SIGMA_0, n), 0.0), **params) for n in (40, 80, 160)]
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    # 0.4 below the order: the asymptotic slope is approached from either side at these n
    assert slopes[-1] > order - 0.4 and errors[-1] < 1e-2, (errors, slopes)
    if order <= 3:   # and not far above it either (a lower-order solver is not secretly better)
        assert slopes[-1] < order + 0.9, (errors, slopes)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_new_solvers_are_no_worse_than_twice_ddim_on_the_discrete_process(name, schedule):
    """Through dk.sample (default grid, the bound at SIGMA_MAX): the W2 distance of the law of
    x_T -> A x_T + b (no sampling noise) to the data, against DDIM's (the contract of
    tests/test_sampler_schedules.py), at 5, 10 and 20 steps."""
    process = dk.GaussianDiffusion(dk.Schedule.named(schedule, 1000))
    oracle = gaussian_oracle(process.schedule, [MU], [SD])

    def w2(sampler: str, steps: int) -> float:
        zero, one = (torch.full((1, 1), v, dtype=torch.float64) for v in (0.0, 1.0))
        b = float(dk.sample(process, oracle, None, sampler, steps, x_T=zero, progress=False)[0, 0])
        a = float(dk.sample(process, oracle, None, sampler, steps, x_T=one, progress=False)[0, 0]) - b
        return math.hypot(b - MU, abs(a) - SD)

    for steps in (5, 10, 20):
        assert w2(name, steps) <= 2.0 * w2("ddim", steps) + 1e-3, (steps, w2(name, steps), w2("ddim", steps))


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("process", ["ve", "vp", "edm"])
def test_new_solvers_reproduce_the_data_on_every_continuous_process(name, process):
    proc = {"ve": dk.VE, "vp": dk.VP, "edm": dk.EDM}[process]()
    n = 4000
    x_T = proc.prior_std * torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = dk.sample(proc, exact_network(proc), None, name, 20, x_T=x_T, progress=False)
    from test_continuous_processes import MU as mu, SD as sd
    z_mean, z_std = (float(x.mean()) - mu) / (sd / math.sqrt(n)), (float(x.std()) - sd) / (sd / math.sqrt(2 * n))
    assert abs(z_mean) < 4.5 and abs(z_std) < 4.5, (float(x.mean()), float(x.std()))


def test_open_grids_drop_sigma_min_and_keep_the_rest():
    process = dk.GaussianDiffusion(dk.Schedule.cosine(1000))
    for grid in OPEN_GRIDS:
        closed, opened = (sigma_grid(process, 6, g, 7.0, SIGMA_MAX) for g in (grid[:-5], grid))
        assert len(opened) == 7 and opened[-1] == 0.0 and opened[-2] > 4 * closed[-2]   # no call at sigma_min
        longer = sigma_grid(process, 7, grid[:-5], 7.0, SIGMA_MAX)
        assert np.allclose(opened[:-1], longer[:-2], rtol=1e-12)
    edm = dk.EDM()
    opened, longer = continuous_sigmas(edm, 5, "karras_open"), continuous_sigmas(edm, 6, "karras")
    assert np.allclose(opened[:-1], longer[:-2], rtol=1e-12) and opened[-1] == 0.0


def test_default_grids_depend_on_the_step_count_and_keep_the_demo():
    """Below 10 steps the measured best grid (docs/SOLVERS.md); the demo's ddim-50 and dpmpp2m-20
    keep their grids ('uniform', 'logsnr')."""
    assert SAMPLERS["ddim"].grid_for(50) == "uniform" and SAMPLERS["dpmpp2m"].grid_for(20) == "logsnr"
    for name in ("dpmpp2m", "dpmpp3m", *NEW):
        assert SAMPLERS[name].grid_for(4) in OPEN_GRIDS + ("trailing",), name
    process = dk.GaussianDiffusion(dk.Schedule.cosine(1000))
    seen = []
    dk.sample(process, gaussian_oracle(process.schedule, [MU], [SD]), (2, 1), "dpmpp2m", 4, seed=0, progress=False,
              callback=lambda info: seen.append(info.sigma))
    expected = sigma_grid(process, 4, SAMPLERS["dpmpp2m"].grid_for(4), 7.0, SIGMA_MAX)[:-1]
    assert np.allclose(seen, expected, rtol=1e-9)


@pytest.mark.parametrize("name", NEW)
def test_bad_parameters_are_one_line_errors(name):
    process = dk.GaussianDiffusion(dk.Schedule.cosine(100))
    net = lambda x, t, **c: torch.zeros_like(x)   # noqa: E731
    with pytest.raises(ValueError, match="order"):
        dk.sample(process, net, (2, 1), name, 4, order=7, progress=False)
    if name == "unipc":
        with pytest.raises(ValueError, match="variant"):
            dk.sample(process, net, (2, 1), name, 4, variant="bh3", progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The digits preset, 8 channels, 3 training steps (as in tests/test_load_run.py)."""
    from ddpmkit.training.config import load_config
    from ddpmkit.training.train import train

    out = tmp_path_factory.mktemp("run") / "digits"
    train(load_config("digits", ["optim.steps=3", "network.channels=8", f"out={out}", "log_every=1",
                                 "sample_every=0", "checkpoint_every=0", "optim.warmup=0"]), progress=False)
    return out


def test_sample_command_takes_grid_and_rho(tiny_run, tmp_path):
    """`ddpmkit sample --grid --rho` is dk.sample with grid= and rho=; a bad grid is a one-line error."""
    from ddpmkit.cli.main import main

    run = dk.load_run(tiny_run)
    with torch.no_grad():
        x = dk.sample(run.process, run.model, (4, *run.shape), sampler="unipc", steps=4, seed=3, clip_x0=True,
                      progress=False, grid="karras_open", rho=3.0)
    out = tmp_path / "s.npz"
    assert main(["sample", str(tiny_run), "--sampler", "unipc", "--steps", "4", "--grid", "karras_open", "--rho", "3",
                 "--n", "4", "--seed", "3", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    with np.load(out) as saved:
        torch.testing.assert_close(x, torch.from_numpy(saved["x"]), rtol=0, atol=1e-6)   # float32 rounding
    assert main(["sample", str(tiny_run), "--sampler", "unipc", "--steps", "4", "--grid", "nope", "--n", "2",
                 "--out", str(tmp_path / "t.npz"), "--quiet", "--device", "cpu"]) != 0
    assert not (tmp_path / "t.npz").exists()
