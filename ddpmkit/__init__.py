"""ddpmkit: denoising diffusion models (DDPM, improved DDPM, DDIM, score-SDE samplers, guidance).

    import ddpmkit as dk
    process = dk.GaussianDiffusion(dk.Schedule.cosine(1000), prediction="eps", variance="learned_range")
    loss = process.loss(model, x0, objective="hybrid").mean()
"""
from .schedules import Schedule, space_timesteps
from .diffusion import GaussianDiffusion, ModelPrediction
from .losses import ImportanceSampler, UniformSampler, training_losses, make_timestep_sampler
from .likelihood import VLBResult, vlb_bpd

__version__ = "0.1.0"

__all__ = [
    "Schedule",
    "space_timesteps",
    "GaussianDiffusion",
    "ModelPrediction",
    "training_losses",
    "UniformSampler",
    "ImportanceSampler",
    "make_timestep_sampler",
    "VLBResult",
    "vlb_bpd",
]
