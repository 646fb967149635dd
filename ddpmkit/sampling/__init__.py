"""Samplers: plain functions over the ``model(x_t, t, **cond)`` contract.

``sample(process, model, shape, sampler="ddim", steps=50, ...)`` is the one entry point; the
samplers themselves live in the modules below and register under their names.
``invert(process, model, x0, steps=50)`` is DDIM inversion, undone by
``sample(..., sampler="ddim", steps=50, x_T=z)``.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch

from ..core.diffusion import GaussianDiffusion
from .base import SAMPLERS, SKIPS, SampleOptions, StepInfo, make_generator, register, subsequence
from . import ancestral, ddim, dpm_solver, sde  # noqa: F401  (they register themselves)
from .ddim import invert

__all__ = ["sample", "invert", "SampleOptions", "StepInfo", "SAMPLERS", "SKIPS", "register",
           "make_generator", "subsequence"]

_SAMPLER_ARGS = ("process", "model", "x_T", "steps", "opts")


def _check_params(sampler: str, params: dict[str, Any]) -> None:
    """One-line ValueError for a parameter the sampler does not take (instead of a TypeError)."""
    signature = inspect.signature(SAMPLERS[sampler])
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    known = sorted(set(signature.parameters) - set(_SAMPLER_ARGS))
    for name in params:
        if name not in known:
            raise ValueError(f"unknown parameter {name!r} for sampler {sampler!r}; known: {known}")


def sample(
    process: GaussianDiffusion,
    model: Callable[..., torch.Tensor],
    shape: Sequence[int] | None,
    sampler: str = "ddim",
    steps: int | None = None,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    x_T: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    clip_x0: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = True,
    cond: dict[str, Any] | None = None,
    **params: Any,
) -> torch.Tensor:
    """Draw ``shape[0]`` samples from ``model`` with the named sampler.

    Args:
        sampler: one of ``SAMPLERS`` ("ddpm", "ddim", "euler", "heun", "rk45", "sde", "pc",
            "dpmpp2m", ...).
        steps: the number of steps (default: the process's T); must lie in [1, T].
        generator / seed: the source of randomness (a seed makes a CPU generator, or one on
            ``device``).
        x_T: the starting noise (e.g. from :func:`invert`); drawn from N(0, I) when None.
            ``shape`` may then be None.
        params: the sampler's own parameters, e.g. ``eta=0.0`` and ``skip="uniform"`` for DDIM
            (see each sampler's docstring).
    """
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got sampler={sampler!r}")
    _check_params(sampler, params)
    if shape is None:
        if x_T is None:
            raise ValueError("shape must be given when x_T is None, got shape=None")
        shape = tuple(x_T.shape)
    steps = process.T if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= process.T:
        raise ValueError(f"steps must be an integer in [1, {process.T}], got steps={steps!r}")
    if device is None:
        device = x_T.device if x_T is not None else "cpu"
    if generator is None and seed is not None:
        generator = make_generator(seed, device)
    opts = SampleOptions(generator=generator, clip_x0=clip_x0, callback=callback,
                         progress=progress, cond=dict(cond or {}))
    if x_T is None:
        x_T = torch.randn(tuple(shape), generator=generator, device=device)
    elif tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T must have shape {tuple(shape)}, got {tuple(x_T.shape)}")
    return SAMPLERS[sampler](process, model, x_T, steps, opts, **params)
