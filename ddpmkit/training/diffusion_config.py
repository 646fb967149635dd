"""The ``diffusion`` section of a training config: the process, named by ``process``, with its own
constructor's keywords beside the fields, flat, and the constructor as their judge.

    DiffusionConfig.from_dict({"process": "edm", "prediction": "edm", "sigma_data": 0.5}).build()   # EDM(...)

Also the small value checks every config section uses (:func:`fail`, :func:`check_option`,
:func:`check_at_least`): each a one-line ``ValueError`` naming the key and the value.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..config_base import DictConfig, coerce
from ..core.diffusion import VARIANCES
from ..core.losses import OBJECTIVES
from .build import PROCESSES, SCHEDULES, build_process, check_diffusion, process_keyword_hint, unused_key

__all__ = ["DiffusionConfig", "TIMESTEP_SAMPLERS", "fail", "check_option", "check_at_least"]

TIMESTEP_SAMPLERS = ("uniform", "importance")


def fail(owner: str, name: str, value: Any, why: str) -> None:
    """Raise the one-line ``owner.name why, got name=value``."""
    raise ValueError(f"{owner}.{name} {why}, got {name}={value!r}")


def check_option(owner: str, name: str, value: Any, options: Sequence[str]) -> None:
    """``value`` must be one of ``options``."""
    if value not in options:
        fail(owner, name, value, f"must be one of {list(options)}")


def check_at_least(owner: str, name: str, value: Any, low: float) -> None:
    """``value`` must be a number (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
        fail(owner, name, value, f"must be a number >= {low}")


@dataclass(frozen=True, init=False)
class DiffusionConfig(DictConfig):
    """The process and its objective: ``process`` names the class ("discrete", the default: DDPM sec.
    3-4, iDDPM sec. 3; or "ve" | "vp" | "subvp" | "edm" | "flow" | "consistency"), and the process's
    own constructor keywords sit beside the fields, flat, as in ``{process = "edm", sigma_data = 0.5}``:

        d = DiffusionConfig(process="edm", prediction="edm", sigma_data=0.5)
        d.sigma_data, d.sigma_min, d.to_dict()["sigma_data"]    # 0.5, None (the default), 0.5

    The constructor is the judge (:func:`build.check_diffusion`): a keyword it does not take is a
    one-line error naming the key, the process and the keys it takes; a bad value is its own
    one-line error. A keyword set to None is dropped (the constructor's default), so an old config
    that wrote every process's keys, most of them None, loads unchanged. The fields are the
    discrete chain's schedule, variance and objective and the loss's weighting."""

    schedule: str = "cosine"          # linear (DDPM) | cosine (iDDPM eq. 17) | sigmoid | scaled_linear
    T: int = 1000
    prediction: str = "eps"           # eps | x0 | v (discrete, vp, flow); score (ve); edm (edm)
    variance: str = "fixed_small"     # fixed_small | fixed_large | learned_range (iDDPM eq. 15)
    objective: str = "simple"         # simple (DDPM eq. 14) | vlb | hybrid (iDDPM eq. 16)
    timestep_sampler: str = "uniform"  # uniform | importance (iDDPM eq. 18)
    hybrid_lambda: float = 0.001
    process: str = "discrete"         # discrete | ve | vp | subvp | edm | flow | consistency
    weighting: str | None = None      # the loss weighting of a continuous process (its class's weightings)
    snr_gamma: float | None = None    # gamma of min_snr (Hang et al. 2023; 5)
    metric: str | None = None         # l2 (default) | pseudo_huber: the continuous loss's distance (score_losses)
    beta_range: tuple[float, ...] | None = None   # linear, scaled_linear: (first, last) beta as given
    process_args: tuple[tuple[str, Any], ...] = ()
    """The process keywords that are set, as sorted (key, value) pairs; read them as attributes."""

    def __init__(self, **keys: Any) -> None:
        args = dict(keys.pop("process_args", ()))
        for f in dataclasses.fields(self):
            if f.name != "process_args":
                object.__setattr__(self, f.name, keys.pop(f.name, f.default))
        args.update(keys)   # every other keyword is the process's
        object.__setattr__(self, "process_args", tuple(sorted((k, v) for k, v in args.items() if v is not None)))
        self.__post_init__()

    def __post_init__(self) -> None:
        owner = "diffusion"
        check_option(owner, "process", self.process, PROCESSES)
        check_option(owner, "schedule", self.schedule, SCHEDULES)
        if not isinstance(self.T, int) or isinstance(self.T, bool) or self.T < 1:
            fail(owner, "T", self.T, "must be an integer >= 1")
        check_option(owner, "variance", self.variance, VARIANCES)
        check_option(owner, "objective", self.objective, OBJECTIVES)
        check_option(owner, "timestep_sampler", self.timestep_sampler, TIMESTEP_SAMPLERS)
        check_at_least(owner, "hybrid_lambda", self.hybrid_lambda, 0.0)
        check_diffusion(self)   # the process's constructor and the loss's keys

    def __getattr__(self, name: str) -> Any:
        """A process keyword read like a field (``config.diffusion.sigma_min``): None when not set."""
        if name.startswith("_") or name == "process_args" or process_keyword_hint(name, self.process) is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return dict(self.process_args).get(name)

    @classmethod
    def key_hint(cls, key: str, process: str) -> Any:
        """The type of the ``diffusion`` key ``key`` for ``process``: a field's, else the process
        keyword's (:func:`build.process_keyword_hint`), else a one-line error naming the key."""
        if key in _FIELD_HINTS:
            return _FIELD_HINTS[key]
        hint = process_keyword_hint(key, process)
        if hint is None:
            unused_key(key, process)
        return hint

    def to_dict(self) -> dict[str, Any]:
        """The fields and then the process keywords that are set, flat; tuples as lists."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "process_args"}
        out.update(self.process_args)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DiffusionConfig":
        """Inverse of :meth:`to_dict`: each value type-checked by its field's type or by the process
        constructor's annotation (:meth:`key_hint`); a key no process takes is refused naming it."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{cls.__name__}.from_dict needs a mapping, got {type(d).__name__}")
        process, values = d.get("process", "discrete"), {}
        for key, value in d.items():
            if key == "process_args" or process_keyword_hint(key, process) is None and key not in _FIELD_HINTS:
                unused_key(key, process, value)
            values[key] = coerce("DiffusionConfig", key, value, cls.key_hint(key, process))
        return cls(**values)

    def build(self) -> Any:
        """The process: the class of ``process`` built from this config (:func:`build.build_process`)."""
        return build_process(self)

    def loss_options(self) -> dict[str, Any]:
        """The keyword arguments of the process's ``loss`` that this config sets: the discrete chain's
        ``objective`` and ``hybrid_lambda``; a continuous process's ``weighting`` and ``snr_gamma``
        (a key left None takes the process's default)."""
        if self.process == "discrete":
            return {"objective": self.objective, "hybrid_lambda": self.hybrid_lambda}
        options: dict[str, Any] = {"weighting": self.weighting}
        if self.snr_gamma is not None:
            options["snr_gamma"] = self.snr_gamma
        if self.metric is not None:
            options["metric"] = self.metric
        return options


_FIELD_HINTS = {k: v for k, v in typing.get_type_hints(DiffusionConfig).items() if k != "process_args"}
