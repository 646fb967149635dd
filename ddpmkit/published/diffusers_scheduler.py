"""diffusers' scheduler configs (``scheduler_config.json``) to and from ddpmkit's discrete process.

The keys that define the process are shared by DDPMScheduler, DDIMScheduler and the other discrete
schedulers: ``num_train_timesteps`` (T), ``beta_schedule`` with ``beta_start`` / ``beta_end`` or
``trained_betas``, ``prediction_type`` and (DDPM) ``variance_type``; ``clip_sample`` is the
sampling-time clipping of the predicted x_0. Keys that only shape a sampler's steps
(``timestep_spacing``, ``steps_offset``, ``set_alpha_to_one``, ``use_karras_sigmas``...) are not
part of the process and are ignored: ddpmkit picks its grid when it samples.

    diffusion, clip_x0 = diffusion_from_scheduler(json.loads(text), "scheduler_config.json", learned=False)
    config = scheduler_config(diffusion, clip_sample=False)      # a DDPMScheduler config

Schedules (Ho et al. 2020, sec. 4; Nichol & Dhariwal 2021, eq. 17): ``linear`` -> ddpmkit's linear
with the endpoints as given; ``scaled_linear`` -> ``scaled_linear``; ``squaredcos_cap_v2`` ->
``cosine`` (the same alpha_bar(t) = cos^2(((t/T + 0.008)/1.008) pi/2), betas clipped at 0.999);
``trained_betas`` -> whichever ddpmkit schedule equals them to float32 precision.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..core.schedules import Schedule
from ..training.build import discrete_schedule
from ..training.run_config import DiffusionConfig

__all__ = ["SCHEDULER_CLASSES", "SCHEDULER_DEFAULTS", "diffusion_from_scheduler", "scheduler_config"]

SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "prediction_type": "epsilon",
}
"""The process keys' defaults, common to every class of :data:`SCHEDULER_CLASSES` (diffusers 0.42)."""

SCHEDULER_CLASSES: dict[str, dict[str, Any]] = {
    "DDPMScheduler": {"variance_type": "fixed_small", "clip_sample": True},
    "DDIMScheduler": {"clip_sample": True},
    "DDPMParallelScheduler": {"variance_type": "fixed_small", "clip_sample": True},
    "DDIMParallelScheduler": {"clip_sample": True},
    "PNDMScheduler": {},
    "DPMSolverMultistepScheduler": {},
    "DPMSolverSinglestepScheduler": {},
    "DEISMultistepScheduler": {},
    "UniPCMultistepScheduler": {},
    "EulerDiscreteScheduler": {},
    "EulerAncestralDiscreteScheduler": {},
    "HeunDiscreteScheduler": {"beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False},
    "LMSDiscreteScheduler": {},
}
"""Scheduler classes whose process keys mean the same thing, with the defaults of their other
process-related keys (a class without ``clip_sample`` does not clip)."""

_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
_VARIANCES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
              "fixed_large_log": "fixed_large", "learned_range": "learned_range"}
_OFF = {"thresholding": False, "rescale_betas_zero_snr": False, "clip_sample_range": 1.0}
"""Options ddpmkit's process and samplers lack: only these values are accepted."""


