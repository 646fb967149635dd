"""Progressive distillation (Salimans & Ho 2022) against exact oracles on Gaussian data.

For x_0 ~ N(mu, s^2) the denoiser is exact and every DDIM step is affine, so the optimal student
of each round is known in closed form: the objective's own target x_tilde(x_hat, sigma), which is
deterministic given x_hat. The tests: the objective's loss vanishes at that student; one DDIM step
of it lands exactly where two teacher steps do, so halving 8 -> 4 -> 2 -> 1 keeps the sampler's
law (the same x_T gives the same sample); and a small network trained one round from scratch
reproduces its teacher's law."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

import ddpmkit as dk
from ddpmkit.core.consistency import gaussian_denoiser
from ddpmkit.sampling.grids import sigma_grid
from ddpmkit.training.progressive import PD_GRID, ProgressiveObjective, check_power_of_two, progressive_rounds

MU, SD = 0.3, 0.5
PROCESS = dk.GaussianDiffusion(dk.Schedule.named("cosine", 1000), prediction="v")


def v_network(D):
    """The v-prediction network of the chain whose denoiser is ``D(x_hat, sigma)``:
    v = (a x_t - x_0) / s with a = sqrt(alpha_bar(t)), s = sqrt(1 - alpha_bar(t)), x_hat = x_t / a."""

    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = PROCESS.alpha_bar_on(t, like=x_t).double().reshape(-1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        x0 = D(x_t.double() / a, (s / a).reshape(-1))
        return ((a * x_t.double() - x0) / s).to(x_t.dtype)

    return model


def exact_teacher(x_hat, sigma, **cond):
    return gaussian_denoiser(x_hat, sigma, MU, SD)


def halved(D, n: int):
    """The exact student of ``n`` steps of the teacher D of 2n steps: at its level sigma_{2k}, the
    x_0 whose one DDIM step lands on the teacher's two (the objective's target, written out)."""
    levels = sigma_grid(PROCESS, 2 * n, PD_GRID)[::-1].copy()   # 0, sigma_1, ..., sigma_2n

    def student(x_hat, sigma, **cond):
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        k = torch.from_numpy(np.abs(levels[None, :] - sigma.numpy()[:, None]).argmin(axis=1))
        hi, mid, end = (torch.from_numpy(levels[j]).reshape(-1, 1) for j in (k, k - 1, k - 2))
        x_hat = x_hat.double()
        d = D(x_hat, hi.reshape(-1))
        x_mid = d + mid / hi * (x_hat - d)
        d = D(x_mid, mid.reshape(-1))
        x_end = d + end / mid * (x_mid - d)
        ratio = end / hi
        return (x_end - ratio * x_hat) / (1 - ratio)

    return student


def ddim(D, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """DDIM (eta = 0) on the trailing grid of ``steps``, from x_T ~ N(0, I) at the chain's top."""
    return dk.sample(PROCESS, v_network(D), None, "ddim", steps=steps, grid=PD_GRID, x_T=x_T.float(), progress=False)


def test_rounds_and_powers_of_two():
    assert progressive_rounds(64, 1) == [32, 16, 8, 4, 2, 1] and progressive_rounds(8, 4) == [4]
    for bad in (3, 0, 6, True):
        with pytest.raises(ValueError, match="power of two"):
            check_power_of_two("--steps", bad)


def test_loss_vanishes_at_the_exact_student():
    """The target is a deterministic function of x_hat: regressing on it has zero loss at the
    optimum, up to float32 rounding (|x_hat| reaches 1e5 at the top level, 20291 sigma): measured
    5e-8 against the teacher-as-student's 7e-3; bound 1e-4 of it."""
    objective = ProgressiveObjective(PROCESS, v_network(exact_teacher), [4], total=10)
    g = torch.Generator().manual_seed(0)
    part = objective.draw(0, 4000, g, torch.device("cpu"))
    part["x0"] = MU + SD * torch.randn(4000, 1, generator=g)
    part["noise"] = torch.randn(4000, 1, generator=g)
    at_optimum = objective.loss(v_network(halved(exact_teacher, 4)), part).mean().item()
    teacher_as_student = objective.loss(v_network(exact_teacher), part).mean().item()
    assert teacher_as_student > 1e-3 and at_optimum < 1e-4 * teacher_as_student, (at_optimum, teacher_as_student)


