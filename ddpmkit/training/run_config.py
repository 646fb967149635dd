"""The training configuration as frozen dataclasses: :class:`TrainConfig` and its sections
:class:`DiffusionConfig` and :class:`OptimConfig` (with ``DataConfig`` and the network configs of
:mod:`ddpmkit.nets`), each checking its own values, and their round trip through plain dicts/JSON.

    cfg = TrainConfig.from_dict(json.loads(path.read_text())); cfg.save(path)

Every bad value is a one-line ``ValueError`` naming the key and the value. Presets and
``key=value`` overrides live in :mod:`.presets` and :mod:`.overrides`; :mod:`.config` gathers every public name.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config_base import DictConfig, coerce   # the one type check of every config field
from ..core.diffusion import VARIANCES
from ..core.losses import OBJECTIVES
from ..data.config import DataConfig
from ..io.files import write_json
from ..nets import network_config_from_dict, network_config_to_dict
from ..sampling import SAMPLERS
from .build import PROCESSES, SCHEDULES, build_network, build_process, check_process_keys, network_kind, network_kinds

__all__ = ["DiffusionConfig", "OptimConfig", "TrainConfig", "check_resumable", "SECTIONS", "PRECISIONS",
           "SCHEDULES", "TIMESTEP_SAMPLERS", "LR_DECAYS", "PROCESSES"]

TIMESTEP_SAMPLERS = ("uniform", "importance")
LR_DECAYS = ("constant", "cosine", "linear")
PRECISIONS = ("fp32", "bf16", "fp16")


def _fail(owner: str, name: str, value: Any, why: str) -> None:
    raise ValueError(f"{owner}.{name} {why}, got {name}={value!r}")


def _choice(owner: str, name: str, value: Any, options: Sequence[str]) -> None:
    if value not in options:
        _fail(owner, name, value, f"must be one of {list(options)}")


def _at_least(owner: str, name: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
        _fail(owner, name, value, f"must be a number >= {low}")


@dataclass(frozen=True)
class DiffusionConfig(DictConfig):
    """The process and its objective: "discrete" (the default; DDPM sec. 3-4, iDDPM sec. 3) or a continuous
    "ve" | "vp" | "subvp" | "edm" | "flow" (weighted DSM); a key left None takes the process's default."""

    schedule: str = "cosine"          # linear (DDPM) | cosine (iDDPM eq. 17) | sigmoid | scaled_linear
    T: int = 1000
    prediction: str = "eps"           # eps | x0 | v (discrete, vp, flow); score (ve); edm (edm)
    variance: str = "fixed_small"     # fixed_small | fixed_large | learned_range (iDDPM eq. 15)
    objective: str = "simple"         # simple (DDPM eq. 14) | vlb | hybrid (iDDPM eq. 16)
    timestep_sampler: str = "uniform"  # uniform | importance (iDDPM eq. 18)
    hybrid_lambda: float = 0.001
    process: str = "discrete"         # discrete | ve | vp | subvp | edm | flow
    weighting: str | None = None      # ncsn | likelihood | min_snr | edm | flow (continuous only)
    snr_gamma: float | None = None    # gamma of min_snr (Hang et al. 2023; 5)
    sigma_min: float | None = None    # ve (0.01), edm (0.002)
    sigma_max: float | None = None    # ve (50), edm (80)
    score_scaling: bool | None = None  # ve: NCSNv2 technique 3, score = F / sigma
    time_scale: float | None = None   # ve (1), vp / subvp / flow (999): the network sees time_scale * t
    beta_min: float | None = None     # vp / subvp (0.1)
    beta_max: float | None = None     # vp / subvp (20)
    t_min: float | None = None        # vp / subvp (1e-5), flow (1e-3)
    t_max: float | None = None        # flow (1 - 1e-3): sigma(t_max) = t_max / (1 - t_max)
    time_sampling: str | None = None  # flow: uniform | logit_normal (logit t ~ N(p_mean, p_std^2), SD3)
    sigma_data: float | None = None   # edm (0.5)
    p_mean: float | None = None       # edm (-1.2), flow (0)
    p_std: float | None = None        # edm (1.2), flow (1)
    beta_range: tuple[float, ...] | None = None   # linear, scaled_linear: (first, last) beta as given

    def __post_init__(self) -> None:
        owner = "diffusion"
        _choice(owner, "process", self.process, PROCESSES)
        _choice(owner, "schedule", self.schedule, SCHEDULES)
        if not isinstance(self.T, int) or isinstance(self.T, bool) or self.T < 1:
            _fail(owner, "T", self.T, "must be an integer >= 1")
        _choice(owner, "variance", self.variance, VARIANCES)
        _choice(owner, "objective", self.objective, OBJECTIVES)
        _choice(owner, "timestep_sampler", self.timestep_sampler, TIMESTEP_SAMPLERS)
        _at_least(owner, "hybrid_lambda", self.hybrid_lambda, 0.0)
        check_process_keys(self)   # prediction, variance vs objective, and the keys of each process

    def build(self) -> Any:
        """The process: a GaussianDiffusion, or a VE / VP / SubVP / EDM (:func:`build.build_process`)."""
        return build_process(self)

    @property
    def continuous(self) -> bool:   # a continuous-time process, not the discrete GaussianDiffusion
        return self.process != "discrete"

    def loss_options(self) -> dict[str, Any]:
        """The keyword arguments of the process's ``loss`` that this config sets: the discrete chain's
        ``objective`` and ``hybrid_lambda``; a continuous process's ``weighting`` and ``snr_gamma``
        (a key left None takes the process's default)."""
        if self.process == "discrete":
            return {"objective": self.objective, "hybrid_lambda": self.hybrid_lambda}
        options: dict[str, Any] = {"weighting": self.weighting}
        if self.snr_gamma is not None:
            options["snr_gamma"] = self.snr_gamma
        return options


