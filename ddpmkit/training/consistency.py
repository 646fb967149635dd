"""Consistency training and distillation as an objective on the one trainer loop.

One step (Song et al. 2023, eqs. 7 and 10; Song & Dhariwal 2023, "iCT"; Geng et al. 2024, "ECT"):
draw pairs of levels sigma_lo < sigma_hi per example, put x_hi = x_0 + sigma_hi z, get the point
x_lo of the same probability-flow trajectory at sigma_lo, and pull the student's f(x_hi, sigma_hi)
towards the stop-gradient f(x_lo, sigma_lo) of the same weights (no EMA teacher, iCT sec. 3.2):

    loss = lambda d(f_theta(x_hi, sigma_hi), sg f_theta(x_lo, sigma_lo)),   lambda = 1 / (sigma_hi - sigma_lo),
    d(a, b) = sqrt(||a - b||^2 + c^2) - c,   c = 0.00054 sqrt(dim)   (pseudo-Huber, iCT sec. 3.3).

x_lo, by the objective's ``target``:

* ``"ct"`` (consistency training): x_lo = x_0 + sigma_lo z, the same z: the one-sample estimate of
  the ODE step (Song et al. 2023, Thm. 2);
* ``"cd"`` (consistency distillation): one step of a probability-flow ODE solver (``euler``,
  i.e. DDIM, or ``heun``, EDM Alg. 1) with the teacher's denoiser D(x_hat, sigma) from x_hi.

The pairs, by :class:`PairSchedule` ``kind``:

* ``"ict"``: the Karras levels (rho = 7) of N(k) = min(s0 2^floor(k / K'), s1) + 1 points,
  K' = floor(K / (log2(s1 / s0) + 1)), s0 = 10, s1 = 1280 (the discretisation curriculum), the
  level index i drawn with p(i) proportional to erf((ln sigma_{i+1} - P_mean) / (sqrt(2) P_std)) -
  erf((ln sigma_i - P_mean) / (sqrt(2) P_std)) (lognormal noise sampling, iCT sec. 3.5); with
  s0 = s1 = N a fixed discretisation (Song et al. 2023 distil on N = 18; ddpmkit uses the curriculum);
* ``"ect"``: ln sigma ~ N(P_mean, P_std^2) and sigma_lo = max(sigma_min, sigma (1 - n(sigma) / q^a)),
  n(sigma) = 1 + 8 sigmoid(-sigma), q = 2, a = floor(k / (K / stages)): dt = sigma - sigma_lo shrinks
  to 0 over training (at a = 0 the target is x_0 + sigma_min z: plain denoising).

Nothing here reads the device: the per-stage level tables are made on the host once and cast once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..core.consistency import Consistency
from ..core.score_losses import ict_huber_c, pseudo_huber as pseudo_huber_of
from ..core.predictions import check_choice, per_example
from ..sampling.grids import karras_sigmas
from ..sampling.loop import SampleOptions
from ..sampling.ode import euler_step

__all__ = ["PairSchedule", "ConsistencyObjective", "PAIR_KINDS", "TARGETS", "SOLVERS", "pseudo_huber",
           "huber_constant", "ict_levels", "ode_step"]

PAIR_KINDS = ("ict", "ect")
TARGETS = ("ct", "cd")
SOLVERS = ("euler", "heun")
ICT_S0, ICT_S1 = 10, 1280
ECT_STAGES, ECT_Q = 8, 2.0

Denoiser = Callable[..., torch.Tensor]


def huber_constant(dim: int) -> float:
    """iCT's c = 0.00054 sqrt(dim) (sec. 3.3): :func:`ddpmkit.core.score_losses.ict_huber_c`."""
    return ict_huber_c(dim)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(||a - b||^2 + c^2) - c per example (B,), the norm over all of an example's dims."""
    return pseudo_huber_of(a.sub(b).flatten(1).square().sum(dim=1), c)


def ict_levels(sigma_min: float, sigma_max: float, n: int) -> np.ndarray:
    """The n increasing Karras levels sigma_1 = sigma_min < ... < sigma_n = sigma_max (float64 host)."""
    return karras_sigmas(sigma_min, sigma_max, n)[::-1].copy()



def ode_step(solver: str, D: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
             **cond: Any) -> torch.Tensor:
    """One probability-flow ODE step per example from ``sigma`` to ``sigma_next`` (both (B,), > 0):
    Euler (DDIM, :func:`ddpmkit.sampling.ode.euler_step`) or Heun (EDM Alg. 1 lines 4-8)."""
    s, s_next = per_example(sigma, x), per_example(sigma_next, x)
    opts = SampleOptions(progress=False, cond=cond)
    x_euler, _ = euler_step(D, x, s, s_next, opts)
    if solver == "euler":
        return x_euler
    d = (x - D(x, sigma, **cond)) / s
    d_next = (x_euler - D(x_euler, sigma_next, **cond)) / s_next
    return x + (s_next - s) * 0.5 * (d + d_next)


