"""``solve_inverse`` and ``inpaint``: the API edge of the inverse-problem methods.

Every argument is checked here, once (shapes against the model's data shape ``shape``, the
operator against one example, the method's parameters); the methods themselves
(:mod:`.replacement`, :mod:`.dps`, :mod:`.smc`) never read the device inside their loops.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.predictions import check_finite
from ..sampling.api import make_generator, model_device
from ..sampling.loop import SampleOptions
from ..sampling.plan import ancestral_step_name, plan_sampling, scale_at
from .dps import dps
from .operators import LinearOperator, Mask
from .replacement import repaint, replacement
from .smc import smc
from .steps import step_function

__all__ = ["METHODS", "solve_inverse", "inpaint"]

METHODS = ("replace", "repaint", "dps", "smc")
_PARAMS = {"replace": ("eta",), "repaint": ("eta", "jump_length", "jump_n_sample"),
           "dps": ("eta", "step_size"), "smc": ("particles", "ess_threshold")}
_COMMON = ("noise_std", "grid", "rho", "clip_x0")

Model = Callable[..., torch.Tensor]


def _number(name: str, value: Any, low: float, high: float = math.inf, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) < low or (low_open and float(value) == low) \
            or float(value) > high:
        raise ValueError(f"{name} must be a number in {'(' if low_open else '['}{low:g}, {high:g}], got {name}={value!r}")
    return float(value)


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or len(shape) < 2 or any(
            not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in shape):
        raise ValueError(f"shape must be (n, *example_shape) of positive integers, got shape={shape!r}")
    return tuple(shape)


def _check_observation(y: Any, operator: LinearOperator, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(operator, LinearOperator):
        raise ValueError(f"operator must be a ddpmkit.inverse operator (Mask, Greyscale, Downsample), "
                         f"got {type(operator).__name__}")
    operator.check(shape[1:])
    want = operator.observation_shape(shape)
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or tuple(y.shape[1:]) != want[1:] \
            or y.shape[0] not in (1, shape[0]):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a floating-point tensor of shape ({shape[0]} or 1, *{want[1:]}) for "
                         f"data of shape {shape}, got {got}")
    check_finite("y", y)
    return y


def solve_inverse(process: Any, model: Model, y: torch.Tensor, operator: LinearOperator, *,
                  shape: Sequence[int], method: str = "repaint", sampler: str | None = None,
                  steps: int | None = None, generator: torch.Generator | None = None, seed: int | None = None,
                  cond: dict[str, Any] | None = None, progress: bool = True, **method_params: Any) -> torch.Tensor:
    """Samples x (``shape``) of the model's distribution given the observation y = A x.

    Args:
        process, model: as for :func:`ddpmkit.sample`; ``shape`` = (n, *example_shape).
        y: A x_true, batch n (or 1, broadcast); ``operator``: :class:`Mask`, :class:`Greyscale`,
            :class:`Downsample` (or any :class:`LinearOperator` with A A^T = c I).
        method: ``"replace"`` (score-SDE app. I.2), ``"repaint"`` (Lugmayr et al. 2022),
            ``"dps"`` (Chung et al. 2023), ``"smc"`` (SMCDiff, Trippe et al. 2023).
        sampler: the single step (:data:`ddpmkit.inverse.steps.STEP_SAMPLERS`; default the
            ancestral step: ``"ddpm"``, DDPM's chain from its top, where the process has a
            fixed-small chain, else ``"sde"``; ``smc`` takes only these). ``steps``: grid steps
            (default the process's training steps T).
        method_params: ``jump_length`` (10), ``jump_n_sample`` (10) for repaint; ``step_size``
            (1.0) for dps; ``particles`` (16), ``ess_threshold`` (0.5) for smc; ``eta`` for
            sampler ``"ddim"``; ``noise_std`` (0): y's own Gaussian noise (replace, repaint, smc
            condition at the level it matches; dps ignores it); ``grid``, ``rho``; ``clip_x0``.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got method={method!r}")
    shape = _check_shape(shape)
    y = _check_observation(y, operator, shape)
    allowed = _PARAMS[method] + _COMMON
    for key in method_params:
        if key not in allowed:
            raise ValueError(f"unknown parameter {key!r} for method {method!r}; known: {sorted(allowed)}")
    p = dict(method_params)
    sampler = ancestral_step_name(process) if sampler is None else sampler
    if method == "smc" and sampler not in ("ddpm", "sde"):
        raise ValueError(f"method='smc' needs the ancestral kernel (sampler 'sde', or 'ddpm' on a fixed-small "
                         f"chain), got sampler={sampler!r}")
    step = step_function(sampler, p.pop("eta", None))
    plan = plan_sampling(process, sampler, steps, p.pop("grid", None), p.pop("rho", 7.0), over_denoiser=True)
    sigmas = plan.sigmas
    sigma_y = operator.level(_number("noise_std", p.pop("noise_std", 0.0), 0.0))
    if method != "dps" and 0.0 < sigma_y < sigmas[0] and not np.any(sigmas == sigma_y):
        sigmas = np.sort(np.append(sigmas, sigma_y))[::-1].copy()   # condition exactly at y's own level
    device = model_device(model) or y.device
    if generator is None and seed is not None:
        generator = make_generator(seed, device)
    opts = SampleOptions(generator=generator, progress=progress, cond=dict(cond or {}))
    D = process.denoiser(model, bool(p.pop("clip_x0", False)))
    y = y.to(device)
    n = shape[0]
    if method == "smc":
        particles = p.pop("particles", 16)
        if not isinstance(particles, int) or isinstance(particles, bool) or particles < 1:
            raise ValueError(f"particles must be an integer >= 1, got particles={particles!r}")
        ess = _number("ess_threshold", p.pop("ess_threshold", 0.5), 0.0, 1.0)
        x = plan.start_noise((n * particles,) + shape[1:], generator, device, y.dtype)
        opts = SampleOptions(generator=generator, progress=progress,
                             cond={k: _repeat(v, particles, n) for k, v in opts.cond.items()})
        return smc(D, x, sigmas, opts, operator, y, particles, sigma_y, ess)
    x = plan.start_noise(shape, generator, device, y.dtype)
    if method == "dps":
        step_size = _number("step_size", p.pop("step_size", 1.0), 0.0)
        scales = np.array([scale_at(process, float(s)) for s in sigmas])
        return dps(D, x, sigmas, opts, operator, y, step, step_size, scales)
    if method == "replace":
        return replacement(D, x, sigmas, opts, operator, y, step, sigma_y)
    return repaint(D, x, sigmas, opts, operator, y, step, p.pop("jump_length", 10), p.pop("jump_n_sample", 10),
                   sigma_y)