@dataclass(frozen=True)
class OptimConfig(DictConfig):
    """AdamW with linear warm-up, optional decay, gradient clipping, micro-batches.

    ``batch_size`` is the global batch (all ranks together); ``micro_batch`` > 0 splits each
    rank's share into pieces of at most that size whose gradients are accumulated.
    ``grad_clip`` 0 turns clipping off. ``decay`` shapes the rate after warm-up: constant
    (DDPM), or cosine / linear down to 0 at ``steps``.
    """

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    warmup: int = 0
    decay: str = "constant"
    grad_clip: float = 1.0
    batch_size: int = 128
    micro_batch: int = 0
    steps: int = 10000

    def __post_init__(self) -> None:
        owner = "optim"
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            _fail(owner, "lr", self.lr, "must be a number > 0")
        _at_least(owner, "weight_decay", self.weight_decay, 0.0)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            _fail(owner, "betas", self.betas, "must be two numbers in [0, 1)")
        _at_least(owner, "eps", self.eps, 0.0)
        _choice(owner, "decay", self.decay, LR_DECAYS)
        _at_least(owner, "grad_clip", self.grad_clip, 0.0)
        for name, low in (("warmup", 0), ("batch_size", 1), ("micro_batch", 0), ("steps", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                _fail(owner, name, value, f"must be an integer >= {low}")

    def lr_at(self, step: int) -> float:
        """The learning rate of update number ``step + 1``: linear warm-up, then ``decay``."""
        if self.warmup and step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.decay == "constant" or self.steps <= self.warmup:
            return self.lr
        progress = min(1.0, (step - self.warmup) / (self.steps - self.warmup))
        if self.decay == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr * (1.0 - progress)


def _default_network() -> Any:
    return network_kinds()["unet"]()


SECTIONS: dict[str, type] = {"data": DataConfig, "diffusion": DiffusionConfig, "optim": OptimConfig}
"""The nested sections whose class does not depend on their content (the network's depends on its kind)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved as JSON beside its checkpoints.

    Attributes:
        name: a label (the preset's name).
        data / network / diffusion / optim: the nested sections.
        ema_rates: one EMA of the weights per rate (the first is used for samples).
        ema_warmup: decay min(rate, (1 + n) / (10 + n)) after n updates (see ddpmkit.training.ema).
        precision: fp32, bf16 (autocast on CPU and CUDA) or fp16 (autocast + GradScaler, CUDA).
        compile: run the training forward/backward through ``torch.compile`` (opt-in: the first
            steps pay the compile time; the big gain is on a GPU; on CPU it needs a C++ compiler).
        tf32: allow TensorFloat-32 matrix multiplications and convolutions on CUDA (Ampere and
            newer; about 10 bits of mantissa in the products, float32 range and accumulation).
        class_dropout: probability of replacing a label by the null class (classifier-free
            guidance, Ho & Salimans 2022); needs ``network.num_classes``.
        seed: the seed of every random stream of the run.
        out: the run directory (config.json, checkpoints/, samples/, metrics.jsonl).
        log_every / sample_every / checkpoint_every: intervals in steps (0 = never; the final
            step always gets a checkpoint).
        sample_count / sample_sampler / sample_steps: the preview grid, drawn with the first EMA.
        keep_last: keep this many checkpoints (0 = all).
        num_threads: torch.set_num_threads (0 = leave torch's default).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    """

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    network: Any = field(default_factory=_default_network)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema_rates: tuple[float, ...] = (0.9999,)
    ema_warmup: bool = False
    precision: str = "fp32"
    compile: bool = False
    tf32: bool = True
    class_dropout: float = 0.0
    seed: int = 0
    out: str = "runs/run"
    log_every: int = 100
    sample_every: int = 0
    sample_count: int = 64
    sample_sampler: str = "ddim"
    sample_steps: int = 50
    checkpoint_every: int = 5000
    keep_last: int = 3
    num_threads: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        network_kind(self.network)
        rates = self.ema_rates
        if not rates or any(not 0.0 <= r < 1.0 for r in rates) or len(set(rates)) != len(rates):
            _fail(owner, "ema_rates", rates, "must be distinct numbers in [0, 1)")
        _choice(owner, "precision", self.precision, PRECISIONS)
        for name in ("compile", "tf32"):
            if not isinstance(getattr(self, name), bool):
                _fail(owner, name, getattr(self, name), "must be true or false")
        cd = self.class_dropout
        if isinstance(cd, bool) or not isinstance(cd, (int, float)) or not 0.0 <= cd < 1.0:
            _fail(owner, "class_dropout", cd, "must be a number in [0, 1)")
        if cd > 0 and getattr(self.network, "num_classes", None) is None:
            _fail(owner, "class_dropout", cd, "needs a class-conditional network (set network.num_classes)")
        for name, low in (("seed", 0), ("log_every", 1), ("sample_every", 0), ("sample_count", 1),
                          ("sample_steps", 1), ("checkpoint_every", 0), ("keep_last", 0),
                          ("num_threads", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                _fail(owner, name, value, f"must be an integer >= {low}")
        for name in ("name", "out", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                _fail(owner, name, getattr(self, name), "must be a non-empty string")
        _choice(owner, "sample_sampler", self.sample_sampler, sorted(SAMPLERS))   # not only at the first preview
        if self.diffusion.continuous and SAMPLERS[self.sample_sampler].discrete:
            _fail(owner, "sample_sampler", self.sample_sampler, f"needs process='discrete', not {self.diffusion.process!r}")

    # ------------------------------------------------------------------ dict / JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: each section by its own ``to_dict`` (the network's tagged with
        its ``kind`` by :func:`ddpmkit.nets.network_config_to_dict`), tuples as lists."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "network":
                value = network_config_to_dict(value)
            elif f.name in SECTIONS:
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; sections may be partial (defaults fill the rest), a network
        section without ``kind`` is a U-Net. Unknown keys and wrong types are one-line errors."""
        if not isinstance(values, Mapping):
            raise ValueError(f"TrainConfig.from_dict needs a mapping, got {type(values).__name__}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in hints:
                raise ValueError(f"unknown config key {key!r} (value {value!r}); known: {sorted(hints)}")
            if key in SECTIONS or key == "network":
                if not isinstance(value, Mapping):
                    raise ValueError(f"config section {key!r} must be a table, got {key}={value!r}")
                if key == "network":
                    value = network_config_from_dict({"kind": "unet", **value})
                else:
                    value = SECTIONS[key].from_dict(value)
            else:
                value = coerce("TrainConfig", key, value, hints[key])
            kwargs[key] = value
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the config as JSON, atomically."""
        return write_json(path, self.to_dict())

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def network_kind(self) -> str:
        return network_kind(self.network)

    def build_network(self) -> Any:
        """The ``nn.Module`` that ``network`` describes, freshly initialised (see
        :func:`build.build_network`: a U-Net comes channels-last)."""
        return build_network(self.network)


def check_resumable(saved: TrainConfig, config: TrainConfig, sections: Sequence[str], where: Any) -> None:
    """One-line ValueError unless ``saved`` (a checkpoint's config) and ``config`` agree on ``sections``:
    a resumed run must keep the data, the process and the networks it was started with."""
    for section in sections:
        if getattr(saved, section) != getattr(config, section):
            raise ValueError(f"cannot resume from {where}: its config.{section} differs from this run's "
                             f"({getattr(saved, section)!r} vs {getattr(config, section)!r})")
