"""Consistency models against exact oracles on Gaussian data.

For x_0 ~ N(mu, s^2) the probability-flow ODE in x_hat = x_0 + sigma eps carries the marginal
N(mu, s^2 + sigma^2) affinely, so the exact consistency function is
f(x, sigma) = mu + sqrt(s^2 + sigma_min^2) / sqrt(s^2 + sigma^2) (x - mu). The tests: the
boundary condition holds exactly for any network; one- and multistep samples of the exact f
reproduce the data's law; consistency distillation (exact teacher, Heun steps) and consistency
training (iCT, no teacher) of a small network approach the exact f (errors stated below); the
curriculum and the pair draws are the papers'."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import ddpmkit as dk
from ddpmkit.core.consistency import Consistency, gaussian_consistency, gaussian_denoiser
from ddpmkit.sampling.consistency import consistency
from ddpmkit.sampling.grids import continuous_sigmas
from ddpmkit.training.consistency import ConsistencyObjective, PairSchedule, ode_step

MU, SD = 0.3, 0.5
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def exact_network(process: Consistency, mean: float = MU, std: float = SD):
    """The network F whose f is the exact consistency function of N(mean, std^2) (EDM inputs):
    sigma = exp(4 c_noise), x_hat = x_in / c_in, F = (f_exact - c_skip x_hat) / c_out."""

    def model(x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        sigma = torch.exp(4.0 * c_noise.double()).reshape((-1,) + (1,) * (x_in.dim() - 1))
        c_in, c_skip, c_out, _ = process.preconditioning(sigma)
        x_hat = x_in.double() / c_in
        f = gaussian_consistency(x_hat, sigma.reshape(-1), mean, std, process.sigma_min)
        return ((f - c_skip * x_hat) / torch.where(c_out == 0, torch.ones_like(c_out), c_out)).to(x_in.dtype)

    return model


@pytest.mark.parametrize("prediction", ["edm", "v"])
def test_boundary_condition_is_exact_for_any_network(prediction):
    """c_skip(sigma_min) = 1 and c_out(sigma_min) = 0 are exact in floating point, and
    1 * x + 0 * F = x exactly for finite F: so equality, not a tolerance."""
    schedule = dk.Schedule.named("cosine", 1000) if prediction == "v" else None
    eps = 0.01 if prediction == "v" else SIGMA_MIN
    process = Consistency(sigma_min=eps, prediction=prediction, schedule=schedule)
    wild = lambda x, t: 1e6 * torch.randn_like(x) + t.reshape(-1, 1)   # noqa: E731
    f = process.denoiser(wild)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(f(x, eps), x)                                   # host path (a Python float)
    assert torch.equal(f(x, torch.full((16,), eps, dtype=torch.float32)), x)   # device path
    assert not torch.allclose(f(x, 2 * eps), x)                        # and the network matters above it


def test_coefficients_are_song_et_al():
    """c_skip = s_d^2 / ((sigma - eps)^2 + s_d^2), c_out = s_d (sigma - eps) / sqrt(s_d^2 + sigma^2)."""
    process = Consistency(sigma_data=0.5, sigma_min=SIGMA_MIN)
    for sigma in (0.01, 0.5, 3.0, 80.0):
        c_in, c_skip, c_out, c_noise = process.preconditioning(sigma)
        assert c_skip == pytest.approx(0.25 / ((sigma - SIGMA_MIN) ** 2 + 0.25), rel=1e-12)
        assert c_out == pytest.approx(0.5 * (sigma - SIGMA_MIN) / math.sqrt(0.25 + sigma**2), rel=1e-12)
        assert c_in == pytest.approx(1 / math.sqrt(sigma**2 + 0.25), rel=1e-12)
        assert c_noise == pytest.approx(math.log(sigma) / 4, rel=1e-12)


def test_one_step_and_multistep_samples_of_the_exact_f_have_the_data_law():
    """One call f(x_T, 80) and the multistep sampler (2 and 4 calls): mean and sd of N(0.3, 0.5^2)."""
    process = Consistency(sigma_data=SD, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    model = exact_network(process)
    n = 40_000
    for steps in (1, 2, 4):
        x = dk.sample(process, model, (n, 1), "consistency", steps=steps, seed=steps, progress=False)
        # standard errors 0.5 / sqrt(n) = 0.0025 (mean) and 0.5 / sqrt(2 n) = 0.0018 (sd); the prior
        # N(0, 80^2) misses the data mean by mu s / 80 = 0.0019 at most: 4 SE + that bias
        assert abs(x.mean().item() - MU) < 4 * 0.0025 + 0.002, steps
        assert abs(x.std().item() - math.sqrt(SD**2 + SIGMA_MIN**2)) < 4 * 0.0018, steps
    # one step of the sampler is f(x_T, sigma_max), which is also one Euler step from sigma_max to 0
    x_T = SIGMA_MAX * torch.randn(64, 1, generator=torch.Generator().manual_seed(9))
    one = dk.sample(process, model, None, "consistency", steps=1, x_T=x_T, progress=False)
    # x + (0 - sigma) / sigma (x - D) = D up to the rounding of |x| ~ 80 in float32 (80 * 6e-8 = 5e-6)
    torch.testing.assert_close(one, dk.sample(process, model, None, "euler", steps=1, x_T=x_T, grid="karras",
                                              progress=False), rtol=0, atol=1e-4)
    torch.testing.assert_close(one, gaussian_consistency(x_T, SIGMA_MAX, MU, SD, SIGMA_MIN), rtol=1e-5, atol=1e-6)


def test_sampler_skips_the_call_at_the_boundary():
    calls = []

    def D(x, sigma, **cond):
        calls.append(sigma)
        return torch.zeros_like(x)

    D.sigma_min = 0.002
    consistency(D, torch.ones(2, 1), [80.0, 1.0, 0.002, 0.0])
    assert calls == [80.0, 1.0]   # f(x, sigma_min) = x needs no network


class SmallNet(nn.Module):
    """F(c_in x, c_noise): a two-layer SiLU network of (x_in, c_noise, x_in c_noise)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1).to(x.dtype)
        return self.net(torch.cat([x, t, x * t], dim=1))


