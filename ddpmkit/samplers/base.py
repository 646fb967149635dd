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

import torch

from ..diffusion import GaussianDiffusion

__all__ = ["SampleOptions", "StepInfo", "register", "SAMPLERS", "sample", "make_generator"]


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
    """Decorator: make a sampler function available to :func:`sample` under ``name``."""

    def wrap(fn: SamplerFn) -> SamplerFn:
        SAMPLERS[name] = fn
        return fn

    return wrap


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
