"""From a config to objects: the network and the process, and the network's size-dependent fields.

    network = build_network(config.network)        # a U-Net comes channels-last
    process = build_process(config.diffusion)      # GaussianDiffusion, VE, VP, SubVP, EDM, RectifiedFlow, ...
    attention = attention_at_size((4,), old_size=8, new_size=28, levels=2)   # (14,)

The network kinds ("unet", "mlp", "pointnet", "unet1d") are those of :data:`ddpmkit.nets.NETWORK_KINDS`, the one
registry; :func:`network_kinds` returns it. Nothing here imports the config dataclasses (they call in).
"""
from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Mapping

import torch
from torch import nn

from ..core.score_losses import METRICS
from ..core.consistency import Consistency
from ..core.diffusion import GaussianDiffusion
from ..core.edm import EDM
from ..core.flow import RectifiedFlow
from ..core.schedules import Schedule
from ..core.sde_vp import VP, SubVP
from ..core.ve import VE
from ..nets import NETWORK_KINDS
from ..nets import build_network as _build_module

__all__ = ["network_kinds", "network_kind", "build_network", "build_process", "level_sides",
           "attention_at_size", "PROCESSES", "PROCESS_CLASSES", "process_keywords", "process_keyword_hint",
           "unused_key", "check_diffusion", "DISCRETE_ONLY", "describe_process", "SCHEDULES", "discrete_schedule"]

PROCESS_CLASSES: dict[str, type] = {"discrete": GaussianDiffusion, "ve": VE, "vp": VP, "subvp": SubVP, "edm": EDM,
                                    "flow": RectifiedFlow, "consistency": Consistency}
"""The class of each ``diffusion.process``: its constructor says which config keys the process takes."""
PROCESSES = tuple(PROCESS_CLASSES)
"""The values of ``diffusion.process``."""
SCHEDULES = ("linear", "cosine", "sigmoid", "scaled_linear")
"""The values of ``diffusion.schedule`` (the discrete process's, :meth:`Schedule.named`)."""

_FIELD_ARGUMENTS = ("prediction", "variance", "schedule")
"""Constructor arguments that the config's own fields supply (``schedule`` from schedule, T, beta_range)."""
DISCRETE_ONLY = {"variance": "fixed_small", "objective": "simple", "timestep_sampler": "uniform", "beta_range": None}
"""The discrete chain's config fields and their defaults (the loss options and the schedule's ends)."""


@functools.lru_cache(maxsize=None)
def process_keywords(process: str) -> tuple[str, ...]:
    """The config keys that ``process``'s constructor takes beyond the config's fields: the names in
    its signature (``sigma_data``, ``sigma_min``, ...), in order."""
    params = inspect.signature(PROCESS_CLASSES[process]).parameters.values()
    return tuple(p.name for p in params if p.name not in _FIELD_ARGUMENTS
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def process_keyword_hint(key: str, process: str) -> Any:
    """The type of a process keyword as ``X | None`` (None: the constructor's default), from the
    signature of ``process``'s constructor, else of the first process that takes ``key``; None
    when no process takes it."""
    for name in (process, *PROCESSES) if process in PROCESS_CLASSES else PROCESSES:
        if key in process_keywords(name):
            hint = typing.get_type_hints(PROCESS_CLASSES[name].__init__).get(key, Any)
            return hint | None if hint is not Any else Any
    return None


def unused_key(key: str, process: str, *value: Any) -> None:
    """The one-line error of a ``diffusion`` key that ``process`` does not take, naming the keys it
    takes (and the value, when one is given)."""
    taken = process_keywords(process) if process in PROCESS_CLASSES else ()
    got = f", got {key}={value[0]!r}" if value else ""
    raise ValueError(f"diffusion.{key} is not used by process={process!r} (it takes {list(taken)}){got}")


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


def check_diffusion(diffusion: Any) -> None:
    """One-line ValueErrors, naming the key, for what a ``DiffusionConfig``'s process cannot take.

    The process's constructor is the judge: a keyword it does not take (:func:`process_keywords`)
    is refused naming the process and the keys it takes, and the process is built, so a bad value
    is the constructor's own message. Beside it, the loss's keys: ``weighting`` (one of the
    class's ``weightings``; refused where it has none), ``snr_gamma`` > 0 (min_snr only), ``metric``
    (l2 or pseudo_huber, where ``weighting`` is taken), and the
    discrete chain's fields (:data:`DISCRETE_ONLY`) left at their defaults by the other processes.
    """
    process = diffusion.process
    cls, taken = PROCESS_CLASSES[process], process_keywords(process)
    try:   # the values first, by the constructor (its message starts with the argument's name)
        _construct(diffusion, {k: v for k, v in diffusion.process_args if k in taken})
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith("diffusion.") else f"diffusion.{message}") from None
    for key, value in diffusion.process_args:
        if key not in taken:
            unused_key(key, process, value)
    if process == "discrete":
        if diffusion.variance == "learned_range" and diffusion.objective == "simple":
            # L_simple has no gradient for the variance half (improved-diffusion switches to hybrid silently)
            _fail("objective", diffusion.objective, "leaves a learned_range variance untrained: use hybrid or vlb")
    else:
        for key, default in DISCRETE_ONLY.items():
            if getattr(diffusion, key) != default:
                _fail(key, getattr(diffusion, key), f"is for process='discrete' only (process={process!r} "
                      "trains with diffusion.weighting)")
    weightings = getattr(cls, "weightings", ())
    for key, used in (("weighting", bool(weightings)), ("snr_gamma", "min_snr" in weightings),
                      ("metric", bool(weightings))):
        if getattr(diffusion, key) is not None and not used:
            unused_key(key, process, getattr(diffusion, key))
    if diffusion.weighting is not None and diffusion.weighting not in weightings:
        _fail("weighting", diffusion.weighting, f"must be one of {list(weightings)} for process={process!r}")
    if diffusion.snr_gamma is not None and not diffusion.snr_gamma > 0:
        _fail("snr_gamma", diffusion.snr_gamma, "must be a number > 0")
    if diffusion.metric is not None and diffusion.metric not in METRICS:
        _fail("metric", diffusion.metric, f"must be one of {list(METRICS)}")


def describe_process(diffusion: Any) -> str:
    """``cosine/v/fixed_small/simple`` (discrete) or ``ve/score/ncsn`` (process/prediction/weighting)."""
    d = diffusion
    if d.process == "discrete":
        return f"{d.schedule}/{d.prediction}/{d.variance}/{d.objective}"
    return f"{d.process}/{d.prediction}/{d.weighting or PROCESS_CLASSES[d.process].default_weighting}"


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
    """The process a ``DiffusionConfig`` describes: the class of :data:`PROCESS_CLASSES` called with
    the config's ``prediction`` (and ``variance`` where it takes one), its schedule where it needs
    one, and the process keywords that are set (a key left out takes the constructor's default)."""
    return _construct(diffusion, dict(diffusion.process_args))


def _construct(diffusion: Any, keywords: dict[str, Any]) -> Any:
    cls = PROCESS_CLASSES[diffusion.process]
    params = inspect.signature(cls).parameters
    kwargs = {"prediction": diffusion.prediction, **keywords}
    if "variance" in params:
        kwargs["variance"] = diffusion.variance
    if "schedule" in params and (params["schedule"].default is inspect.Parameter.empty or diffusion.prediction == "v"):
        kwargs["schedule"] = discrete_schedule(diffusion)   # the chain itself, or a consistency model's v network
    return cls(**kwargs)


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
