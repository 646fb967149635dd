"""Cross-checks of the discrete samplers with diffusers' schedulers (same betas, same inputs).

Timestep alignment, explicitly (T training steps, N sampling steps, c = T // N):

- diffusers ``timestep_spacing="leading"`` visits t = (N-1) c, ..., c, 0, plus ``steps_offset``;
  its DDIM step goes from t to t - c, and to alpha_bar = 1 below 0 (``set_alpha_to_one=True``).
  With offset 0 that is our ``skip="uniform"``: ``Schedule.respace`` keeps the same indices and
  its ``alpha_bar_prev`` is alpha_bar at the next kept index, 1 before the first. With
  ``steps_offset=1`` (Stable Diffusion's configs) it is our process respaced on the shifted list.
- ``"trailing"`` (t = T - 1 - k T/N) matches our ``skip="trailing"`` when N divides T.
- Not matched on purpose: diffusers' DDIM with ``"linspace"`` spacing still steps to t - c,
  not to the next visited timestep, and ``set_alpha_to_one=False`` ends at alpha_bar[0] instead
  of clean data; our DDIM always steps to the next kept index and ends at alpha_bar = 1.
- DDPMScheduler: without ``set_timesteps`` it is the full chain; ``set_timesteps(N)`` is
  "leading" again, and its step re-derives beta from the two visited alpha_bars, as our respaced
  schedule does (also for learned-range variance).
- DPMSolverMultistepScheduler(dpmsolver++, midpoint, final_sigmas_type="zero") takes our
  visited timesteps as custom ``timesteps``.

diffusers keeps alpha_bar in float32 and re-derives beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}
from it, which loses about four digits at small t (relative error ~5e-4 at t = 1). The DDPM and
DDIM checks therefore hand the scheduler our float64 alpha_bar (``in_float64``) and run in
float64, where the steps agree to ~1e-12; DPM-Solver++ keeps float32 sigmas, so it gets 1e-4.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracles import gaussian_oracle

import ddpmkit as dk
from ddpmkit.sampling import sample, subsequence
from ddpmkit.sampling.ancestral import ancestral_step

schedulers = pytest.importorskip("diffusers.schedulers")

SHAPE = (4, 3, 4, 4)
# diffusers' DPM-Solver scheduler calls np.array on a torch tensor (numpy 2 deprecation; harmless)
QUIET_NUMPY = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
LINEAR = dk.Schedule.linear(1000)
PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def toy_model(x: torch.Tensor, t: torch.Tensor, learned: bool = False) -> torch.Tensor:
    """A smooth, bounded, t-dependent stand-in for a network (any deterministic map will do)."""
    tt = t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    out = 0.8 * torch.tanh(x * (0.5 + tt / 1000.0)) + 0.1 * torch.cos(tt / 37.0)
    return torch.cat([out, 0.9 * torch.tanh(x + tt / 500.0 - 1.0)], dim=1) if learned else out


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    error = float((a - b).abs().max())
    assert error <= tol * (1.0 + float(b.abs().max())), f"max abs difference {error:.3g}"


def in_float64(scheduler, schedule: dk.Schedule):
    """The same schedule with diffusers' alpha_bar tables in float64 (ours, not re-rounded)."""
    scheduler.alphas_cumprod = torch.from_numpy(schedule.alpha_bar.copy())
    scheduler.one = scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def ddpm_scheduler(schedule: dk.Schedule, variance: str, prediction: str):
    return in_float64(schedulers.DDPMScheduler(
        num_train_timesteps=schedule.T, trained_betas=schedule.betas.tolist(), variance_type=variance,
        prediction_type=PREDICTIONS[prediction], clip_sample=False), schedule)


def diffusers_loop(scheduler, model, x: torch.Tensor, noises=None, **step_kwargs) -> torch.Tensor:
    """Run ``scheduler`` over its timesteps; ``noises(k, t)`` gives step k's extra step kwargs."""
    for k, t in enumerate(scheduler.timesteps):
        out = model(x, torch.full((x.shape[0],), int(t)))
        extra = noises(k, int(t)) if noises else {}
        x = scheduler.step(out, int(t), x, **step_kwargs, **extra).prev_sample
    return x


# ---------------------------------------------------------------------------------- DDPM
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ddpm_step_equals_diffusers(variance, prediction):
    process = dk.GaussianDiffusion(LINEAR, prediction=prediction, variance=variance)
    scheduler = ddpm_scheduler(LINEAR, variance, prediction)
    learned = variance == "learned_range"
    x = torch.randn(SHAPE, generator=gen(0), dtype=torch.float64)
    for t in (0, 1, 2, 10, 250, 999):
        out = toy_model(x, torch.full((SHAPE[0],), t), learned)
        ours, _ = ancestral_step(process, out, x, t, torch.randn(SHAPE, generator=gen(t), dtype=torch.float64))
        theirs = scheduler.step(out, t, x, generator=gen(t)).prev_sample
        assert_close(ours, theirs, 1e-11)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("steps", [100, 25])
def test_ddpm_trajectory_equals_diffusers(variance, steps):
    schedule = dk.Schedule.linear(100)   # full chain at steps = 100, "leading" respacing at 25
    learned = variance == "learned_range"
    model = lambda x, t: toy_model(x, t * 10, learned)  # noqa: E731  (t in [0, 100))
    process = dk.GaussianDiffusion(schedule, variance=variance)
    scheduler = ddpm_scheduler(schedule, variance, "eps")
    if steps < schedule.T:
        scheduler.set_timesteps(steps)
    x_T = torch.randn(SHAPE, generator=gen(1), dtype=torch.float64)
    ours = sample(process, model, None, "ddpm", steps, grid="uniform", x_T=x_T, generator=gen(2), progress=False)
    theirs = diffusers_loop(scheduler, model, x_T, generator=gen(2))   # noise on every t > 0, as ours
    assert_close(ours, theirs, 1e-10)


