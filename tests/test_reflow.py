"""Reflow (Liu et al. 2022, sec. 2.2) on the exact Gaussian teacher, and its trainer hook.

The exact rectified flow of N(MU, SD^2) data moves the prior quantile z along the curved path
(1 - t) MU + sqrt((1 - t)^2 SD^2 + t^2) z, ending at MU + SD z: its (z, ODE(z)) pairs are that
map. On them the straight interpolation x_t = (1 - t)(MU + SD z) + t z determines z, so the
2-rectified flow's velocity E[z - x | x_t] = (1 - SD) z - MU is constant along each path
(straight) and one Euler step from t = 1 returns MU + SD z: the data's law. Independent pairs
(fresh noise) keep Var(v | x_t) > 0 and one step collapses to the posterior mean.
"""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from test_rectified_flow import MU, SD, exact_network

import ddpmkit as dk
from ddpmkit.core.flow import flow_sigmas, flow_times
from ddpmkit.data import ArrayDataset
from ddpmkit.runs import load_checkpoint
from ddpmkit.sampling import SampleOptions
from ddpmkit.training.config import load_config
from ddpmkit.training.reflow import reflow, teacher_pairs
from ddpmkit.training.train import Trainer, train


def exact_pairs(n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    process = dk.RectifiedFlow()
    z, x = teacher_pairs(process, exact_network(process), n, (1,), sampler="heun", sampler_steps=200, seed=seed,
                         progress=False)
    return z.double(), x.double()


def test_the_exact_teachers_pairs_are_the_monotone_map():
    z, x = exact_pairs()
    # Heun at 200 steps uniform in t (O(h^2); 1e-4 measured) plus float32 storage of the pairs
    torch.testing.assert_close(x, MU + SD * z, rtol=0, atol=5e-4)


def regression_residual(z: torch.Tensor, x: torch.Tensor, t: float) -> tuple[float, torch.Tensor]:
    """The flow-matching loss of the best affine velocity in x_t at time t (the exact minimiser here,
    as every conditional expectation of jointly Gaussian variables is affine), and its coefficients."""
    x_t = (1 - t) * x + t * z
    design = torch.cat([x_t, torch.ones_like(x_t)], dim=1)
    coef = torch.linalg.lstsq(design, z - x).solution
    return float(((design @ coef - (z - x)) ** 2).mean()), coef


def test_reflow_pairs_give_straight_paths_and_one_step_reproduces_the_data():
    z, x = exact_pairs()
    fresh = torch.randn(z.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for t in (0.2, 0.5, 0.9):
        straight, _ = regression_residual(z, x, t)
        crossing, _ = regression_residual(fresh, x, t)
        # independent pairs: Var(v | x_t) = 1 + SD^2 - (t - (1 - t) SD^2)^2 / V_t, at least 0.4 here
        v_t = (1 - t) ** 2 * SD**2 + t**2
        assert crossing == pytest.approx(1 + SD**2 - (t - (1 - t) * SD**2) ** 2 / v_t, rel=0.1)
        assert straight < 1e-6   # the pairs' map is exact to ~1e-4: a residual of ~1e-8
    _, coef = regression_residual(z, x, 1.0)    # the 2-rectified flow's velocity at t = 1: v = a z + b
    z_new = torch.randn(4000, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    one_step = z_new - (torch.cat([z_new, torch.ones_like(z_new)], dim=1) @ coef)
    mean, std = float(one_step.mean()), float(one_step.std())
    n = len(z_new)
    assert abs(mean - MU) < 4.5 * SD / math.sqrt(n) and abs(std - SD) < 4.5 * SD / math.sqrt(2 * n), (mean, std)


# ---------------------------------------------------------------------- the trainer's paired noise
def tiny_config(tmp_path, name: str, steps: int, *extra: str):
    return load_config("toy2d-flow", [f"out={tmp_path / name}", "num_threads=1", "data.n=400", "network.hidden=64",
                                      "network.depth=2", f"optim.steps={steps}", "optim.batch_size=200",
                                      "log_every=1000", "sample_every=0", "checkpoint_every=0", "ema_rates=[0.99]",
                                      *extra])


def test_the_trainer_uses_each_examples_own_noise(tmp_path):
    z = torch.randn(400, 1, generator=torch.Generator().manual_seed(0))
    data = ArrayDataset(x=2 * z + 1, y=None, levels=None, num_classes=None, name="pairs")
    trainer = Trainer(tiny_config(tmp_path, "hook", 1), progress=False, dataset=data, paired_noise=z)
    batch = trainer._global_batch()
    torch.testing.assert_close(batch["x0"], 2 * batch["noise"] + 1, rtol=0, atol=1e-6)   # float32 rounding
    with pytest.raises(ValueError, match="paired_noise"):
        Trainer(tiny_config(tmp_path, "bad", 1), progress=False, dataset=data, paired_noise=z[:10])


def test_a_trained_2_rectified_flow_samples_in_one_step(tmp_path):
    """A small MLP trained on the exact teacher's pairs samples N(MU, SD^2) in one Euler step; the same
    network trained on the same data with fresh noise (a 1-rectified flow) cannot (its one step
    collapses towards the mean)."""
    z, x = exact_pairs(4000, seed=1)
    data = ArrayDataset(x=x.float(), y=None, levels=None, num_classes=None, name="pairs")
    z_new = torch.randn(4000, 1, generator=torch.Generator().manual_seed(5))
    stds = {}
    for name, noise in (("reflow", z.float()), ("fresh", None)):
        result = Trainer(tiny_config(tmp_path, name, 400), progress=False, dataset=data,
                         paired_noise=noise).run()
        process = result.process
        one = dk.samplers.euler(process.denoiser(result.ema_model), process.prior_std * z_new / process.scale(process.t_max),
                                flow_sigmas(process, 1), SampleOptions(progress=False))
        stds[name] = float(one.std())
        if name == "reflow":   # training error of a 400-step MLP: a few hundredths (tolerance 0.05)
            assert abs(float(one.mean()) - MU) < 0.05 and abs(stds[name] - SD) < 0.05, (float(one.mean()), stds[name])
    assert stds["fresh"] < 0.6 * SD, stds   # the 1-rectified flow's step lands near the posterior mean


def test_reflow_end_to_end_from_a_teacher_run(tmp_path):
    teacher = train(tiny_config(tmp_path, "teacher", 20), progress=False)
    result = reflow(teacher.run_dir, tmp_path / "student", pairs=300, sampler="euler", sampler_steps=4, steps=3,
                    batch_size=150, progress=False)
    stored = load_file(str(tmp_path / "student" / "pairs.safetensors"))
    assert stored["z"].shape == stored["x"].shape == (300, 2)
    loaded = load_checkpoint(tmp_path / "student")
    assert isinstance(loaded.process, dk.RectifiedFlow) and loaded.config.name == "toy2d-flow-reflow"
    assert loaded.config.data == teacher.config.data and result.step == 3
    with pytest.raises(ValueError, match="deterministic"):
        reflow(teacher.run_dir, tmp_path / "other", sampler="sde", progress=False)


# ---------------------------------------------------------------------- one-step distillation (k = 1)
def start_only_network(process: dk.RectifiedFlow):
    """The exact velocity of the straight pairs (z, MU + SD z) at t_max only, whatever time it is given:
    x_t = (1 - t) MU + ((1 - t) SD + t) z determines z, and v = z - x = (1 - SD) z - MU, here with
    t = t_max's coefficients (wrong at every other t)."""
    t = process.t_max

    def net(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        z = (x.double() - (1 - t) * MU) / ((1 - t) * SD + t)
        return (1 - SD) * z - MU

    return net


def test_one_step_distillation_trains_at_t_max_where_v_is_z_minus_x(tmp_path):
    """Liu et al. 2022, sec. 2.3 (k = 1): ``time_sampling="start"`` draws every training time at t_max
    (exactly), its loss vanishes at the exact v = z - x of the pairs at t_max alone (the uniform
    times' loss of the same network does not), and one Euler step from the trained point
    x_t = (1 - t_max) x + t_max z returns x."""
    process = dk.RectifiedFlow(time_sampling="start")
    draws = process.draw_levels(500, torch.Generator().manual_seed(0), "cpu", torch.float64)
    assert bool((draws["t"] == process.t_max).all())   # a fill, no arithmetic: exact
    torch.testing.assert_close(draws["sigma"], torch.full((500,), process.t_max / (1 - process.t_max),
                                                          dtype=torch.float64), rtol=1e-12, atol=0)
    z = torch.randn(500, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = MU + SD * z   # the exact teacher's pairs (the exact map; exact_pairs reaches it to 5e-4)
    net = start_only_network(process)
    loss = process.loss_terms(net, x, draws={**draws, "noise": z})["loss"]
    # float64 rounding of x_hat = x + 999 z and of its division by 1000: ~1e-13 each, squared
    assert float(loss.max()) < 1e-20, float(loss.max())
    uniform = dk.RectifiedFlow()
    other = uniform.draw_levels(500, torch.Generator().manual_seed(0), "cpu", torch.float64)
    # the same network away from t_max: wrong (0.015 measured), so "start" is what makes the loss vanish
    assert float(uniform.loss_terms(net, x, draws={**other, "noise": z})["loss"].mean()) > 1e-3
    x_t = (1 - process.t_max) * x + process.t_max * z
    one = dk.samplers.euler(process.denoiser(net), x_t / process.scale(process.t_max), flow_sigmas(process, 1),
                            SampleOptions(progress=False))
    torch.testing.assert_close(one, x, rtol=0, atol=1e-9)   # float64 rounding of x_t * 1000 / 1000
    # the trainer takes the process's draws: every time of a batch is t_max (float32)
    config = tiny_config(tmp_path, "start", 1, "diffusion.time_sampling=start")
    data = ArrayDataset(x=x.float().expand(-1, 2).contiguous(), y=None, levels=None, num_classes=None, name="pairs")
    batch = Trainer(config, progress=False, dataset=data, paired_noise=z.float().expand(-1, 2).contiguous())._global_batch()
    assert bool((batch["t"] == torch.tensor(process.t_max, dtype=torch.float32)).all())


# ---------------------------------------------------------------------- k-step distillation (any k)
def straight_network(process: dk.RectifiedFlow, only_at: tuple[float, ...] | None = None):
    """The exact 2-rectified flow of the straight pairs (z, MU + SD z) at every time: x_t = (1 - t) MU +
    ((1 - t) SD + t) z determines z, v = z - x = (1 - SD) z - MU. With ``only_at`` it is exact at those
    times alone (within 1e-6: the network sees float32 time) and off by 1 elsewhere."""

    def net(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        t = (time.double() / process.time_scale).reshape(-1, *([1] * (x.dim() - 1)))
        z = (x.double() - (1 - t) * MU) / ((1 - t) * SD + t)
        if only_at is None:
            return (1 - SD) * z - MU
        on_grid = torch.zeros_like(t, dtype=torch.bool)
        for level in only_at:
            on_grid |= (t - level).abs() < 1e-6
        return (1 - SD) * z - MU + (~on_grid).double()

    return net


@pytest.mark.parametrize("k", [2, 3, 5])
def test_k_step_draws_lie_on_the_euler_grid_with_uniform_frequencies(k):
    """Liu et al. 2022, sec. 2.3: the training times of ``time_sampling="steps"`` are the k calls of the
    k-step Euler sampler, t_j = t_max - j (t_max - t_min) / k, j = 0..k-1 (``flow_sigmas(process, k)`` but its final
    0), each drawn with probability 1 / k."""
    process = dk.RectifiedFlow(time_sampling="steps", distill_steps=k)
    n = 20000
    draws = process.draw_levels(n, torch.Generator().manual_seed(k), "cpu", torch.float64)
    sigmas = torch.from_numpy(flow_sigmas(process, k)[:-1])
    grid_t = sigmas / (1 + sigmas)
    # the draws are copies of the float64 host levels (no arithmetic): exact, the times flow_sigmas
    # converts (flow_times); t(sigma) = sigma / (1 + sigma) of its levels returns them to a few ulp
    levels = torch.sort(torch.unique(draws["t"]), descending=True).values
    assert torch.equal(levels, torch.from_numpy(flow_times(process.t_min, process.t_max, k)[:-1]))
    assert bool(torch.isin(draws["sigma"], sigmas).all())
    torch.testing.assert_close(levels, grid_t, rtol=1e-15, atol=0)
    counts = torch.stack([(draws["sigma"] == s).sum() for s in sigmas]).double()
    se = math.sqrt(n * (1 / k) * (1 - 1 / k))   # binomial(n, 1 / k) per level
    assert bool(((counts - n / k).abs() < 4 * se).all()), counts
    # the trainer's float32 draws are the same levels rounded once
    draws32 = process.draw_levels(n, torch.Generator().manual_seed(k), "cpu")
    assert bool(torch.isin(draws32["t"], levels.float()).all()) and bool(torch.isin(draws32["sigma"], sigmas.float()).all())


def test_k_step_with_k_1_is_start_and_bad_k_is_one_line():
    steps1 = dk.RectifiedFlow(time_sampling="steps", distill_steps=1).draw_levels(7, None, "cpu", torch.float64)
    start = dk.RectifiedFlow(time_sampling="start").draw_levels(7, None, "cpu", torch.float64)
    assert all(torch.equal(steps1[key], start[key]) for key in ("t", "sigma"))
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="distill_steps must be an integer >= 1"):
            dk.RectifiedFlow(time_sampling="steps", distill_steps=bad)
    with pytest.raises(ValueError, match="time_sampling='start' trains at t_max only"):
        dk.RectifiedFlow(time_sampling="start", distill_steps=2)


@pytest.mark.parametrize("k", [2, 4])
def test_k_step_loss_vanishes_at_the_exact_2rf_velocity_and_k_euler_steps_reproduce_the_data(k):
    """On the exact teacher's straight pairs the 2-rectified flow's velocity z - x is the k-step loss's
    zero; a velocity right at t_max only (the one-step student) is not; one exact only at the k grid
    times is, and k Euler steps of it carry each trained point x_t to x, and t_max z to N(MU, SD^2)."""
    process = dk.RectifiedFlow(time_sampling="steps", distill_steps=k)
    grid = tuple(float(s / (1 + s)) for s in flow_sigmas(process, k)[:-1])
    z = torch.randn(4000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = MU + SD * z
    draws = {**process.draw_levels(4000, torch.Generator().manual_seed(0), "cpu", torch.float64), "noise": z}
    for net in (straight_network(process), straight_network(process, only_at=grid)):
        # float64 rounding of x_hat = x + sigma z and of the (1 + sigma) divisions: ~1e-13, squared
        assert float(process.loss_terms(net, x, draws=draws)["loss"].max()) < 1e-20
    # the one-step student's velocity (exact at t_max only) misses the lower grid times: loss 0.03 measured
    assert float(process.loss_terms(start_only_network(process), x, draws=draws)["loss"].mean()) > 1e-3
    net = straight_network(process, only_at=grid)
    opts = SampleOptions(progress=False)
    x_t = (1 - process.t_max) * x + process.t_max * z
    k_steps = dk.samplers.euler(process.denoiser(net), x_t / process.scale(process.t_max), flow_sigmas(process, k), opts)
    torch.testing.assert_close(k_steps, x, rtol=0, atol=1e-9)   # float64 rounding of the steps
    # another step count calls the network off its grid (off by 1 there): k + 1 steps miss x by O(1)
    other = dk.samplers.euler(process.denoiser(net), x_t / process.scale(process.t_max), flow_sigmas(process, k + 1), opts)
    assert float((other - x).abs().mean()) > 0.1
    z_new = torch.randn(4000, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sample = dk.samplers.euler(process.denoiser(net), process.prior_std * z_new / process.scale(process.t_max),
                               flow_sigmas(process, k), opts)
    mean, std = float(sample.mean()), float(sample.std())
    n = len(z_new)   # the dropped 1e-3 x share at t_max biases by ~3e-4, well inside 4.5 SE (0.036, 0.025)
    assert abs(mean - MU) < 4.5 * SD / math.sqrt(n) and abs(std - SD) < 4.5 * SD / math.sqrt(2 * n), (mean, std)


def test_the_trainer_draws_k_step_times_from_its_noise_generator(tmp_path):
    """The trainer hands the process's k-step draws through: every time of a batch on the float32 grid,
    each level hit, and the same seed the same times."""
    z = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    data = ArrayDataset(x=MU + SD * z, y=None, levels=None, num_classes=None, name="pairs")
    config = tiny_config(tmp_path, "k3", 1, "diffusion.time_sampling=steps", "diffusion.distill_steps=3")
    batches = [Trainer(config, progress=False, dataset=data, paired_noise=z)._global_batch()["t"] for _ in range(2)]
    grid = torch.from_numpy(flow_times(dk.RectifiedFlow().t_min, dk.RectifiedFlow().t_max, 3)[:-1]).float()
    assert torch.equal(torch.sort(torch.unique(batches[0]), descending=True).values, grid)
    assert torch.equal(batches[0], batches[1])