def _repeat(value: Any, particles: int, n: int) -> Any:
    """A per-example condition (batch n) repeated for each observation's particles."""
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n:
        return value.repeat_interleave(particles, dim=0)
    return value


def inpaint(process: Any, model: Model, image: torch.Tensor, mask: torch.Tensor | Any, *,
            method: str = "repaint", n: int | None = None, **kw: Any) -> torch.Tensor:
    """Inpaint ``image`` (B, ...) in [-1, 1] where ``mask`` is 0 (1 = keep): ``n`` samples
    (default B; with B = 1 and n > 1, n completions of one image). ``kw`` go to :func:`solve_inverse`."""
    if not isinstance(image, torch.Tensor) or image.dim() < 2 or not image.is_floating_point():
        raise ValueError(f"image must be a floating-point tensor of shape (B, ...), got {type(image).__name__}")
    n = image.shape[0] if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or image.shape[0] not in (1, n):
        raise ValueError(f"n must be a positive integer equal to the image batch {image.shape[0]} (or any with a "
                         f"batch of 1), got n={n!r}")
    op = mask if isinstance(mask, Mask) else Mask(mask)
    op.check(tuple(image.shape[1:]))
    kw.setdefault("shape", (n,) + tuple(image.shape[1:]))
    if tuple(kw["shape"][1:]) != tuple(image.shape[1:]):
        raise ValueError(f"image of shape {tuple(image.shape[1:])} does not match the model's data shape "
                         f"{tuple(kw['shape'][1:])}")
    return solve_inverse(process, model, op(image), op, method=method, **kw)
