"""From a config to objects: the network and the process, and the network's size-dependent fields.

    network = build_network(config.network)        # a U-Net comes channels-last
    process = build_process(config.diffusion)      # a GaussianDiffusion, or a VE / VP / SubVP / EDM
    attention = attention_at_size((4,), old_size=8, new_size=28, levels=2)   # (14,)

The network kinds ("unet", "mlp", "pointnet", "unet1d") are those of :data:`ddpmkit.nets.NETWORK_KINDS`, the one
registry; :func:`network_kinds` returns it. Nothing here imports the config dataclasses (they call in).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..core.consistency import Consistency
from ..core.diffusion import PREDICTIONS, GaussianDiffusion
from ..core.edm import EDM
from ..core.flow import RectifiedFlow
from ..core.schedules import Schedule
from ..core.sde_vp import VP, SubVP
from ..core.ve import VE
from ..nets import NETWORK_KINDS
from ..nets import build_network as _build_module

__all__ = ["network_kinds", "network_kind", "build_network", "build_process", "level_sides",
           "attention_at_size", "PROCESSES", "PROCESS_KEYS", "CONTINUOUS_KEYS", "continuous_class",
           "check_process_keys", "describe_process", "SCHEDULES", "discrete_schedule"]

CONTINUOUS_PROCESSES: dict[str, type] = {"ve": VE, "vp": VP, "subvp": SubVP, "edm": EDM, "flow": RectifiedFlow,
                                         "consistency": Consistency}
PROCESSES = ("discrete",) + tuple(CONTINUOUS_PROCESSES)
"""The values of ``diffusion.process``."""
SCHEDULES = ("linear", "cosine", "sigmoid", "scaled_linear")
"""The values of ``diffusion.schedule`` (the discrete process's, :meth:`Schedule.named`)."""

_LOSS_KEYS = ("weighting", "snr_gamma")
PROCESS_KEYS: dict[str, tuple[str, ...]] = {
    "discrete": (),
    "ve": _LOSS_KEYS + ("sigma_min", "sigma_max", "score_scaling", "time_scale"),
    "vp": _LOSS_KEYS + ("beta_min", "beta_max", "t_min", "time_scale"),
    "subvp": _LOSS_KEYS + ("beta_min", "beta_max", "t_min", "time_scale"),
    "edm": _LOSS_KEYS + ("sigma_data", "sigma_min", "sigma_max", "p_mean", "p_std"),
    "flow": _LOSS_KEYS + ("t_min", "t_max", "time_sampling", "p_mean", "p_std", "time_scale"),
    "consistency": ("sigma_data", "sigma_min", "sigma_max", "p_mean", "p_std"),   # prediction "v": schedule, T too
}
"""The ``diffusion`` keys each process uses beyond ``prediction`` (None in a config: the process's default)."""
CONTINUOUS_KEYS = tuple(dict.fromkeys(k for keys in PROCESS_KEYS.values() for k in keys))


def continuous_class(process: str) -> type:
    """The class of a continuous ``diffusion.process`` ("ve", "vp", "subvp", "edm")."""
    if process not in CONTINUOUS_PROCESSES:
        raise ValueError(f"process must be one of {list(CONTINUOUS_PROCESSES)}, got process={process!r}")
    return CONTINUOUS_PROCESSES[process]


def network_kinds() -> Mapping[str, type]:
    """``{kind: config class}`` of the networks: :data:`ddpmkit.nets.NETWORK_KINDS` itself (read-only)."""
    return NETWORK_KINDS


def network_kind(network: Any) -> str:
    """The kind of a network config ("unet", "mlp", "pointnet", "unet1d"), or a one-line ValueError for anything else."""
    for kind, cls in network_kinds().items():
        if type(network) is cls:
            return kind
    raise ValueError(f"network must be one of the configs {list(network_kinds())}, got {type(network).__name__}")


def build_network(network: Any) -> nn.Module:
    """The ``nn.Module`` a network config describes, freshly initialised. A U-Net comes in the
    channels-last memory format: its convolutions run about 20% faster on the CPU."""
    module = _build_module(network)
    if network_kind(network) == "unet":
        module = module.to(memory_format=torch.channels_last)
    return module


def _fail(key: str, value: Any, why: str) -> None:
    raise ValueError(f"diffusion.{key} {why}, got {key}={value!r}")


def check_process_keys(diffusion: Any) -> None:
    """One-line ValueErrors, naming the key, for what a ``DiffusionConfig``'s process cannot take.

    The discrete process: its ``prediction``; ``objective`` "simple" with a learned variance.
    Every process: a key of :data:`CONTINUOUS_KEYS` set (not None) that it does not use. A
    continuous process: ``variance``, ``objective`` or ``timestep_sampler`` away from their
    defaults (``schedule``, ``T``, ``hybrid_lambda`` are ignored), a ``prediction`` or
    ``weighting`` it does not take, ``snr_gamma`` <= 0, and the process's own checks
    (sigma_min < sigma_max, ...).
    """
    if diffusion.process == "discrete":
        discrete_schedule(diffusion, T=1)   # beta_range: two values, for the linear schedules only
        if diffusion.prediction not in PREDICTIONS:
            _fail("prediction", diffusion.prediction, f"must be one of {list(PREDICTIONS)}")
        if diffusion.variance == "learned_range" and diffusion.objective == "simple":
            # L_simple has no gradient for the variance half (improved-diffusion switches to hybrid silently)
            _fail("objective", diffusion.objective, "leaves a learned_range variance untrained: use hybrid or vlb")
    used = PROCESS_KEYS[diffusion.process]
    for key in CONTINUOUS_KEYS + (() if diffusion.process == "discrete" else ("beta_range",)):
        if getattr(diffusion, key) is not None and key not in used:
            _fail(key, getattr(diffusion, key), f"is not used by process={diffusion.process!r} (it takes {list(used)})")
    if diffusion.process == "discrete":
        return
    for key, default in (("variance", "fixed_small"), ("objective", "simple"), ("timestep_sampler", "uniform")):
        if getattr(diffusion, key) != default:
            _fail(key, getattr(diffusion, key), f"is for process='discrete' only (process={diffusion.process!r} "
                  "trains with diffusion.weighting)")
    cls = continuous_class(diffusion.process)
    for key, options in (("prediction", cls.predictions), ("weighting", cls.weightings)):
        value = getattr(diffusion, key)
        if value is not None and value not in options:
            _fail(key, value, f"must be one of {list(options)} for process={diffusion.process!r}")
    if diffusion.snr_gamma is not None and not diffusion.snr_gamma > 0:
        _fail("snr_gamma", diffusion.snr_gamma, "must be a number > 0")
    try:
        build_process(diffusion)
    except ValueError as err:   # the process's own message starts with the argument's name
        raise ValueError(f"diffusion.{err}") from None


def describe_process(diffusion: Any) -> str:
    """``cosine/v/fixed_small/simple`` (discrete) or ``ve/score/ncsn`` (process/prediction/weighting)."""
    d = diffusion
    if d.process == "discrete":
        return f"{d.schedule}/{d.prediction}/{d.variance}/{d.objective}"
    return f"{d.process}/{d.prediction}/{d.weighting or continuous_class(d.process).default_weighting}"


def discrete_schedule(diffusion: Any, T: int | None = None) -> Schedule:
    """The :class:`Schedule` of a discrete ``DiffusionConfig`` (``T`` overrides its length): the named
    schedule, with ``beta_range`` = (first, last) beta taken as given (diffusers' beta_start/end)."""
    beta_range = diffusion.beta_range
    if beta_range is not None and (len(beta_range) != 2 or diffusion.schedule not in ("linear", "scaled_linear")):
        _fail("beta_range", beta_range, "must be two numbers (first and last beta) of a linear or scaled_linear schedule")
    try:
        return Schedule.named(diffusion.schedule, T or diffusion.T, *(beta_range or (None, None)))
    except ValueError as err:
        raise ValueError(f"diffusion.beta_range={beta_range!r}: {err}" if beta_range else f"diffusion.{err}") from None


def build_process(diffusion: Any) -> Any:
    """The process a ``DiffusionConfig`` describes: :class:`GaussianDiffusion` for "discrete",
    else ``VE`` / ``VP`` / ``SubVP`` / ``EDM`` with the keys of :data:`PROCESS_KEYS` that are set
    (the loss keys ``weighting`` and ``snr_gamma`` are the trainer's, not the process's)."""
    if diffusion.process == "discrete":
        return GaussianDiffusion(discrete_schedule(diffusion), diffusion.prediction,
                                 diffusion.variance)
    cls = continuous_class(diffusion.process)
    kwargs = {k: getattr(diffusion, k) for k in PROCESS_KEYS[diffusion.process]
              if k not in _LOSS_KEYS and getattr(diffusion, k) is not None}
    if diffusion.process == "consistency" and diffusion.prediction == "v":   # the chain's network and time
        kwargs["schedule"] = discrete_schedule(diffusion)
    return cls(prediction=diffusion.prediction, **kwargs)


def level_sides(image_size: int, levels: int) -> tuple[int, ...]:
    """The feature-map side at each of a U-Net's ``levels`` for ``image_size`` inputs."""
    return tuple(image_size // 2 ** k for k in range(levels))


def attention_at_size(attention: tuple[int, ...], old_size: int, new_size: int,
                      levels: int) -> tuple[int, ...] | None:
    """``attention`` resolutions written for ``old_size`` inputs, moved to the same U-Net levels
    at ``new_size`` (attention at 4 of 8 -> at 14 of 28: the second level either way); None when
    one of them is not a level side at ``old_size`` (then there is no level to keep)."""
    old_sides = level_sides(old_size, levels)
    if any(r not in old_sides for r in attention):
        return None
    new_sides = level_sides(new_size, levels)
    return tuple(new_sides[old_sides.index(r)] for r in attention)