def _train(objective: ConsistencyObjective, steps: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = SmallNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for group in opt.param_groups:   # cosine decay: the last steps average the noise out
            group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        part = objective.draw(step, 256, gen, torch.device("cpu"))
        part["x0"] = MU + SD * torch.randn(256, 1, generator=gen)
        part["noise"] = torch.randn(256, 1, generator=gen)
        loss = objective.loss(net, part).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def _error(process: Consistency, net: nn.Module) -> float:
    """RMS of f_theta - f over the marginals at 12 Karras levels in [sigma_min, 80], relative to sd."""
    f = process.denoiser(net)
    gen = torch.Generator().manual_seed(123)
    errors = []
    with torch.no_grad():
        for sigma in continuous_sigmas(process, 12, "karras")[:-1]:
            x = MU + math.sqrt(SD**2 + sigma**2) * torch.randn(2000, 1, generator=gen)
            errors.append((f(x, float(sigma)) - gaussian_consistency(x, float(sigma), MU, SD, SIGMA_MIN)).square().mean())
    return math.sqrt(torch.stack(errors).mean().item()) / SD


def test_consistency_distillation_and_training_approach_the_exact_function():
    """CD from the exact Gaussian denoiser with Heun steps, and iCT from the data alone, both on iCT's
    curriculum (10 -> 1280 levels, lognormal pairs, pseudo-Huber, no EMA). Measured (seed 0, 1500
    steps, batch 256), relative RMS error of f_theta against the exact f over 12 levels: CD 0.032,
    CT 0.031 (untrained: 0.91); bounds 2x. On Song et al.'s fixed 18 levels CD reaches only 0.073:
    its fixed point, the teacher's Heun solution on 18 levels, is itself 5.5% off the exact f at
    sigma >= 2 (the composed Heun maps, in closed form), and on a fixed 80 levels 0.086 (the
    boundary condition travels one level per update): hence the curriculum for CD too."""
    process = Consistency(sigma_data=SD, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    teacher = lambda x, sigma, **c: gaussian_denoiser(x, sigma, MU, SD)   # noqa: E731
    cd_pairs = PairSchedule("ict", SIGMA_MIN, SIGMA_MAX, 1500, -1.1, 2.0)
    cd = _train(ConsistencyObjective(process, cd_pairs, "cd", teacher, "heun"), 1500)
    ct_pairs = PairSchedule("ict", SIGMA_MIN, SIGMA_MAX, 1500, -1.1, 2.0)
    ct = _train(ConsistencyObjective(process, ct_pairs, "ct"), 1500)
    errors = {"untrained": _error(process, SmallNet()), "cd": _error(process, cd), "ct": _error(process, ct)}
    print(errors)
    assert errors["untrained"] > 0.3
    assert errors["cd"] < 0.065, errors
    assert errors["ct"] < 0.065, errors


def test_heun_step_of_the_exact_denoiser_follows_the_affine_ode():
    """One Heun step of the exact Gaussian D lands within O(h^3) of the exact ODE map."""
    x = MU + math.sqrt(SD**2 + 1.0) * torch.randn(1000, 1, generator=torch.Generator().manual_seed(1))
    D = lambda x, sigma, **c: gaussian_denoiser(x, sigma, MU, SD)   # noqa: E731
    hi, lo = torch.full((1000,), 1.0), torch.full((1000,), 0.9)
    exact = MU + math.sqrt(SD**2 + 0.81) / math.sqrt(SD**2 + 1.0) * (x - MU)
    # local errors O(h^2) and O(h^3) for h = 0.1: measured 3.8e-3 (Euler) and 3.3e-4 (Heun); bounds 1.5x
    assert (ode_step("euler", D, x, hi, lo) - exact).abs().max() < 6e-3
    assert (ode_step("heun", D, x, hi, lo) - exact).abs().max() < 5e-4


def test_ict_curriculum_and_lognormal_pairs():
    pairs = PairSchedule("ict", SIGMA_MIN, SIGMA_MAX, 8000, -1.1, 2.0)
    # N(k) = min(10 * 2^floor(k / 1000), 1280) + 1: eight stages of K / (log2(128) + 1) = 1000 steps
    assert [pairs.levels_at(k) for k in (0, 999, 1000, 2500, 7999, 10**6)] == [11, 11, 21, 41, 1281, 1281]
    lo, hi = pairs.draw(0, 200_000, torch.Generator().manual_seed(0), torch.device("cpu"))
    levels = np.sort(np.unique(np.concatenate([lo.numpy(), hi.numpy()])))
    assert len(levels) == 11 and levels[0] == pytest.approx(SIGMA_MIN) and levels[-1] == pytest.approx(SIGMA_MAX)
    # index i drawn with the lognormal mass of [sigma_i, sigma_{i+1}] (iCT sec. 3.5)
    cdf = np.array([0.5 * (1 + math.erf((math.log(s) + 1.1) / (2.0 * math.sqrt(2)))) for s in levels])
    expected = np.diff(cdf) / (cdf[-1] - cdf[0])
    counts = np.array([(lo.numpy() == np.float32(s)).mean() for s in levels[:-1]])
    assert np.abs(counts - expected).max() < 4 * math.sqrt(0.25 / 200_000)   # 4 binomial SE at p = 1/2


def test_ect_pairs_shrink_dt_to_zero():
    pairs = PairSchedule("ect", SIGMA_MIN, SIGMA_MAX, 800, -1.1, 2.0)
    gen = torch.Generator().manual_seed(0)
    lo, hi = pairs.draw(0, 1000, gen, torch.device("cpu"))
    assert torch.all(lo == SIGMA_MIN)            # stage 0: dt / sigma = n(sigma) >= 1, the target is denoising
    ratios = []
    for stage in range(1, 8):
        lo, hi = pairs.draw(stage * 100, 1000, gen, torch.device("cpu"))
        inside = lo > SIGMA_MIN
        ratios.append(((hi - lo) / hi)[inside].max().item())
        # dt / sigma = (1 + 8 sigmoid(-sigma)) / 2^stage <= 9 / 2^stage
        assert ratios[-1] <= 9 / 2**stage + 1e-6
    assert ratios[-1] < 0.08 and torch.all(lo < hi)


def test_consistency_training_step_is_sync_free(tmp_path):
    """The iCT step (the digits-ct preset through the one trainer) reads the host no more for 2N
    steps than for N: the level tables are made on the host and cast, never read back."""
    from ddpmkit.training.config import load_config
    from ddpmkit.training.train import Trainer
    from test_sync_free_training import reads_of_a_loop

    def make(steps: int) -> Trainer:
        cfg = load_config("digits-ct", [f"out={tmp_path / f'run{steps}'}", "num_threads=1", "network.channels=8",
                                        "network.channel_mult=[1]", "network.attention_resolutions=[]",
                                        "network.mid_attention=false", "network.norm_groups=4", "optim.batch_size=12",
                                        "optim.micro_batch=6", "log_every=1000", "checkpoint_every=0", "sample_every=0",
                                        f"optim.steps={steps}"])
        return Trainer(cfg, progress=False)

    short, long = (reads_of_a_loop(make, n) for n in (4, 8))
    assert short == long, (short, long)