@dataclass
class PairSchedule:
    """Where the pairs (sigma_lo, sigma_hi) come from at training step k of ``total`` (module docstring)."""

    kind: str
    sigma_min: float
    sigma_max: float
    total: int
    p_mean: float
    p_std: float
    s0: int = ICT_S0
    s1: int = ICT_S1
    stages: int = ECT_STAGES
    q: float = ECT_Q
    _tables: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_choice("pairs", self.kind, PAIR_KINDS)
        if not (isinstance(self.s0, int) and isinstance(self.s1, int) and 1 <= self.s0 <= self.s1):
            raise ValueError(f"the curriculum needs integers 1 <= s0 <= s1, got s0={self.s0!r}, s1={self.s1!r}")

    def levels_at(self, step: int) -> int:
        """iCT's N(k): the number of levels at step k (s0 2^stage, capped at s1, plus one)."""
        stages = int(math.log2(self.s1 / self.s0)) + 1
        per_stage = max(self.total // stages, 1)
        return min(self.s0 * 2 ** (step // per_stage), self.s1) + 1

    def _table(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(levels (n,), index probabilities (n - 1,)) on ``device``, made on the host once per n."""
        key = (n, str(device))
        if key not in self._tables:
            levels = ict_levels(self.sigma_min, self.sigma_max, n)
            cdf = np.array([math.erf((math.log(s) - self.p_mean) / (math.sqrt(2.0) * self.p_std)) for s in levels])
            probs = np.maximum(np.diff(cdf), 1e-30)
            self._tables[key] = (torch.from_numpy(levels).float().to(device),
                                 torch.from_numpy(probs / probs.sum()).float().to(device))
        return self._tables[key]

    def draw(self, step: int, batch: int, generator: torch.Generator | None,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma_lo, sigma_hi), each (B,) float32 on ``device``, for training step ``step``."""
        if self.kind == "ict":
            levels, probs = self._table(self.levels_at(step), device)
            i = torch.multinomial(probs, batch, replacement=True, generator=generator)
            return levels[i], levels[i + 1]
        n = torch.randn(batch, generator=generator, device=device)
        sigma = torch.exp(self.p_mean + self.p_std * n).clamp(2.0 * self.sigma_min, self.sigma_max)
        stage = min(step // max(self.total // self.stages, 1), self.stages - 1)
        shrink = (1.0 + 8.0 * torch.sigmoid(-sigma)) / self.q**stage
        return (sigma * (1.0 - shrink)).clamp(min=self.sigma_min), sigma


class ConsistencyObjective:
    """The per-example consistency loss of a student on a :class:`Consistency` process.

    Args:
        process: the student's process (its f, sigma range and lognormal draw).
        pairs: the :class:`PairSchedule`.
        target: ``"ct"`` or ``"cd"`` (needs ``teacher``, a denoiser D(x_hat, sigma, **cond)).
        solver: the ODE step of ``"cd"``: ``"euler"`` or ``"heun"``.
        dim: the number of values per example (for the pseudo-Huber c).
    """

    stat_names = ("loss", "grad_norm")

    def __init__(self, process: Consistency, pairs: PairSchedule, target: str = "ct",
                 teacher: Denoiser | None = None, solver: str = "heun", dim: int = 1):
        if not process.consistency_function:
            raise ValueError(f"a consistency objective needs a consistency process (its denoiser a consistency "
                             f"function), got {type(process).__name__}")
        self.process, self.pairs = process, pairs
        self.target = check_choice("target", target, TARGETS)
        self.solver = check_choice("solver", solver, SOLVERS)
        if target == "cd" and teacher is None:
            raise ValueError("target='cd' needs a teacher denoiser, got teacher=None")
        self.teacher = teacher
        self.huber_c = huber_constant(dim)

    def draw(self, step: int, batch: int, generator: torch.Generator | None, device: torch.device
             ) -> dict[str, torch.Tensor]:
        """The step's random levels for the whole global batch (drawn before the noise)."""
        sigma_lo, sigma_hi = self.pairs.draw(step, batch, generator, device)
        return {"sigma_lo": sigma_lo, "sigma_hi": sigma_hi}

    def loss(self, model: Callable[..., torch.Tensor], part: dict[str, torch.Tensor], **cond: Any) -> torch.Tensor:
        """Per-example loss (B,) for the batch ``part`` (x0, noise, sigma_lo, sigma_hi)."""
        f = self.process.denoiser(model)
        x0, z = part["x0"], part["noise"]
        sigma_lo, sigma_hi = part["sigma_lo"], part["sigma_hi"]
        x_hi = x0 + per_example(sigma_hi, x0) * z
        with torch.no_grad():
            if self.target == "ct":
                x_lo = x0 + per_example(sigma_lo, x0) * z
            else:
                x_lo = ode_step(self.solver, self.teacher, x_hi, sigma_hi, sigma_lo, **cond)
            target = f(x_lo, sigma_lo, **cond)
        weight = 1.0 / (sigma_hi - sigma_lo)
        return weight * pseudo_huber(f(x_hi, sigma_hi, **cond), target, self.huber_c)

