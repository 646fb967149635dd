"""``sample(process, model, shape, sampler=..., steps=...)``: the one entry point.

It checks every argument once (the API edge), takes the sigma grid, the start level and the
prior from the one sampling plan (:func:`ddpmkit.sampling.plan.plan_sampling`), draws x_T on the
sample's device, and hands them to the named sampler; nothing inside the sampling loop reads the
device.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .handoff import Handoff, HandoffDenoiser, check_handoff, handoff_grid
from .loop import SampleOptions, StepInfo
from .plan import plan_sampling, scale_at
from .registry import check_params, lookup

__all__ = ["sample", "make_generator", "model_device"]


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def model_device(model: Any) -> torch.device | None:
    """The device of ``model``'s first parameter, looking through wrappers that keep the network
    as ``.model`` or ``.module`` (guidance, DDP); None for a parameter-free callable."""
    seen = 0
    while model is not None and seen < 8:
        if isinstance(model, torch.nn.Module):
            for p in model.parameters():
                return p.device
            for b in model.buffers():
                return b.device
        model = getattr(model, "model", None) or getattr(model, "module", None)
        seen += 1
    return None


def _snap(t: float) -> float:
    r = round(t)
    return float(r) if abs(t - r) <= 1e-7 * max(1.0, abs(t)) else float(t)


def _process_callback(process: Any, callback: Callable[[StepInfo], None] | None,
                      rescale: bool) -> Callable[[StepInfo], None] | None:
    """The user's callback with ``t`` in the process's time and ``x`` in its scaling (x_t)."""
    if callback is None:
        return None

    def report(info: StepInfo) -> None:
        t = _snap(float(process.t_of_sigma(info.sigma)))
        x = info.x * scale_at(process, info.sigma_next) if rescale and info.sigma_next > 0 else info.x
        callback(StepInfo(info.i, info.n, t, x, info.pred_x0, info.sigma, info.sigma_next))

    return report


def sample(
    process: Any,
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
    handoff: Handoff | None = None,
    **params: Any,
) -> torch.Tensor:
    """Draw ``shape[0]`` samples from ``model`` with the named sampler.

    ``process`` is the discrete :class:`GaussianDiffusion` or any process on the noise-level
    contract (``denoiser``, ``sigma``, ``scale``, ``t_of_sigma``, ``sigma_min``, ``sigma_max``,
    ``t_min``, ``t_max``, ``prior_std``): x_T is drawn from its prior N(0, prior_std^2 I).

    Args:
        sampler: one of ``SAMPLERS`` ("ddpm", "ddim", "euler", "heun", "rk45", "sde", "pc",
            "dpmpp2m", "dpmpp3m", ...; ``ddpmkit samplers`` lists them and their aliases).
        steps: the number of steps (default: the process's training steps T); must lie in
            [1, T] (ignored by ``rk45``, which picks its own).
        generator / seed: the source of randomness (a seed makes a generator on the device).
        x_T: the starting noise (e.g. from :func:`invert`); drawn from N(0, I) when None.
            ``shape`` may then be None.
        device: where to sample; default: x_T's device, else the model's parameters', else CPU.
        params: ``grid`` (discrete: a step sub-sequence or ``"karras"``, each sampler has its
            default; continuous: ``"uniform"`` in t, ``"logsnr"`` (geometric in sigma) or
            ``"karras"``: the sampler's own where it is one of these, else the process's
            ``default_grid``),
            ``rho`` (karras), and the sampler's own parameters, e.g. ``eta`` for DDIM.
        handoff: another model for the last step (:class:`~ddpmkit.sampling.handoff.Handoff`):
            the grid gets ``handoff.sigma`` before its final 0 and every call at a level <= it
            goes to ``handoff.model`` (a distilled student's one call, then its teacher's).
    """
    entry = lookup(sampler)
    check_params(entry, params)
    if shape is None:
        if x_T is None:
            raise ValueError("shape must be given when x_T is None, got shape=None")
        shape = tuple(x_T.shape)
    if len(shape) < 1 or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"shape must hold positive integers, got shape={tuple(shape)}")
    grid, rho = params.pop("grid", None), params.pop("rho", 7.0)
    plan = plan_sampling(process, sampler, steps, grid, rho, x_T_given=x_T is not None, params=params)
    if handoff is not None:
        check_handoff(handoff)
        if plan.chain is not None:
            raise ValueError(f"a hand-off needs a sampler over the denoiser, not DDPM's chain: got sampler={sampler!r}")
        plan = plan_sampling(process, sampler, None, handoff_grid(plan.sigmas, handoff.sigma), rho,
                             x_T_given=x_T is not None, params=params)
    if device is None:
        device = x_T.device if x_T is not None else (model_device(model) or torch.device("cpu"))
    if generator is None and seed is not None:
        generator = make_generator(seed, device)
    if x_T is None:   # the prior N(0, prior_std^2 I) in the process's own scaling
        x_T = plan.draw_x_T(shape, generator, device)
    elif tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T must have shape {tuple(shape)}, got {tuple(x_T.shape)}")
    if not x_T.is_floating_point():
        raise ValueError(f"x_T must be a floating-point tensor, got dtype {x_T.dtype}")
    opts = SampleOptions(generator=generator, progress=progress, cond=dict(cond or {}), clip_x0=clip_x0,
                         callback=_process_callback(process, callback, rescale=plan.chain is None))
    if plan.chain is not None:   # DDPM's chain on the respaced process, in x_t
        return plan.entry.fn(plan.chain, model, x_T, opts, **plan.params)
    x_hat = x_T / plan.start_scale
    D = process.denoiser(model, clip_x0)
    if handoff is not None:
        D = HandoffDenoiser(D, handoff.process.denoiser(handoff.model, clip_x0), handoff.sigma)
    return plan.entry.fn(D, x_hat, plan.sigmas, opts, **plan.params)