# ---------------------------------------------------------------------------------- DDIM
def ddim_scheduler(schedule: dk.Schedule, spacing: str, offset: int, prediction: str = "eps"):
    return in_float64(schedulers.DDIMScheduler(
        num_train_timesteps=schedule.T, trained_betas=schedule.betas.tolist(), clip_sample=False,
        set_alpha_to_one=True, steps_offset=offset, timestep_spacing=spacing,
        prediction_type=PREDICTIONS[prediction]), schedule)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spacing,offset,steps,prediction", [
    ("leading", 0, 50, "eps"), ("leading", 0, 30, "v"), ("leading", 1, 50, "eps"), ("trailing", 0, 40, "x0")])
def test_ddim_trajectory_equals_diffusers(eta, spacing, offset, steps, prediction):
    scheduler = ddim_scheduler(LINEAR, spacing, offset, prediction)
    scheduler.set_timesteps(steps)
    visited = scheduler.timesteps.flip(0).tolist()   # ascending
    process = dk.GaussianDiffusion(LINEAR, prediction=prediction)
    if offset:   # a shifted list is a respaced process run on all of its steps
        process, skip = process.respace(visited), "uniform"
    else:
        skip = "uniform" if spacing == "leading" else "trailing"
        assert subsequence(process, steps, skip).tolist() == visited
    x_T = torch.randn(SHAPE, generator=gen(3), dtype=torch.float64)
    ours = sample(process, toy_model, None, "ddim", steps, eta=eta, grid=skip, x_T=x_T, generator=gen(4),
                  progress=False)
    noise_source = gen(4)   # ours draws one noise per step but the last, and none at eta = 0

    def noises(k: int, t: int) -> dict:
        last = k == steps - 1
        noise = torch.zeros(SHAPE) if last else torch.randn(SHAPE, generator=noise_source, dtype=torch.float64)
        return {"variance_noise": noise.double()}

    theirs = diffusers_loop(scheduler, toy_model, x_T, noises if eta > 0 else None, eta=eta)
    assert_close(ours, theirs, 1e-10)


# ---------------------------------------------------------------------------------- DPM-Solver++
def dpm_scheduler(schedule: dk.Schedule, order: int):
    return schedulers.DPMSolverMultistepScheduler(
        num_train_timesteps=schedule.T, trained_betas=schedule.betas.tolist(), algorithm_type="dpmsolver++",
        solver_order=order, solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero",
        prediction_type="epsilon", thresholding=False)


@QUIET_NUMPY
@pytest.mark.parametrize("steps", [8, 20])
def test_dpmpp2m_trajectory_equals_diffusers(steps):
    process = dk.GaussianDiffusion(LINEAR)
    scheduler = dpm_scheduler(LINEAR, 2)
    visited = subsequence(process, steps, "logsnr")
    scheduler.set_timesteps(timesteps=visited[::-1].tolist())
    x_T = torch.randn(SHAPE, generator=gen(5))
    ours = sample(process, toy_model, None, "dpmpp2m", steps, x_T=x_T, progress=False, grid="logsnr")
    theirs = diffusers_loop(scheduler, toy_model, x_T)
    assert_close(ours, theirs, 1e-4)


@QUIET_NUMPY
def test_dpmpp3m_is_closer_than_diffusers_3m_to_the_exact_flow():
    """Ours and diffusers' DPM-Solver++(3M) differ only in the third-order term (ours is the exact
    Taylor term, theirs half of it). Against the exact probability-flow map of Gaussian data,
    ours is the more accurate; the two agree exactly while the order is at most 2."""
    mu = torch.tensor([0.5, -1.0, 0.2])
    sd = torch.tensor([0.25, 1.0, 0.5])
    oracle = gaussian_oracle(LINEAR, mu, sd)
    process = dk.GaussianDiffusion(LINEAR)
    x_T = torch.randn(256, 3, generator=gen(6), dtype=torch.float64)
    errors = {}
    for steps in (3, 50):
        visited = subsequence(process, steps, "logsnr")
        ab = LINEAR.alpha_bar
        a_T, a_0 = float(ab[visited[-1]]), float(ab[visited[0]])
        # The exact flow keeps each dimension's z-score; then the last step is E[x_0 | x_{tau_0}].
        z = (x_T - math.sqrt(a_T) * mu) / torch.sqrt(a_T * sd**2 + 1 - a_T)
        x_first = math.sqrt(a_0) * mu + torch.sqrt(a_0 * sd**2 + 1 - a_0) * z
        exact = mu + math.sqrt(a_0) * sd**2 * (x_first - math.sqrt(a_0) * mu) / (a_0 * sd**2 + 1 - a_0)
        ours = sample(process, oracle, None, "dpmpp3m", steps, x_T=x_T, progress=False, grid="logsnr")
        scheduler = dpm_scheduler(LINEAR, 3)
        scheduler.set_timesteps(timesteps=visited[::-1].tolist())
        theirs = diffusers_loop(scheduler, oracle, x_T.float()).double()
        errors[steps] = [float(((r - exact) / sd).pow(2).mean().sqrt()) for r in (ours, theirs)]
        if steps == 3:   # orders 1, 2, 1: the same solver
            assert_close(ours, theirs, 1e-4)
    ours_50, theirs_50 = errors[50]
    assert ours_50 < theirs_50 / 3, errors
