"""Exact likelihood by the probability-flow ODE (Song et al. 2021, sec. 4.3 and app. D.2).

The ODE is solved in the variables of the noise-level contract (:mod:`ddpmkit.core.process`):
``y = x / sqrt(alpha_bar) = x_0 + sigma eps`` and ``u = log sigma``, where
``dy/du = y - D(y, sigma) =: F(y, u)`` with the process's denoiser D. By the instantaneous
change of variables (Chen et al. 2018, thm. 1),

    log p_{u_min}(y(u_min)) = log p_{u_max}(y(u_max)) + int_{u_min}^{u_max} div_y F(y(u), u) du,

and both ``y`` and the integral are carried by torchdiffeq's adaptive Dormand-Prince 5(4)
solver (``dopri5``, the method of scipy's RK45) on the data's own device, from
``u_min = log sigma(t_min)`` (the first training step) up to ``u_max = log sigma(t_max)``.

What density this is. The discrete model knows noise levels down to ``sigma_min = sigma(0) =
sqrt(beta_1 / (1 - beta_1))`` only (0.01 for DDPM's linear schedule), so the density evaluated
is the model's density of ``x_0 + sigma_min eps`` in the ``y`` coordinates, taken at the data
point itself. It is a proper density on R^D, so for dequantised data it gives a valid bound.

Prior. ``x(tau_max) = sqrt(alpha_bar_T) y`` is scored under N(0, I), as in score_sde. Since
``alpha_bar_T > 0`` (4e-5 for the linear schedule) this is the standard approximation of the
true marginal N(sqrt(alpha_bar_T) x_0, 1 - alpha_bar_T) convolved with the data; its error is
about the prior term of the variational bound (:func:`ddpmkit.likelihood.bound.prior_bpd`).

Quantised data. Data in [-1, 1] with ``levels`` values has bins of width
``delta = 2 / (levels - 1)`` centred on the values (as the discretized decoder of DDPM eq. 13).
Uniform dequantisation adds ``delta (u - 1/2)``, u ~ U(0, 1)^D; by Jensen,
``-log P(x) <= E_u[-log p(x + delta (u - 1/2))] - D log delta``, so

    bits/dim = -log p(x_dequantised) / (D ln 2) - log2(delta) = ... + log2((levels - 1) / 2),

an upper bound in expectation, and at most ``log2(levels)`` for the uniform density.

Adaptive solvers take a different number of steps (network calls) for every batch: in
DistributedDataParallel, ranks would fall out of step (k-diffusion issue #79). Run it outside
DDP (one process per shard, no collective calls inside), or under ``model.module``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torchdiffeq import odeint
from tqdm.auto import tqdm


__all__ = ["ODELikelihoodResult", "ode_bpd", "TRACES"]

LN2 = math.log(2.0)
TRACES = ("hutchinson", "exact")


@dataclass(frozen=True)
class ODELikelihoodResult:
    """Per-example results of :func:`ode_bpd` (float64 CPU tensors, shape (B,)), all in nats but ``bpd``.

    ``nll = -(prior_logp + delta_logp)`` is the negative log-density of the continuous model at
    the (dequantised) input, for the whole example; ``bpd`` adds the bin width when ``levels``
    is set. ``nfe`` counts the solver's function evaluations (network calls). ``latent`` is
    the input carried to ``t_max`` by the ODE, in x coordinates (about N(0, I)), on the data's
    device and dtype: the encoding that the probability-flow ODE maps back onto the input.
    """

    bpd: torch.Tensor
    nll: torch.Tensor
    prior_logp: torch.Tensor
    delta_logp: torch.Tensor
    nfe: int
    levels: int | None
    trace: str
    latent: torch.Tensor


def _divergence(drift: torch.Tensor, y: torch.Tensor, trace: str, probe: torch.Tensor | None) -> torch.Tensor:
    """div_y drift per example: exact (one backward pass per dimension) or Hutchinson-Skilling."""
    B = y.shape[0]
    if trace == "hutchinson":
        assert probe is not None
        (grad,) = torch.autograd.grad((drift * probe).sum(), y)
        return (grad * probe).reshape(B, -1).sum(dim=1)
    flat = drift.reshape(B, -1)
    D = flat.shape[1]
    div = torch.zeros(B, dtype=drift.dtype, device=drift.device)
    for i in range(D):   # examples are independent, so one pass gives d drift_i / d y_i for all
        (grad,) = torch.autograd.grad(flat[:, i].sum(), y, retain_graph=i < D - 1)
        div = div + grad.reshape(B, -1)[:, i]
    return div


def ode_bpd(
    process: Any,
    model: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    levels: int | None = 256,
    trace: str = "hutchinson",
    generator: torch.Generator | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    dequantize: bool = True,
    progress: bool = True,
    **cond: Any,
) -> ODELikelihoodResult:
    """Bits/dim of each example by the probability-flow ODE (Song et al. 2021, eq. 39-40).

    ``process`` is any process on the noise-level contract (the discrete GaussianDiffusion, or a
    continuous one with ``prior_std``): the ODE runs from its ``sigma_min`` to ``sigma_max``
    and the end point is scored under its prior N(0, prior_std^2 I).

    Args:
        levels: quantisation levels of the data in [-1, 1] (256 for 8-bit images, 17 for the
            scikit-learn digits), or None for continuous data (then bits/dim of the density).
        trace: ``"hutchinson"`` (Skilling-Hutchinson estimator with one Rademacher probe per
            example, fixed for the whole solve; unbiased, one backward pass per evaluation) or
            ``"exact"`` (one backward pass per dimension: small data only).
        generator: source of the dequantisation noise and the probes.
        rtol, atol: the dopri5 tolerances (score_sde uses 1e-5 for both with scipy's RK45).
        dequantize: add uniform noise within each bin (with ``levels``); without it the density
            is read at the bin centres, which is not a bound.
        cond: extra keyword arguments for the model.

    The solve is joint over the batch (one step-size control), so the step count and
    ``nfe`` depend on the batch: see the module notes on DDP.
    """
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.dim() < 2:
        raise ValueError("x0 must be a floating-point tensor of shape (B, ...)")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or infinite values")
    if levels is not None and (not isinstance(levels, (int, np.integer)) or isinstance(levels, bool) or levels < 2):
        raise ValueError(f"levels must be an integer >= 2 or None, got levels={levels!r}")
    if trace not in TRACES:
        raise ValueError(f"trace must be one of {list(TRACES)}, got trace={trace!r}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {name}={value!r}")
    if levels is not None and float(x0.abs().max()) > 1.0 + 1e-6:
        raise ValueError(f"x0 must lie in [-1, 1] when levels is set, got max |x0| = {float(x0.abs().max()):g}")

    D = process.denoiser(model)
    shape, dtype, device = x0.shape, x0.dtype, x0.device
    B, D_dim = shape[0], x0[0].numel()
    x = x0
    if levels is not None and dequantize:
        bin_width = 2.0 / (levels - 1)
        x = x0 + bin_width * (torch.rand(shape, generator=generator, device=device, dtype=dtype) - 0.5)
    probe = None
    if trace == "hutchinson":
        probe = torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1

    sigma_min, sigma_max = process.sigma_min, process.sigma_max
    u_start, u_end = math.log(sigma_min), math.log(sigma_max)
    bar = tqdm(total=1000, desc="ode_bpd", disable=not progress, leave=False)
    nfe = 0

    def rhs(u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal nfe
        nfe += 1
        with torch.enable_grad():
            y = state[0].detach().requires_grad_(True)
            drift = y - D(y, torch.exp(u.clamp(span[0], span[1])), **cond)   # the first-step probe may overshoot
            div = _divergence(drift, y, trace, probe)
        if progress:
            bar.n = int(1000 * (float(u) - u_start) / max(u_end - u_start, 1e-12))
            bar.refresh()
        return drift.detach(), div.detach()

    y_end, delta_logp = x, torch.zeros(B, dtype=dtype, device=device)
    span = torch.tensor([u_start, u_end], dtype=dtype).to(device)
    if u_end > u_start:
        try:
            ys, logps = odeint(rhs, (x, delta_logp), span, rtol=float(rtol), atol=float(atol), method="dopri5")
        finally:
            bar.close()
        y_end, delta_logp = ys[-1], logps[-1]
        if not (torch.isfinite(y_end).all() and torch.isfinite(delta_logp).all()):
            raise FloatingPointError("ode_bpd: the ODE solver produced NaN or inf")
    else:
        bar.close()
    scale_max = float(process.scale(process.t_of_sigma(sigma_max)))
    prior_std = float(getattr(process, "prior_std", 1.0))
    latent = y_end * scale_max
    x_end = latent.detach().reshape(B, -1).to("cpu", torch.float64)   # the summaries: float64, on the host
    delta_logp = delta_logp.detach().to("cpu", torch.float64)
    # the prior N(0, prior_std^2 I) of x = s y, read in y: log p_y(y) = log p_x(s y) + D log s
    z = x_end / prior_std
    prior_logp = (-0.5 * (z**2 + math.log(2 * math.pi))).sum(dim=1) + D_dim * math.log(scale_max / prior_std)
    nll = -(prior_logp + delta_logp)
    bpd = nll / (D_dim * LN2)
    if levels is not None:
        bpd = bpd + math.log2((levels - 1) / 2.0)
    return ODELikelihoodResult(bpd=bpd, nll=nll, prior_logp=prior_logp, delta_logp=delta_logp, nfe=nfe,
                               levels=levels, trace=trace, latent=latent.detach().reshape(shape))
