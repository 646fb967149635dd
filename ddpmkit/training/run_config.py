"""The training configuration as frozen dataclasses: :class:`TrainConfig` and its sections
:class:`OptimConfig` and :class:`DiffusionConfig` (in :mod:`.diffusion_config`, with ``DataConfig`` and
the network configs of :mod:`ddpmkit.nets`), each checking its own values, and their round trip through plain dicts/JSON.

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
from ..data.config import DataConfig
from ..data.kinds import check_data_record
from ..io.files import write_json
from ..nets import network_config_from_dict, network_config_to_dict
from ..sampling import SAMPLERS
from ..sampling.grids import grids_for
from .build import PROCESSES, SCHEDULES, build_network, network_kind, network_kinds
from .diffusion_config import TIMESTEP_SAMPLERS, DiffusionConfig, check_at_least, check_option, fail

__all__ = ["DiffusionConfig", "OptimConfig", "TrainConfig", "check_resumable", "SECTIONS", "PRECISIONS",
           "SCHEDULES", "TIMESTEP_SAMPLERS", "LR_DECAYS", "PROCESSES"]

LR_DECAYS = ("constant", "cosine", "linear")
PRECISIONS = ("fp32", "bf16", "fp16")


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
            fail(owner, "lr", self.lr, "must be a number > 0")
        check_at_least(owner, "weight_decay", self.weight_decay, 0.0)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            fail(owner, "betas", self.betas, "must be two numbers in [0, 1)")
        check_at_least(owner, "eps", self.eps, 0.0)
        check_option(owner, "decay", self.decay, LR_DECAYS)
        check_at_least(owner, "grad_clip", self.grad_clip, 0.0)
        for name, low in (("warmup", 0), ("batch_size", 1), ("micro_batch", 0), ("steps", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                fail(owner, name, value, f"must be an integer >= {low}")

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
        sample_count / sample_sampler / sample_steps: the preview grid, drawn with the first EMA;
            the sampler and steps are also what ``ddpmkit sample RUN`` uses when none is named.
        sample_grid: the sigma grid of the previews and of ``ddpmkit sample RUN`` without ``--grid``
            (None: the sampler's own at its step count); a progressive student records the grid it
            was distilled on (``trailing``), off which its few calls lose their meaning.
        keep_last: keep this many checkpoints (0 = all).
        num_threads: torch.set_num_threads (0 = leave torch's default).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        data_kind / data_shape / data_levels: what the data set said it holds (image, points,
            series or vector), one example's shape and its quantisation levels (None: continuous),
            recorded by the trainer (``resolve_config``); None in a config that has not trained
            (and in runs older than these fields: :func:`ddpmkit.runs.data_record` asks their data).
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
    sample_grid: str | None = None
    checkpoint_every: int = 5000
    keep_last: int = 3
    num_threads: int = 0
    device: str = "auto"
    data_kind: str | None = None
    data_shape: tuple[int, ...] | None = None
    data_levels: int | None = None

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        network_kind(self.network)
        if (self.data_kind, self.data_shape, self.data_levels) != (None, None, None):
            check_data_record(owner, self.data_kind, self.data_shape, self.data_levels)
        rates = self.ema_rates
        if not rates or any(not 0.0 <= r < 1.0 for r in rates) or len(set(rates)) != len(rates):
            fail(owner, "ema_rates", rates, "must be distinct numbers in [0, 1)")
        check_option(owner, "precision", self.precision, PRECISIONS)
        for name in ("compile", "tf32"):
            if not isinstance(getattr(self, name), bool):
                fail(owner, name, getattr(self, name), "must be true or false")
        cd = self.class_dropout
        if isinstance(cd, bool) or not isinstance(cd, (int, float)) or not 0.0 <= cd < 1.0:
            fail(owner, "class_dropout", cd, "must be a number in [0, 1)")
        if cd > 0 and getattr(self.network, "num_classes", None) is None:
            fail(owner, "class_dropout", cd, "needs a class-conditional network (set network.num_classes)")
        for name, low in (("seed", 0), ("log_every", 1), ("sample_every", 0), ("sample_count", 1),
                          ("sample_steps", 1), ("checkpoint_every", 0), ("keep_last", 0),
                          ("num_threads", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                fail(owner, name, value, f"must be an integer >= {low}")
        for name in ("name", "out", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                fail(owner, name, getattr(self, name), "must be a non-empty string")
        check_option(owner, "sample_sampler", self.sample_sampler, sorted(SAMPLERS))   # not only at the first preview
        process = self.diffusion.build()
        if SAMPLERS[self.sample_sampler].discrete and process.training_steps is None:
            fail(owner, "sample_sampler", self.sample_sampler,
                  f"needs process='discrete' (discrete training steps), not {self.diffusion.process!r}")
        if self.sample_grid is not None:
            check_option(owner, "sample_grid", self.sample_grid,
                         grids_for(process, SAMPLERS[self.sample_sampler].discrete))

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
