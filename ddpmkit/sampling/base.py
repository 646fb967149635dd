"""What every sampler shares: the options bundle, the step record, the registry and ``sample``.

A sampler is a plain function ``fn(process, model, x_T, steps, opts, **params) -> x_0`` with no
hidden state. It talks to the network only through ``model(x_t, t, **opts.cond)`` (usually via
``process.p_mean_variance`` / ``process.model_output``), draws every random number from
``opts.generator``, calls ``opts.report(...)`` once per step, and registers itself under a name
with :func:`register`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..core.diffusion import GaussianDiffusion
from ..core.schedules import space_timesteps

__all__ = ["SampleOptions", "StepInfo", "register", "SAMPLERS", "make_generator", "SKIPS",
           "subsequence", "respaced_for"]


@dataclass(frozen=True)
class StepInfo:
    """Passed to the per-step callback: the state after step ``i`` of ``n``."""

    i: int
    n: int
    t: float            # the (original-schedule) timestep, or continuous time, of this step
    x: torch.Tensor     # the current sample
    pred_x0: torch.Tensor | None


@dataclass(frozen=True)
class SampleOptions:
    """Options every sampler shares, bundled so they are not repeated on every function.

    Attributes:
        generator: the source of all randomness (``torch.Generator`` on the sample's device).
        clip_x0: clip the predicted x_0 to [-1, 1] at every step (images).
        callback: called with a :class:`StepInfo` after every step.
        progress: show a tqdm progress bar.
        cond: extra keyword arguments for the model, e.g. ``{"y": labels}``.
    """

    generator: torch.Generator | None = None
    clip_x0: bool = False
    callback: Callable[[StepInfo], None] | None = None
    progress: bool = True
    cond: Mapping[str, Any] = field(default_factory=dict)

    def randn(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=like.device, dtype=like.dtype)

    def report(self, i: int, n: int, t: float, x: torch.Tensor, pred_x0: torch.Tensor | None) -> None:
        """Check the step for NaN and call the callback."""
        if not torch.isfinite(x).all():
            raise FloatingPointError(f"sampling produced NaN or inf at step {i + 1} of {n} (t={t:g})")
        if self.callback is not None:
            self.callback(StepInfo(i, n, float(t), x, pred_x0))


SamplerFn = Callable[..., torch.Tensor]
SAMPLERS: dict[str, SamplerFn] = {}


def register(name: str) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator: make a sampler function available to :func:`sample` under ``name``. Every
    registered sampler runs without autograd (guidance that needs a gradient turns it on for
    its own computation), so no sampler keeps the graph of its steps."""

    def wrap(fn: SamplerFn) -> SamplerFn:
        fn = torch.no_grad()(fn)
        SAMPLERS[name] = fn
        return fn

    return wrap


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


# ---------------------------------------------------------------------- timestep sub-sequences
SKIPS = ("uniform", "quadratic", "linspace", "trailing", "logsnr")


def _strictly_increasing(seq: np.ndarray, T: int) -> np.ndarray:
    """Push repeated indices apart (forward, then back from T - 1) so ``len(seq)`` stay distinct."""
    seq = np.asarray(seq, dtype=np.int64).copy()
    for k in range(1, seq.size):
        seq[k] = max(seq[k], seq[k - 1] + 1)
    seq[-1] = min(seq[-1], T - 1)
    for k in range(seq.size - 2, -1, -1):
        seq[k] = min(seq[k], seq[k + 1] - 1)
    return seq


def subsequence(process: GaussianDiffusion, steps: int, skip: str) -> np.ndarray:
    """The ``steps`` indices of ``process``'s schedule (ascending) a sampler visits.

    ``skip`` (indices in [0, T), T = ``process.T``; c = T // steps):

    - ``"uniform"``: 0, c, 2c, ... (the DDIM repo's ``skip_type="uniform"``, which is diffusers'
      ``timestep_spacing="leading"`` with ``steps_offset=0``; the DDIM repo's ``range(0, T, c)``
      has one or more extra steps when ``steps`` does not divide T, this has exactly ``steps``);
    - ``"quadratic"``: int((k sqrt(0.8 T) / (steps - 1))^2) (the DDIM repo's quadratic skip, for
      CIFAR-10), with repeated indices pushed apart so that every step is a real step;
    - ``"linspace"``: evenly spaced with both ends, 0 and T - 1 (iDDPM's ``respace(steps)``);
    - ``"trailing"``: round(k T / steps) - 1 for k = 1..steps, ending at T - 1 (diffusers'
      ``"trailing"``, Lin et al. 2023);
    - ``"logsnr"``: the indices nearest to points uniform in log-SNR between the ends
      (DPM-Solver's recommendation for low-resolution pixel models, Lu et al. 2022, section 3.3).
    """
    T = process.T
    if not isinstance(skip, str) or skip not in SKIPS:
        raise ValueError(f"skip must be one of {list(SKIPS)}, got skip={skip!r}")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, {T}], got steps={steps!r}")
    k = np.arange(steps, dtype=np.float64)
    if skip == "uniform":
        seq = np.arange(steps, dtype=np.int64) * (T // steps)
    elif skip == "quadratic":
        top = np.sqrt(0.8 * T)
        seq = ((k * top / max(steps - 1, 1)) ** 2).astype(np.int64)
    elif skip == "linspace":
        seq = space_timesteps(T, int(steps))
    elif skip == "trailing":
        seq = np.round((k + 1) * T / steps).astype(np.int64) - 1
    else:  # logsnr
        log_snr = process.schedule.log_snr          # decreasing in t
        targets = np.linspace(log_snr[-1], log_snr[0], steps)[::-1] if steps > 1 else log_snr[-1:]
        seq = np.abs(log_snr[None, :] - targets[:, None]).argmin(axis=1)
    return _strictly_increasing(np.clip(seq, 0, T - 1), T)


def respaced_for(process: GaussianDiffusion, steps: int, skip: str) -> GaussianDiffusion:
    """``process`` respaced onto ``subsequence(process, steps, skip)`` (itself if that is every step).

    On the respaced process index i stands for original step ``timesteps[i]``; its betas are
    ``1 - alpha_bar[tau_i] / alpha_bar[tau_{i-1}]`` and ``alpha_bar_prev[0] = 1`` (iDDPM section 4).
    """
    keep = subsequence(process, steps, skip)
    if keep.size == process.T:
        return process
    return process.respace([int(i) for i in keep])
