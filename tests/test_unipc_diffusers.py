"""UniPC against diffusers' ``UniPCMultistepScheduler`` (Zhao et al. 2023), step for step.

Same betas (the linear schedule, whose top sigma 157 is below SIGMA_MAX, so our grid is not
bounded), same timesteps (diffusers' ``timestep_spacing="trailing"`` is our ``"trailing"`` grid
when N divides T), data prediction, ``lower_order_final``, final sigma 0, the corrector on every
step but the last. diffusers keeps its sigmas in float32, so the two agree to float32 rounding
(1e-4 relative, as for DPM-Solver++ in tests/test_diffusers_crosscheck.py); a wrong coefficient
of the predictor or the corrector moves the result by far more (the last test shows by how much).

Every state is compared: diffusers' ``prev_sample`` after step k, like our callback's x, is the
predictor's output (the corrector acts at the next step). With ``bh1`` diffusers' last step to
sigma = 0 returns NaN (B(h) = -h = -inf times a zero residual), so there the last state is
compared only for ``bh2``; ours takes the limit, x_0 = D, as DPM-Solver++ does.
"""
from __future__ import annotations

import pytest
import torch
from oracles import gaussian_oracle

import ddpmkit as dk

schedulers = pytest.importorskip("diffusers.schedulers")
QUIET_NUMPY = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
LINEAR = dk.Schedule.linear(1000)
SHAPE = (4, 3, 4, 4)


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth, t-dependent stand-in for a network (any deterministic map will do)."""
    tt = t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return 0.8 * torch.tanh(x * (0.5 + tt / 1000.0)) + 0.1 * torch.cos(tt / 37.0)


def unipc_scheduler(order: int, variant: str):
    return schedulers.UniPCMultistepScheduler(
        num_train_timesteps=LINEAR.T, trained_betas=LINEAR.betas.tolist(), solver_order=order,
        solver_type=variant, predict_x0=True, lower_order_final=True, timestep_spacing="trailing",
        final_sigmas_type="zero", prediction_type="epsilon", thresholding=False)


def diffusers_unipc(model, x: torch.Tensor, steps: int, order: int, variant: str) -> list[torch.Tensor]:
    """The state after every step."""
    scheduler = unipc_scheduler(order, variant)
    scheduler.set_timesteps(steps)
    states = []
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, torch.full((x.shape[0],), int(t))), t, x).prev_sample
        states.append(x)
    return states


def ours(model, x_T: torch.Tensor, steps: int, **params) -> list[torch.Tensor]:
    states = []
    dk.sample(dk.GaussianDiffusion(LINEAR), model, None, "unipc", steps, x_T=x_T, grid="trailing",
              progress=False, callback=lambda info: states.append(info.x), **params)
    return states


def relative_error(a: list[torch.Tensor], b: list[torch.Tensor], variant: str) -> float:
    """The largest error over the states compared (all but diffusers' NaN last one for bh1)."""
    n = len(b) - (variant == "bh1")
    assert len(a) == len(b) and torch.isfinite(b[n - 1]).all()
    return max(float((x - y).abs().max()) / (1.0 + float(y.abs().max())) for x, y in zip(a[:n], b[:n]))


@QUIET_NUMPY
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("steps", [5, 10])
def test_unipc_equals_diffusers_on_a_toy_network(order, variant, steps):
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    theirs = diffusers_unipc(toy_model, x_T, steps, order, variant)
    assert relative_error(ours(toy_model, x_T, steps, order=order, variant=variant), theirs, variant) < 1e-4


@QUIET_NUMPY
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_equals_diffusers_on_the_exact_gaussian_model(variant):
    """The exact eps-predictor of N(mu, sd^2) data: both run the same trajectory to float rounding."""
    oracle = gaussian_oracle(LINEAR, torch.tensor([0.5, -1.0, 0.2]), torch.tensor([0.25, 1.0, 0.5]))
    model = lambda x, t: oracle(x.double(), t).float()   # noqa: E731  (diffusers' sigmas are float32)
    x_T = torch.randn(64, 3, generator=torch.Generator().manual_seed(4))
    for steps in (4, 8):
        theirs = diffusers_unipc(model, x_T, steps, 3, variant)
        assert relative_error(ours(model, x_T, steps, order=3, variant=variant), theirs, variant) < 1e-4


@QUIET_NUMPY
def test_the_check_can_fail():
    """Without the corrector, or with the other B(h), the states move 30x beyond the tolerance."""
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    theirs = diffusers_unipc(toy_model, x_T, 5, 3, "bh1")
    assert relative_error(ours(toy_model, x_T, 5, order=3, variant="bh1", corrector=False), theirs, "bh1") > 3e-3
    assert relative_error(ours(toy_model, x_T, 5, order=3, variant="bh2"), theirs, "bh1") > 3e-3
