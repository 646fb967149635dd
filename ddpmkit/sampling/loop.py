"""The one sampling loop, the options every sampler shares, and the per-step record.

A sampler is a small function ``fn(D, x, sigmas, opts, **params)`` over a denoiser
``D(x_hat, sigma, **cond)`` and a decreasing sigma grid that ends in 0 (k-diffusion's shape).
It writes its update as a step function and hands it to :func:`run_steps`, which owns the
progress bar, the callback and the NaN check. Nothing in the loop reads the device: the grid
is read once (:func:`host_sigmas`), coefficients are Python floats, and a non-finite sample is
detected by a device-side flag that is read once, after the last step.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["SampleOptions", "StepInfo", "run_steps", "host_sigmas", "Denoiser", "cuda_sync_debug"]

Denoiser = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class StepInfo:
    """Passed to the per-step callback: the state after step ``i`` of ``n``.

    ``t`` is the process's time of the step's start (an original training step, or a fraction
    between two), ``sigma`` its noise level and ``sigma_next`` the level reached; ``x`` is the
    sample at ``sigma_next`` in the process's own scaling (x_t; for a sampler called directly on
    a denoiser, the sampler's own variable x_hat = x_0 + sigma eps); ``pred_x0`` the x_0 estimate.
    """

    i: int
    n: int
    t: float
    x: torch.Tensor
    pred_x0: torch.Tensor | None
    sigma: float = float("nan")
    sigma_next: float = float("nan")


@dataclass(frozen=True)
class SampleOptions:
    """Options every sampler shares, bundled so they are not repeated on every function.

    Attributes:
        generator: the source of all randomness (``torch.Generator`` on the sample's device).
        callback: called with a :class:`StepInfo` after every step.
        progress: show a tqdm progress bar.
        cond: extra keyword arguments for the model, e.g. ``{"y": labels}``.
        clip_x0: clip the predicted x_0 to [-1, 1] (used by the discrete ``ddpm`` sampler; a
            denoiser clips by itself: ``process.denoiser(model, clip_x0=True)``).
    """

    generator: torch.Generator | None = None
    callback: Callable[[StepInfo], None] | None = None
    progress: bool = True
    cond: Mapping[str, Any] = field(default_factory=dict)
    clip_x0: bool = False

    def randn(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise of ``like``'s shape, dtype and device, from the generator."""
        return torch.randn(like.shape, generator=self.generator, device=like.device, dtype=like.dtype)


def host_sigmas(sigmas: torch.Tensor | Sequence[float] | np.ndarray) -> np.ndarray:
    """The grid as a float64 NumPy array (read once, at the API edge), checked: 1-D, at least two
    levels, finite, strictly decreasing, non-negative and ending in 0."""
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.detach().to("cpu", torch.float64).numpy()
    grid = np.asarray(sigmas, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2:
        raise ValueError(f"sigmas must be a 1-D grid of at least 2 levels ending in 0, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)) or grid[-1] != 0.0 or np.any(grid[:-1] <= 0) or np.any(np.diff(grid) >= 0):
        raise ValueError(f"sigmas must be finite, strictly decreasing, positive and end in 0, got "
                         f"{np.array2string(grid[:4], precision=4)}...{grid[-1]:g}")
    return grid


@contextlib.contextmanager
def cuda_sync_debug(device: torch.device | str, mode: int | str = "error") -> Iterator[None]:
    """On CUDA, run the block under ``torch.cuda.set_sync_debug_mode(mode)`` ("error": any host
    sync inside raises; 0: none reported), restoring the previous mode after; a no-op elsewhere."""
    if torch.device(device).type != "cuda":
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def _read_once(flag: torch.Tensor) -> int:
    """The one intended read of the device per run, after the loop: exempt from
    ``torch.cuda.set_sync_debug_mode("error")``, which guards the loop itself."""
    with cuda_sync_debug(flag.device, 0):
        return int(flag)


StepFn = Callable[[int, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


def run_steps(name: str, step: StepFn, x: torch.Tensor, sigmas: np.ndarray, opts: SampleOptions,
              times: np.ndarray | None = None) -> torch.Tensor:
    """Run ``x, pred_x0 = step(i, x)`` for i = 0 .. n-1 (n = len(sigmas) - 1).

    ``times`` (host, one per step) fill ``StepInfo.t``; without them ``t`` is the step's sigma.
    Shows a progress bar, calls ``opts.callback`` with a :class:`StepInfo` after every step, and
    raises ``FloatingPointError`` after the loop if a step produced NaN or inf, naming the
    first such step (tracked on the device, read once at the end).
    """
    n = len(sigmas) - 1
    first_bad = torch.full((), -1, dtype=torch.long, device=x.device)
    for i in tqdm(range(n), desc=name, disable=not opts.progress, leave=False):
        x, pred_x0 = step(i, x)
        bad_now = ~torch.isfinite(x).all()
        first_bad = torch.where((first_bad < 0) & bad_now, torch.full_like(first_bad, i), first_bad)
        if opts.callback is not None:
            t = float(sigmas[i] if times is None else times[i])
            opts.callback(StepInfo(i, n, t, x, pred_x0, float(sigmas[i]), float(sigmas[i + 1])))
    bad = _read_once(first_bad)
    if bad >= 0:
        raise FloatingPointError(f"{name}: sampling produced NaN or inf at step {bad + 1} of {n} "
                                 f"(sigma={sigmas[bad]:.4g})")
    return x
