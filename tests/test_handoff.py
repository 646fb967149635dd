"""A hand-off to another model for the last step (``dk.sample(..., handoff=Handoff(...))``,
sampling/handoff.py), against closed forms on Gaussian data N(MU, SD^2).

The exact denoiser at level s is MU + SD^2 / (SD^2 + s^2) (x_hat - MU) in every process's x_hat, so
a student that knows only the mean (D = MU), stepped by Euler from sigma_0 to s and handed to an
exact teacher, gives MU + SD^2 / (SD^2 + s^2) (s / sigma_0) (x_hat_0 - MU): a law of known spread.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from oracles import gaussian_oracle
from test_continuous_processes import exact_network as exact_vp_network
from test_kstep_distill_cli import runs  # noqa: F401  (the module fixture: a tiny flow teacher and rf2)
from test_rectified_flow import MU, SD, exact_network
from test_sync_free_sampling import Net, count_host_reads

import ddpmkit as dk
from ddpmkit.cli.main import main
from ddpmkit.core.sde_vp import VP
from ddpmkit.runs import load_checkpoint
from ddpmkit.sampling import Handoff, HandoffDenoiser, SampleOptions, handoff_grid

N = 64
ROOT = Path(__file__).resolve().parents[1]


def mean_only(process: dk.RectifiedFlow):
    """A student that predicts x0 = MU whatever it sees (an x0-prediction flow)."""
    assert process.prediction == "x0"
    return lambda x, time: torch.full_like(x, MU, dtype=torch.float64)


def start(seed: int = 0) -> torch.Tensor:
    return torch.randn(N, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_a_mean_only_student_handed_to_an_exact_teacher_gives_the_closed_form():
    student = dk.RectifiedFlow(prediction="x0")
    teacher = dk.RectifiedFlow()
    z, s = start(), 0.3
    x_T = student.prior_std * z
    x = dk.sample(student, mean_only(student), None, "euler", 1, x_T=x_T, progress=False,
                  handoff=Handoff(teacher, exact_network(teacher), s))
    sigma_0 = float(student.sigma_max)
    x_hat_0 = x_T / float(student.scale(student.t_max))
    expected = MU + SD**2 / (SD**2 + s**2) * (s / sigma_0) * (x_hat_0 - MU)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-12)   # float64: a few roundings of O(1) numbers


def test_with_exact_models_the_hand_off_is_the_sampler_on_the_longer_grid():
    """Student and teacher both exact: the same samples as one model on the grid with s inserted,
    bit for bit (the same calls in the same order)."""
    flow = dk.RectifiedFlow()
    net = exact_network(flow)
    for sampler, steps in (("euler", 1), ("euler", 3), ("dpmpp2m", 2), ("unipc", 3)):
        plain = dk.sample(flow, net, None, sampler, steps, x_T=flow.prior_std * start(1), progress=False)
        grid = handoff_grid(dk.sampling.plan_sampling(flow, sampler, steps).sigmas, 0.05)
        longer = dk.sample(flow, net, None, sampler, grid=grid.tolist(), x_T=flow.prior_std * start(1), progress=False)
        handed = dk.sample(flow, net, None, sampler, steps, x_T=flow.prior_std * start(1), progress=False,
                           handoff=Handoff(flow, net, 0.05))
        assert torch.equal(handed, longer), sampler
        assert not torch.equal(handed, plain)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "sigmoid"])
def test_the_discrete_chain_hands_off_on_every_schedule(schedule):
    """A discrete student (its exact oracle) through ddim / dpmpp2m / unipc at 3 steps on the
    ``trailing`` grid (whose last level is not the chain's first step, as a progressive student's): the hand-off
    to itself is the sampler on the longer grid bit for bit, and an exact flow teacher's last step is
    the chain's own."""
    diffusion = dk.GaussianDiffusion(dk.Schedule.named(schedule, 1000))
    oracle = gaussian_oracle(diffusion.schedule, [MU], [SD])
    flow = dk.RectifiedFlow()
    x_T = start(3)
    for sampler in ("ddim", "dpmpp2m", "unipc"):
        grid = handoff_grid(dk.sampling.plan_sampling(diffusion, sampler, 3, "trailing").sigmas, 0.05)
        longer = dk.sample(diffusion, oracle, None, sampler, grid=grid.tolist(), x_T=x_T, progress=False)
        handed = dk.sample(diffusion, oracle, None, sampler, 3, x_T=x_T, progress=False, grid="trailing",
                           handoff=Handoff(diffusion, oracle, 0.05))
        assert torch.equal(handed, longer), (schedule, sampler)
        by_flow = dk.sample(diffusion, oracle, None, sampler, 3, x_T=x_T, progress=False, grid="trailing",
                            handoff=Handoff(flow, exact_network(flow), 0.05))
        # both teachers are exact at sigma = 0.05: float64 roundings of O(1) numbers (2e-16 measured)
        torch.testing.assert_close(by_flow, handed, rtol=0, atol=1e-12)


def test_a_teacher_of_another_process_serves_the_same_step():
    """The contract makes x_hat common to all processes: an exact VP teacher's step equals an exact
    flow teacher's to float64 rounding."""
    flow, vp = dk.RectifiedFlow(), VP()
    x_T = flow.prior_std * start(2)
    by_flow = dk.sample(flow, exact_network(flow), None, "euler", 2, x_T=x_T, progress=False,
                        handoff=Handoff(flow, exact_network(flow), 0.25))
    by_vp = dk.sample(flow, exact_network(flow), None, "euler", 2, x_T=x_T, progress=False,
                      handoff=Handoff(vp, exact_vp_network(vp), 0.25))
    torch.testing.assert_close(by_vp, by_flow, rtol=0, atol=1e-10)   # VP's alpha_bar in float64: ~1e-15 apart


