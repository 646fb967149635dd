"""Sampling: small stateless samplers over a denoiser and a sigma grid, and ``sample``.

``sample(process, model, shape, sampler="ddim", steps=50, ...)`` is the one entry point: it
builds ``D = process.denoiser(model)`` and the sigma grid, and calls the named sampler. The
samplers are public functions in the k-diffusion style, ``fn(D, x, sigmas, opts=None, ...)``
(``dk.samplers.euler``, ``heun``, ``euler_ancestral``, ``sde``, ``pc``, ``dpmpp_2m``, ...);
``ddpm`` is DDPM's discrete chain (it needs the process's variance). ``invert`` is DDIM
inversion, undone by ``sample(..., sampler="ddim", steps=S, x_T=z)``.
"""
from __future__ import annotations

from .ancestral import ancestral, ancestral_step
from .api import make_generator, model_device, sample
from .ddim import invert
from .dpm_solver import dpmpp_2m, dpmpp_3m, dpmpp_multistep, dpmpp_update
from .grids import GRIDS, SIGMA_MAX, SKIPS, karras_sigmas, respaced_for, sigma_grid, subsequence, time_grid
from .loop import SampleOptions, StepInfo, run_steps
from .ode import euler, heun, rk45
from .registry import SAMPLERS, Sampler, register
from .stochastic import (ancestral_split, dpmpp_2m_sde, euler_ancestral, langevin_step, predictor_corrector,
                         reverse_sde)

sde = reverse_sde
pc = predictor_corrector
ddpm = ancestral

__all__ = ["sample", "invert", "SampleOptions", "StepInfo", "SAMPLERS", "Sampler", "register", "SKIPS", "GRIDS", "SIGMA_MAX",
           "make_generator", "model_device", "subsequence", "respaced_for", "time_grid", "sigma_grid",
           "karras_sigmas", "run_steps", "euler", "heun", "rk45", "euler_ancestral", "ancestral_split",
           "reverse_sde", "sde", "predictor_corrector", "pc", "langevin_step", "dpmpp_2m", "dpmpp_3m",
           "dpmpp_multistep", "dpmpp_update", "dpmpp_2m_sde", "ancestral", "ancestral_step", "ddpm"]
