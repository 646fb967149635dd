"""Progressive distillation (Salimans & Ho 2022, Alg. 2) as an objective on the one trainer loop.

A student of N DDIM steps learns two DDIM steps of its teacher (2N steps) per step. On the
teacher's grid of 2N levels (the ``"trailing"`` sub-sequence of the discrete chain's steps, which
nests: the N-step grid is every other level of the 2N-step one), for a student level
sigma = sigma_{2k}, the teacher goes sigma_{2k} -> sigma_{2k-1} -> sigma'' = sigma_{2k-2} with
DDIM (Euler on the probability-flow ODE in x_hat: x' = D + (sigma' / sigma) (x_hat - D)), and the
x_0 target is the estimate whose one DDIM step from (x_hat, sigma) lands on the same point:

    x'' = x_tilde + (sigma'' / sigma) (x_hat - x_tilde)
    =>  x_tilde = (x'' - (sigma'' / sigma) x_hat) / (1 - sigma'' / sigma)

(Alg. 2's target in x_hat = z / alpha coordinates; sigma'' = 0 at the last step gives x_tilde = x'').
The student predicts v (its process is the teacher's v-prediction chain) and the loss is the
v error, ||v_tilde - v_theta||^2 = (1 + 1 / sigma^2) ||x_tilde - x_theta||^2 ("SNR + 1" weighting,
Salimans & Ho sec. 4). Rounds halve N: a run from 2 N_0 teacher steps to ``steps`` student
steps has log2(2 N_0 / steps) rounds of equal length; after each round the student's average
becomes the next teacher.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..core.diffusion import GaussianDiffusion
from ..core.predictions import per_example
from ..sampling.grids import sigma_grid
from ..sampling.loop import SampleOptions
from ..sampling.ode import euler_step

__all__ = ["ProgressiveObjective", "progressive_rounds", "check_power_of_two", "PD_GRID"]

PD_GRID = "trailing"
"""The discrete chain's sub-sequence a progressive student samples on (``dk.sample(..., grid=PD_GRID)``)."""


def check_power_of_two(name: str, value: Any) -> int:
    """``value`` as an int, or a one-line ValueError unless it is a power of two >= 1."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two (1, 2, 4, ...), got {name}={value!r}")
    return int(value)


def progressive_rounds(teacher_steps: int, steps: int) -> list[int]:
    """The student step counts of each round: teacher_steps / 2, ..., steps."""
    teacher_steps, steps = check_power_of_two("teacher_steps", teacher_steps), check_power_of_two("--steps", steps)
    if steps >= teacher_steps:
        raise ValueError(f"--steps must be below the teacher's {teacher_steps} steps, got --steps {steps}")
    rounds, n = [], teacher_steps
    while n > steps:
        n //= 2
        rounds.append(n)
    return rounds



class ProgressiveObjective:
    """Per-example progressive-distillation loss of a v-prediction student on ``process``.

    Args:
        process: the discrete chain (the teacher's and the student's).
        teacher: the current teacher network (replaced by :meth:`set_round`'s caller each round).
        rounds: the student step counts, one per round (:func:`progressive_rounds`).
        total: the number of training steps of all rounds together.
    """

    stat_names = ("loss", "grad_norm")

    def __init__(self, process: GaussianDiffusion, teacher: Callable[..., torch.Tensor], rounds: list[int], total: int):
        if process.training_steps is None or process.prediction != "v":
            raise ValueError("progressive distillation needs a discrete v-prediction process (Salimans & Ho 2022), got "
                             f"{process!r}")
        if total < len(rounds):
            raise ValueError(f"the distillation needs at least one step per round ({len(rounds)}), got {total}")
        self.process, self.teacher, self.rounds, self.total = process, teacher, list(rounds), int(total)
        self._grids: dict[tuple[int, str], torch.Tensor] = {}

    def round_at(self, step: int) -> int:
        """The round (0-based) that training step ``step`` belongs to."""
        return min(step * len(self.rounds) // self.total, len(self.rounds) - 1)

    def round_starts(self) -> list[int]:
        """The first training step of every round."""
        return [-(-r * self.total // len(self.rounds)) for r in range(len(self.rounds))]

    def student_steps(self, step: int) -> int:
        return self.rounds[self.round_at(step)]

    def _grid(self, n: int, device: torch.device) -> torch.Tensor:
        """The teacher's 2n levels, increasing, with sigma = 0 first: (2n + 1,) float32 on ``device``."""
        key = (n, str(device))
        if key not in self._grids:
            levels = sigma_grid(self.process, 2 * n, PD_GRID)[::-1].copy()   # 0, sigma_1, ..., sigma_2n
            self._grids[key] = torch.from_numpy(levels).float().to(device)
        return self._grids[key]

    def draw(self, step: int, batch: int, generator: torch.Generator | None, device: torch.device
             ) -> dict[str, torch.Tensor]:
        """The student level k in 1..N per example, as its three teacher levels."""
        n = self.student_steps(step)
        grid = self._grid(n, device)
        k = torch.randint(1, n + 1, (batch,), generator=generator, device=device)
        return {"sigma": grid[2 * k], "sigma_mid": grid[2 * k - 1], "sigma_end": grid[2 * k - 2]}

    def loss(self, model: Callable[..., torch.Tensor], part: dict[str, torch.Tensor], **cond: Any) -> torch.Tensor:
        x0, z = part["x0"], part["noise"]
        sigma, mid, end = (per_example(part[k], x0) for k in ("sigma", "sigma_mid", "sigma_end"))
        x_hat = x0 + sigma * z
        opts = SampleOptions(progress=False, cond=cond)
        with torch.no_grad():
            D_teacher = self.process.denoiser(self.teacher)
            x_mid, _ = euler_step(D_teacher, x_hat, sigma, mid, opts)
            x_end, _ = euler_step(D_teacher, x_mid, mid, end, opts)
            ratio = end / sigma
            target = (x_end - ratio * x_hat) / (1.0 - ratio)
        student = self.process.denoiser(model)(x_hat, part["sigma"], **cond)
        weight = 1.0 + 1.0 / part["sigma"].square()
        return weight * (student - target).flatten(1).square().mean(dim=1)
