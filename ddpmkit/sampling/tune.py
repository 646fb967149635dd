"""A step schedule tuned for one trained model: the levels of a few-step grid that bring a solver's
samples closest to a many-step reference from the same noise.

The idea is that of "Align Your Steps" (Sabour et al. 2024) and GITS (Chen et al. 2024): the
best few-step grid depends on the model and the data, so choose it on the model itself. Here
the criterion is the simplest one, the mean squared distance between the K-step samples and a
reference solution (``reference_sampler`` at ``reference_steps``) from the same held-out noise
batch, minimised by coordinate search over the log of each interior level (the top and the
final 0 stay). Deterministic for a seed; it never looks at data or at a quality metric, so
scoring the tuned grid on other noise is fair. On the digits teacher (docs/SOLVERS.md) it took
UniPC at 4 calls from FD 0.451 to 0.342 over 20 noise draws.

    grid = dk.tune_grid(run.process, run.ema_model, "unipc", 4, (1, 8, 8))
    x = dk.sample(run.process, run.ema_model, (64, 1, 8, 8), "unipc", grid=grid.sigmas.tolist())
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .api import model_device, sample
from .loop import SampleOptions
from .plan import explicit_sigmas, plan_sampling

__all__ = ["TunedGrid", "tune_grid"]


@dataclass(frozen=True)
class TunedGrid:
    """``sigmas``: the tuned levels (float64, decreasing, ending in 0), for ``grid=`` of
    :func:`ddpmkit.sample`; ``default_sigmas`` the sampler's own grid at these steps; ``loss`` and
    ``default_loss`` their mean squared distance to the reference on the tuning batch."""

    sampler: str
    steps: int
    sigmas: np.ndarray
    loss: float
    default_sigmas: np.ndarray
    default_loss: float
    reference: str

    def to_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "steps": self.steps, "sigmas": self.sigmas.tolist(), "loss": self.loss,
                "default_sigmas": self.default_sigmas.tolist(), "default_loss": self.default_loss,
                "reference": self.reference}


@torch.no_grad()
def tune_grid(process: Any, model: Any, sampler: str, steps: int, shape: Sequence[int], *, samples: int = 256,
              reference_sampler: str = "dpmpp2m", reference_steps: int = 50, seed: int = 4000, sweeps: int = 4,
              span: float = 1.0, points: int = 11, clip_x0: bool = True, cond: dict[str, Any] | None = None,
              progress: bool = True) -> TunedGrid:
    """Tune the ``steps - 1`` interior levels of ``sampler``'s grid on ``model``.

    Starts from the sampler's default grid at ``steps`` (:func:`plan_sampling`); each sweep tries,
    for each interior level in turn, ``points`` factors exp(u / (sweep + 1)), u evenly spaced in
    [-span, span], keeping the order of the levels, and takes the best; later sweeps search
    closer. ``samples`` noise draws (``seed``) of ``shape`` per sample. Returns a
    :class:`TunedGrid`; its ``loss`` never exceeds ``default_loss``.
    """
    if steps < 2:
        raise ValueError(f"tuning needs an interior level: steps must be >= 2, got steps={steps!r}")
    for name, value in (("samples", samples), ("sweeps", sweeps), ("points", points)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
    if not span > 0:
        raise ValueError(f"span must be > 0, got span={span!r}")
    plan = plan_sampling(process, sampler, steps)
    explicit_sigmas(process, plan.entry, plan.sigmas, steps)   # a sampler that can run the tuned list
    generator = torch.Generator().manual_seed(seed)   # drawn on the host, so a seed tunes alike on any device
    x_T = (plan.prior_std * torch.randn((samples, *shape), generator=generator)).to(model_device(model) or "cpu")
    cond = dict(cond or {})
    reference = sample(process, model, None, reference_sampler, reference_steps, x_T=x_T, clip_x0=clip_x0,
                       cond=cond, progress=False)
    denoiser = process.denoiser(model, clip_x0)
    x_hat = x_T / plan.start_scale
    opts = SampleOptions(progress=False, cond=cond)

    def loss(sigmas: np.ndarray) -> float:
        x = plan.entry.fn(denoiser, x_hat, sigmas, opts, **plan.params)
        return float(((x - reference) ** 2).mean())

    best_sigmas = np.array(plan.sigmas, dtype=np.float64)
    default_loss = best = loss(best_sigmas)
    factors = [np.exp(np.linspace(-span, span, points) / (sweep + 1)) for sweep in range(sweeps)]
    bar = tqdm(total=sweeps * (steps - 1) * points, desc=f"tune-grid {sampler} {steps}", disable=not progress)
    for sweep_factors in factors:
        for i in range(1, steps):
            centre = best_sigmas.copy()
            for f in sweep_factors:
                bar.update()
                trial = centre.copy()
                trial[i] = centre[i] * f
                if not trial[i - 1] > trial[i] > trial[i + 1] or trial[i] < float(process.sigma_min):
                    continue
                value = loss(trial)
                if value < best:
                    best, best_sigmas = value, trial
    bar.close()
    return TunedGrid(sampler, steps, best_sigmas, best, np.array(plan.sigmas, dtype=np.float64), default_loss,
                     f"{reference_sampler} {reference_steps}")
