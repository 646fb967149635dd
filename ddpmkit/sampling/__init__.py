"""Sampling: small stateless samplers over a denoiser and a sigma grid, and ``sample``.

``sample(process, model, shape, sampler="ddim", steps=50, ...)`` is the one entry point: it
builds ``D = process.denoiser(model)`` and the sigma grid, and calls the named sampler. The
samplers are public functions in the k-diffusion style, ``fn(D, x, sigmas, opts=None, ...)``
named as registered (``dk.samplers.euler``, ``heun``, ``ddim``, ``sde``, ``pc``, ``dpmpp2m``, ...);
``ddpm`` is DDPM's discrete chain (it needs the process's variance). ``invert`` is DDIM
inversion, undone by ``sample(..., sampler="ddim", steps=S, x_T=z)``.
"""
from __future__ import annotations

from .ancestral import ancestral_step, ddpm
from .api import make_generator, model_device, sample
from .ddim import invert
from .dpm_solver import dpmpp2m, dpmpp3m, dpmpp_multistep, dpmpp_update
from .grids import GRIDS, SIGMA_MAX, SKIPS, karras_sigmas, respaced_for, sigma_grid, subsequence, time_grid
from .loop import SampleOptions, StepInfo, run_steps
from .ode import euler, heun, rk45
from .registry import SAMPLERS, Sampler, register
from .stochastic import ancestral_split, ddim, dpmpp2m_sde, euler_ancestral, langevin_step, pc, sde

__all__ = ["sample", "invert", "SampleOptions", "StepInfo", "SAMPLERS", "Sampler", "register", "SKIPS", "GRIDS", "SIGMA_MAX",
           "make_generator", "model_device", "subsequence", "respaced_for", "time_grid", "sigma_grid",
           "karras_sigmas", "run_steps", "euler", "heun", "rk45", "euler_ancestral", "ancestral_split", "ddim",
           "sde", "pc", "langevin_step", "dpmpp2m", "dpmpp3m", "dpmpp_multistep", "dpmpp_update",
           "dpmpp2m_sde", "ancestral_step", "ddpm"]
