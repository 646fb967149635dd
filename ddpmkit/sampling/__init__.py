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
from .handoff import Handoff, HandoffDenoiser, handoff_grid
from .grids import GRIDS, SIGMA_MAX, SKIPS, karras_sigmas, respaced_for, sigma_grid, subsequence, time_grid
from .loop import SampleOptions, StepInfo, run_steps
from .multistep import deis, ipndm, ipndm_v, unipc
from .edm import dpmpp3m_sde, euler_churn, heun_churn
from .ode import euler, euler_step, heun, heun_step, rk45
from .score_sde import ald, ancestral_ve, euler_maruyama, pc, predictor_corrector, reverse_diffusion
from .plan import SamplingPlan, plan_sampling
from .registry import SAMPLERS, Sampler, register, register_alias
from .stochastic import ancestral_split, ddim, dpmpp2m_sde, euler_ancestral, langevin_step, posterior_step, sde
from .tune import TunedGrid, tune_grid

__all__ = ["sample", "invert", "SampleOptions", "StepInfo", "SAMPLERS", "Sampler", "register", "register_alias",
           "plan_sampling", "SamplingPlan", "SKIPS", "GRIDS", "SIGMA_MAX",
           "make_generator", "model_device", "subsequence", "respaced_for", "time_grid", "sigma_grid",
           "karras_sigmas", "run_steps", "euler", "heun", "rk45", "euler_ancestral", "ancestral_split", "ddim",
           "sde", "pc", "langevin_step", "dpmpp2m", "dpmpp3m", "dpmpp_multistep", "dpmpp_update",
           "dpmpp2m_sde", "ancestral_step", "ddpm", "dpmpp3m_sde", "heun_churn", "euler_churn", "ald",
           "reverse_diffusion", "euler_maruyama", "ancestral_ve", "predictor_corrector", "posterior_step",
           "euler_step", "heun_step", "ipndm", "ipndm_v", "deis", "unipc", "tune_grid", "TunedGrid",
           "Handoff", "HandoffDenoiser", "handoff_grid"]