def _bad(where: str, key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{where}: {key}={value!r} {why}")


def _from_trained_betas(betas: Any, T: int, where: str) -> dict[str, Any]:
    """The ddpmkit schedule keys whose betas equal ``trained_betas`` to float32 precision."""
    try:
        given = np.asarray(betas, dtype=np.float64)
    except (TypeError, ValueError):
        raise _bad(where, "trained_betas", type(betas).__name__, "is not a list of numbers") from None
    if given.shape != (T,) or not np.all(given > 0):
        raise _bad(where, "trained_betas", f"<{given.size} values>", f"must be {T} positive numbers")
    candidates = [{"schedule": name} for name in ("linear", "cosine", "sigmoid")]
    candidates += [{"schedule": name, "beta_range": (float(given[0]), float(given[-1]))}
                   for name in ("linear", "scaled_linear")]
    for keys in candidates:
        try:
            ours = Schedule.named(keys["schedule"], T, *keys.get("beta_range", (None, None))).betas
        except ValueError:
            continue
        if np.allclose(ours, given, rtol=1e-6, atol=0.0):
            return keys
    raise _bad(where, "trained_betas", f"<{T} values>", "match none of ddpmkit's schedules "
               "(linear, scaled_linear, cosine, sigmoid)")


def diffusion_from_scheduler(config: Mapping[str, Any], where: str, learned: bool
                             ) -> tuple[DiffusionConfig, bool]:
    """``(DiffusionConfig, clip_x0)`` for a diffusers scheduler config (a one-line ValueError naming
    ``where``, the key and the value for what does not map). ``learned``: the network outputs
    twice the image channels (a learned variance needs ``variance_type="learned_range"``)."""
    name = config.get("_class_name")
    if name not in SCHEDULER_CLASSES:
        raise _bad(where, "_class_name", name, f"is not a scheduler ddpmkit reads ({sorted(SCHEDULER_CLASSES)})")
    cfg = {**SCHEDULER_DEFAULTS, **SCHEDULER_CLASSES[name], **{k: v for k, v in config.items() if v is not None}}
    for key, allowed in _OFF.items():
        if key in cfg and cfg[key] != allowed:
            raise _bad(where, key, cfg[key], f"is not supported (ddpmkit has only {key}={allowed!r})")
    T = cfg["num_train_timesteps"]
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise _bad(where, "num_train_timesteps", T, "must be an integer >= 1")
    if cfg["prediction_type"] not in _PREDICTIONS:
        raise _bad(where, "prediction_type", cfg["prediction_type"], f"is not one of {list(_PREDICTIONS)}")
    variance = cfg.get("variance_type", "learned_range" if learned else "fixed_small")
    if variance not in _VARIANCES:
        raise _bad(where, "variance_type", variance, f"is not supported (ddpmkit maps {list(_VARIANCES)}; "
                   "'learned' without a range is not)")
    if (_VARIANCES[variance] == "learned_range") != learned:
        raise _bad(where, "variance_type", variance, "does not fit the network, whose out_channels are "
                   f"{'twice' if learned else 'equal to'} its in_channels")
    if cfg["trained_betas"] is not None:
        keys = _from_trained_betas(cfg["trained_betas"], T, where)
    elif cfg["beta_schedule"] in ("linear", "scaled_linear"):
        keys = {"schedule": cfg["beta_schedule"], "beta_range": (float(cfg["beta_start"]), float(cfg["beta_end"]))}
    elif cfg["beta_schedule"] == "squaredcos_cap_v2":
        keys = {"schedule": "cosine"}
    else:
        raise _bad(where, "beta_schedule", cfg["beta_schedule"], "is not supported "
                   "(ddpmkit maps linear, scaled_linear, squaredcos_cap_v2 and trained_betas)")
    variance = _VARIANCES[variance]
    try:
        diffusion = DiffusionConfig(T=T, prediction=_PREDICTIONS[cfg["prediction_type"]], variance=variance,
                                    objective="hybrid" if variance == "learned_range" else "simple", **keys)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    clip = cfg.get("clip_sample", False)
    if not isinstance(clip, bool):
        raise _bad(where, "clip_sample", clip, "must be true or false")
    return diffusion, clip


def scheduler_config(diffusion: DiffusionConfig, clip_sample: bool = False) -> dict[str, Any]:
    """A ``DDPMScheduler`` config for a discrete ddpmkit process (every key written out).

    linear / scaled_linear keep their endpoints (ddpmkit's default linear at T != 1000 has them
    scaled by 1000 / T), cosine is ``squaredcos_cap_v2``, and sigmoid goes as ``trained_betas``
    (float64 values; diffusers casts them to float32).
    """
    if diffusion.process != "discrete":
        raise ValueError(f"diffusion.process={diffusion.process!r} cannot be written as a diffusers scheduler "
                         "(only the discrete process can)")
    schedule = discrete_schedule(diffusion)
    config: dict[str, Any] = {"_class_name": "DDPMScheduler", "num_train_timesteps": diffusion.T,
                              "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "trained_betas": None}
    if diffusion.schedule == "cosine":
        config["beta_schedule"] = "squaredcos_cap_v2"
    elif diffusion.schedule in ("linear", "scaled_linear"):
        scale = 1000.0 / diffusion.T if diffusion.schedule == "linear" else 1.0   # ddpmkit's default linear
        start, end = diffusion.beta_range or (1e-4 * scale, 0.02 * scale)
        config.update(beta_schedule=diffusion.schedule, beta_start=start, beta_end=end)
        if not np.allclose(Schedule.named(diffusion.schedule, diffusion.T, start, end).betas, schedule.betas,
                           rtol=1e-12, atol=0.0):   # betas clipped at 0.999 (T < 21): not a linspace
            config["trained_betas"] = [float(b) for b in schedule.betas]
    else:
        config["trained_betas"] = [float(b) for b in schedule.betas]
    inverse = {v: k for k, v in _PREDICTIONS.items()}
    config.update(variance_type=diffusion.variance, clip_sample=bool(clip_sample), clip_sample_range=1.0,
                  prediction_type=inverse[diffusion.prediction], thresholding=False,
                  timestep_spacing="leading", steps_offset=0, rescale_betas_zero_snr=False)
    return config
