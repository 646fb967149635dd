"""ddpmkit: denoising diffusion models (DDPM, improved DDPM, DDIM, score-SDE samplers, guidance).

    import ddpmkit as dk
    process = dk.GaussianDiffusion(dk.Schedule.cosine(1000), prediction="eps", variance="learned_range")
    loss = process.loss(model, x0, objective="hybrid").mean()   # every process: process.loss(model, x0)
    x = dk.sample(process, model, (64, 3, 32, 32), sampler="dpmpp2m", steps=20, seed=0)
"""
from .core.schedules import Schedule, space_timesteps
from .core.process import Process, ProcessDenoiser
from .core.diffusion import GaussianDiffusion, ModelPrediction
from .core.edm import EDM
from .core.flow import RectifiedFlow
from .core.sde_vp import VP, SubVP
from .core.ve import VE, ncsn_sigmas
from .core.losses import ImportanceSampler, UniformSampler, training_losses, make_timestep_sampler
from .likelihood.bound import VLBResult, vlb_bpd
from .likelihood.ode import ODELikelihoodResult, ode_bpd
from .sampling import SAMPLERS, SampleOptions, StepInfo, invert, sample, tune_grid
from . import sampling as samplers   # dk.samplers.euler(D, x, sigmas), dk.samplers.heun, ...
from .inverse import ddim_edit, inpaint, sdedit, solve_inverse
from .data import ArrayDataset, DataConfig, load_dataset, to_uint8_images
from .nets import MLP, MLPConfig, UNet, UNetConfig, build_network
from .published.convert import export_checkpoint, import_checkpoint
from .training.distill import distill
from .core.consistency import Consistency
from .runs import Run, load_run

__version__ = "0.1.0"

__all__ = [
    "Schedule",
    "space_timesteps",
    "Process",
    "ProcessDenoiser",
    "GaussianDiffusion",
    "VE",
    "VP",
    "SubVP",
    "EDM",
    "RectifiedFlow",
    "ncsn_sigmas",
    "ModelPrediction",
    "training_losses",
    "UniformSampler",
    "ImportanceSampler",
    "make_timestep_sampler",
    "VLBResult",
    "vlb_bpd",
    "ODELikelihoodResult",
    "ode_bpd",
    "sample",
    "tune_grid",
    "samplers",
    "invert",
    "inpaint",
    "solve_inverse",
    "sdedit",
    "ddim_edit",
    "SAMPLERS",
    "SampleOptions",
    "StepInfo",
    "DataConfig",
    "ArrayDataset",
    "load_dataset",
    "to_uint8_images",
    "UNet",
    "UNetConfig",
    "MLP",
    "MLPConfig",
    "build_network",
    "import_checkpoint",
    "export_checkpoint",
    "load_run",
    "Run",
    "distill",
    "Consistency",
]