def test_each_halving_keeps_the_law():
    """64 -> 32 -> ... -> 1 steps: the same x_T gives the same sample in every round (the halving is
    exact), so the 1-step student has the 64-step teacher's law, the data's up to DDIM's own error
    (measured on this grid: sd 0.409 at 8 steps, 0.452 at 16, 0.487 at 64, 0.496 at 256)."""
    x_T = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    D, reference = exact_teacher, ddim(exact_teacher, x_T, 64)
    for n in (32, 16, 8, 4, 2, 1):
        D = halved(D, n)
        x = ddim(D, x_T, n)
        # float32 sampling of the same affine maps: equal up to rounding (1e-5 of values ~ 1)
        torch.testing.assert_close(x, reference, rtol=1e-4, atol=2e-5)
    # SE of the mean 0.0035, of the sd 0.0025: 5 SE, plus DDIM-64's 0.013 on the sd
    assert abs(x.mean().item() - MU) < 0.0175 and abs(x.std().item() - SD) < 0.0125 + 0.013


class TinyV(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 32), nn.SiLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = (t.float() / 1000).reshape(-1, 1)
        return self.net(torch.cat([x, t, x * t], dim=1))


def test_training_one_round_reproduces_the_teacher_law():
    """Round 4 -> 2 from a random network (600 Adam steps, batch 256): the 2-step student's samples
    match the exact 4-step teacher's in mean and sd. Measured: |diff| 5e-4 (mean) and 5e-6 (sd);
    bound 0.01 (the untrained network misses by 0.25 in all)."""
    torch.manual_seed(0)
    net = TinyV()
    objective = ProgressiveObjective(PROCESS, v_network(exact_teacher), [2], total=600)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(2))
    untrained = dk.sample(PROCESS, net, None, "ddim", steps=2, grid=PD_GRID, x_T=x_T, progress=False)
    for step in range(600):
        part = objective.draw(step, 256, g, torch.device("cpu"))
        part["x0"] = MU + SD * torch.randn(256, 1, generator=g)
        part["noise"] = torch.randn(256, 1, generator=g)
        loss = objective.loss(net, part).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        student = dk.sample(PROCESS, net, None, "ddim", steps=2, grid=PD_GRID, x_T=x_T, progress=False)
    teacher = ddim(exact_teacher, x_T.double(), 4)
    gaps = (abs(student.mean() - teacher.mean()).item(), abs(student.std() - teacher.std()).item())
    before = (abs(untrained.mean() - teacher.mean()).item() + abs(untrained.std() - teacher.std()).item())
    print(gaps, before)
    assert before > 0.2 and max(gaps) < 0.01, (gaps, before)


def test_progressive_training_step_is_sync_free(tmp_path):
    """A progressive round on the one trainer reads the host no more for 2N steps than for N."""
    from ddpmkit.training.config import load_config
    from ddpmkit.training.train import Trainer
    from test_sync_free_training import reads_of_a_loop

    def make(steps: int) -> Trainer:
        cfg = load_config("digits", [f"out={tmp_path / f'run{steps}'}", "num_threads=1", "network.channels=8",
                                     "network.channel_mult=[1]", "network.attention_resolutions=[]",
                                     "network.mid_attention=false", "network.norm_groups=4", "optim.batch_size=12",
                                     "optim.micro_batch=6", "log_every=1000", "checkpoint_every=0", "sample_every=0",
                                     "diffusion.T=64", f"optim.steps={steps}"])
        teacher = cfg.build_network().eval().requires_grad_(False)
        objective = ProgressiveObjective(cfg.diffusion.build(), teacher, [4, 2], total=steps)
        return Trainer(cfg, progress=False, objective=objective)

    short, long = (reads_of_a_loop(make, n) for n in (4, 8))
    assert short == long, (short, long)