def test_each_call_goes_to_its_model():
    calls: list[tuple[str, float]] = []

    def recording(name: str):
        def D(x, sigma, **cond):
            calls.append((name, sigma))
            return torch.zeros_like(x)
        return D

    D = HandoffDenoiser(recording("student"), recording("teacher"), 0.25)
    grid = handoff_grid([80.0, 2.0, 0.0], 0.25)
    np.testing.assert_array_equal(grid, [80.0, 2.0, 0.25, 0.0])
    dk.samplers.euler(D, torch.ones(2, 1), grid, SampleOptions(progress=False))
    assert calls == [("student", 80.0), ("student", 2.0), ("teacher", 0.25)]


def test_a_level_per_example_picks_the_model_row_by_row():
    D = HandoffDenoiser(lambda x, s, **c: torch.zeros_like(x), lambda x, s, **c: torch.ones_like(x), 0.5)
    out = D(torch.randn(4, 2, 3), torch.tensor([1.0, 0.5, 0.1, 0.6]))
    assert torch.equal(out[:, 0, 0], torch.tensor([0.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("kwargs, message", [
    ({"sigma": 0.0}, "handoff.sigma must be a number > 0"),
    ({"sigma": 1.5}, "the hand-off sigma must lie below the grid's last level above 0"),   # 2 flow steps: [999, 1, 0]
    ({"sigma": 1e-5}, "handoff.sigma must lie in the hand-off process's range"),
    ({"process": object()}, "the hand-off process must be on the noise-level contract"),
])
def test_bad_hand_offs_are_one_line_errors(kwargs, message):
    flow = dk.RectifiedFlow()
    args = {"process": flow, "model": exact_network(flow), "sigma": 0.2, **kwargs}
    with pytest.raises(ValueError, match=message):
        dk.sample(flow, exact_network(flow), (2, 1), "euler", 2, progress=False, handoff=Handoff(**args))
    with pytest.raises(ValueError, match="handoff must be a ddpmkit.sampling.Handoff"):
        dk.sample(flow, exact_network(flow), (2, 1), "euler", 2, progress=False, handoff=(flow, 0.2))


def test_the_discrete_chain_cannot_hand_off():
    diffusion = dk.GaussianDiffusion(dk.Schedule.linear(10))
    flow = dk.RectifiedFlow()
    with pytest.raises(ValueError, match="a hand-off needs a sampler over the denoiser, not DDPM's chain"):
        dk.sample(diffusion, lambda x, t: torch.zeros_like(x), (2, 1), "ddpm", 10, progress=False,
                  handoff=Handoff(flow, exact_network(flow), 0.2))


def test_the_cli_hands_off_as_the_api_does(runs, tmp_path, capsys):
    student, teacher = runs / "rf2", runs / "teacher"
    out = tmp_path / "x.npz"
    assert main(["sample", str(student), "--sampler", "euler", "--steps", "1", "--handoff", str(teacher),
                 "--handoff-sigma", "0.25", "--n", "3", "--seed", "5", "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    assert "1 steps and one call of" in capsys.readouterr().out
    s, t = load_checkpoint(student), load_checkpoint(teacher)
    expected = dk.sample(s.process, s.ema_model, (3, 1, 8, 8), "euler", 1, generator=torch.Generator().manual_seed(5),
                         clip_x0=True, progress=False, handoff=Handoff(t.process, t.ema_model, 0.25))
    assert torch.equal(torch.from_numpy(np.load(out)["x"]), expected)
    assert main(["sample", str(student), "--handoff", str(teacher), "--out", str(out), "--quiet"]) == 2
    assert "--handoff needs --handoff-sigma" in capsys.readouterr().err
    assert main(["sample", str(student), "--handoff-sigma", "0.2", "--out", str(out), "--quiet"]) == 2
    assert "--handoff-sigma needs --handoff" in capsys.readouterr().err


def test_the_benchmark_reads_a_hand_off_row():
    """``benchmarks/fewstep_draws.py``'s ``RUN:SAMPLER:CALLS+TEACHER@SIGMA``: CALLS counts the student's."""
    spec = importlib.util.spec_from_file_location("fewstep_draws", ROOT / "benchmarks" / "fewstep_draws.py")
    draws = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(draws)
    assert draws.parse_row("runs/a:euler:1+runs/b@0.3") == (Path("runs/a"), None, "euler", 1, None)
    assert draws.parse_row("runs/a@2:ddim:2:trailing+runs/b@0.3") == (Path("runs/a"), 2, "ddim", 2, "trailing")


@pytest.mark.parametrize("sampler", ["euler", "dpmpp2m", "unipc"])
def test_a_hand_off_reads_the_device_no_more_with_more_steps(sampler):
    """The choice of model is made on the host's grid floats: a run of 4 and of 8 student steps
    make the same number of host reads (tests/test_sync_free_sampling.py's counter)."""
    torch.manual_seed(0)
    student, teacher = dk.RectifiedFlow(), VP()
    handoff = Handoff(teacher, Net().eval(), 0.05)   # below the last level of uniform_open at 8 steps (0.14)
    net = Net().eval()
    reads = []
    for steps in (4, 8):
        x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
        with count_host_reads() as counts:
            dk.sample(student, net, None, sampler, steps, x_T=x_T, progress=False, grid="uniform_open",
                      handoff=handoff)
        reads.append(sum(counts.values()))
    assert reads[0] == reads[1], reads
