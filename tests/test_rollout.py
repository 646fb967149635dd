"""k-step distillation on the student's own states (``RectifiedFlow(rollout=True)``, training/rollout.py).

The rolled state of level j is the k-step Euler sampler's own state after j steps; at the exact
2-rectified velocity it is the pair's interpolant, so the loss is the plain k-step loss. A student
whose first step is wrong learns, with rollout, a second step that lands on the data from where the
first one really stands; trained on the interpolant it does not. The CLI and the trainer pick it
up from the config (``diffusion.rollout``)."""
from __future__ import annotations

import math

import pytest
import torch
from test_kstep_distill_cli import SETTINGS, STUDENT, runs  # noqa: F401  (the module fixture)
from test_rectified_flow import MU, SD
from test_reflow import straight_network

import ddpmkit as dk
from ddpmkit.cli.main import main
from ddpmkit.core.flow import flow_sigmas
from ddpmkit.runs import load_checkpoint
from ddpmkit.sampling import SampleOptions
from ddpmkit.training.config import DiffusionConfig
from ddpmkit.training.rollout import RolloutObjective

OPTS = SampleOptions(progress=False)


def pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact teacher's straight pairs (z, MU + SD z) in float64 (tests/test_reflow.py)."""
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return z, MU + SD * z


def part_of(process: dk.RectifiedFlow, z: torch.Tensor, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    draws = process.draw_levels(len(z), torch.Generator().manual_seed(seed), "cpu", torch.float64)
    return {**draws, "x0": x, "noise": z}


def test_rollout_needs_k_step_training_and_says_so_in_one_line():
    for kwargs in ({}, {"time_sampling": "start"}, {"time_sampling": "steps", "distill_steps": 1}):
        with pytest.raises(ValueError, match="rollout trains the later steps of a k-step student"):
            dk.RectifiedFlow(rollout=True, **kwargs)
    with pytest.raises(ValueError, match="rollout must be true or false"):
        dk.RectifiedFlow(time_sampling="steps", distill_steps=2, rollout=1)
    with pytest.raises(ValueError, match="needs a process with rollout=True"):
        RolloutObjective(dk.RectifiedFlow(time_sampling="steps", distill_steps=2))
    built = DiffusionConfig(process="flow", prediction="v", time_sampling="steps", distill_steps=2, rollout=True).build()
    assert built.rollout and "level" in built.draw_levels(3, None, "cpu")


def test_the_rollout_draws_the_same_times_as_the_plain_k_step_loss():
    """``rollout`` adds each example's level index to the same one draw: a run keeps its times."""
    plain = dk.RectifiedFlow(time_sampling="steps", distill_steps=3)
    rolled = dk.RectifiedFlow(time_sampling="steps", distill_steps=3, rollout=True)
    a = plain.draw_levels(500, torch.Generator().manual_seed(4), "cpu", torch.float64)
    b = rolled.draw_levels(500, torch.Generator().manual_seed(4), "cpu", torch.float64)
    assert torch.equal(a["t"], b["t"]) and torch.equal(a["sigma"], b["sigma"])
    levels = torch.from_numpy(flow_sigmas(rolled, 3)[:-1])
    assert torch.equal(b["sigma"], levels[b["level"]])   # copies of the host levels: exact


def wavy_network(process: dk.RectifiedFlow):
    """A fixed nonlinear velocity, wrong for every pair: the rolled states leave the interpolant."""

    def net(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        t = (time.double() / process.time_scale).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.tanh(2 * x.double()) * (1 + t) - 0.4 * t

    return net


def test_the_rolled_state_is_the_euler_samplers_own_state():
    """Level j's effective noise puts x0 + sigma_j eps_j where j Euler steps of the network carry
    the pair's start: in x coordinates (Liu et al.'s Euler), x_{t'} = x_t + (t' - t) v(x_t, t) from
    x_{t_0} = (1 - t_0) x + t_0 z, and x_hat = x_t / (1 - t); level 0 keeps z exactly."""
    k = 3
    process = dk.RectifiedFlow(time_sampling="steps", distill_steps=k, rollout=True)
    z, x = pairs(600, 1)
    part = part_of(process, z, x, 2)
    net = wavy_network(process)
    eps = RolloutObjective(process).rolled_noise(net, x, z, part["level"], part["sigma"])
    times = [float(s / (1 + s)) for s in flow_sigmas(process, k)]
    for j in range(k):
        mine = part["level"] == j
        assert int(mine.sum()) > 100
        x_t = (1 - times[0]) * x[mine] + times[0] * z[mine]
        for i in range(j):
            x_t = x_t + (times[i + 1] - times[i]) * net(x_t, torch.full((len(x_t),), process.time_scale * times[i], dtype=torch.float64))
        # float64: x_hat vs x coordinates and the (1 + sigma) divisions, ~1e-15 relative on |x_hat| < 1e4
        torch.testing.assert_close(x[mine] + part["sigma"][mine, None] * eps[mine], x_t / (1 - times[j]),
                                   rtol=1e-10, atol=1e-10)
    assert torch.equal(eps[part["level"] == 0], z[part["level"] == 0])
    assert float((eps - z).abs().max()) > 0.1   # the wrong network's states are off the interpolant


@pytest.mark.parametrize("k", [2, 4])
def test_at_the_exact_velocity_rollout_is_the_plain_k_step_loss(k):
    """The exact 2-rectified velocity moves each state along its straight pair: the rolled states are
    the interpolants, and both losses vanish."""
    process = dk.RectifiedFlow(time_sampling="steps", distill_steps=k, rollout=True)
    z, x = pairs(2000, 3)
    part = part_of(process, z, x, 0)
    net = straight_network(process)
    eps = RolloutObjective(process).rolled_noise(net, x, z, part["level"], part["sigma"])
    # float64 rounding through up to k - 1 steps, then divided by sigma_j >= 1/3: ~1e-13
    torch.testing.assert_close(eps, z, rtol=0, atol=1e-10)
    assert float(RolloutObjective(process).loss(net, part).max()) < 1e-18


class FrozenFirstStep(torch.nn.Module):
    """v = 0 at the first level (t_max: a first step that does not move), a trainable affine
    v = a x_t + b at the second (t = 0.5)."""

    def __init__(self, process: dk.RectifiedFlow):
        super().__init__()
        self.scale = process.time_scale
        self.a = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        t = (time.double() / self.scale).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.where(t > 0.75, torch.zeros_like(x), self.a * x + self.b)


def fit(loss_of, net: torch.nn.Module) -> float:
    """Minimise a quadratic loss in (a, b) to convergence (L-BFGS, strong Wolfe)."""
    opt = torch.optim.LBFGS(net.parameters(), lr=1, max_iter=200, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_of(net)
        loss.backward()
        return loss

    opt.step(closure)
    return float(loss_of(net).detach())


def test_rollout_trains_the_second_step_where_the_first_one_lands():
    """With a first step that stays at x_t = 0.001 x + 0.999 z, the second step must carry that point
    to x = MU + SD z: affine in it, so rollout fits it exactly and two Euler steps from fresh noise
    reproduce N(MU, SD^2). Trained on the interpolant 0.5 (x + z) instead, the same second step is
    exact there and wrong where the sampler stands: std 1 - (1 - SD) / (1 + SD) = 2/3, mean 0.2."""
    process = dk.RectifiedFlow(time_sampling="steps", distill_steps=2, rollout=True)
    z, x = pairs(4000, 5)
    part = part_of(process, z, x, 6)
    objective = RolloutObjective(process)
    rolled, plain = FrozenFirstStep(process), FrozenFirstStep(process)
    second = part["level"] == 1   # the frozen first level's loss does not depend on (a, b)
    # quadratic in (a, b) with an exact minimiser: float64 rounding of ~1e-13 in x_hat, squared
    assert fit(lambda net: objective.loss(net, part)[second].mean(), rolled) < 1e-16
    fit(lambda net: process.loss_terms(net, x, draws=part)["loss"][second].mean(), plain)
    z_new = torch.randn(4000, 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    start = process.prior_std * z_new / process.scale(process.t_max)
    with torch.no_grad():
        two = {name: dk.samplers.euler(process.denoiser(net), start, flow_sigmas(process, 2), OPTS)
               for name, net in (("rolled", rolled), ("plain", plain))}
    # sampling starts from t_max z, training from t_max z + 0.001 x: the dropped share, times the
    # second step's gain (about 0.5), moves a sample by about 5e-4 |x|
    torch.testing.assert_close(two["rolled"], MU + SD * z_new, rtol=0, atol=2e-3)
    assert abs(float(two["plain"].std()) - 2 / 3) < 0.03 and abs(float(two["plain"].mean()) - 0.2) < 0.03
    n = len(z_new)   # the plain student is many standard errors from the data's law
    assert abs(float(two["plain"].std()) - SD) > 20 * SD / math.sqrt(2 * n)


def test_the_cli_trains_a_rollout_student_that_resumes(runs, tmp_path):  # noqa: F811
    out = tmp_path / "roll"
    args = ["distill", str(runs / "rf2"), *SETTINGS, "--method", "reflow", "--k-step", "--steps", "2", "--rollout",
            "--out", str(out), *STUDENT]
    assert main([*args, "--max-steps", "2"]) == 0
    run = load_checkpoint(out)
    assert run.process.rollout and run.config.diffusion.rollout is True and run.state["step"] == 2
    assert main([*args, "--resume"]) == 0 and load_checkpoint(out).state["step"] == 4


@pytest.mark.parametrize("args, message", [
    (["--method", "reflow", "--rollout", "--steps", "2"], "--rollout trains the later steps of a k-step student"),
    (["--method", "reflow", "--k-step", "--rollout", "--steps", "1"], "--rollout trains the later steps"),
    (["--method", "progressive", "--rollout", "--steps", "2"], "--rollout trains the later steps"),
])
def test_bad_rollout_combinations_are_one_line(runs, tmp_path, capsys, args, message):  # noqa: F811
    assert main(["distill", str(runs / "teacher"), "--out", str(tmp_path / "bad"), "--quiet", "--device", "cpu",
                 *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
