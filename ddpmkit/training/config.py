"""Training configuration: frozen dataclasses, TOML presets, ``key=value`` overrides, JSON.

    cfg = load_config("digits", ["optim.lr=1e-3", "ema_rates=0.999,0.9999"])
    cfg.save("runs/x/config.json"); load_config("runs/x/config.json") == cfg

A preset is a small TOML file in ``ddpmkit/presets/`` (``toy2d``, ``digits``, ``mnist``,
``cifar10-ddpm``, ``cifar10-iddpm``); anything it leaves out takes the dataclass default.
Overrides use dotted keys and are parsed by the type of the field they set: ``1e-3``,
``true``, ``[1, 2, 2]`` or ``1,2,2`` for tuples, ``none`` for optional fields, bare words
for strings. An unknown key, a wrong type or a bad value is a one-line ``ValueError`` naming
the key and the value. The network section carries ``kind`` ("unet" or "mlp") to say which
config class it is; the data-dependent fields of the network (channels in and out, image
size) are filled in by the trainer and saved resolved.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..data.config import DataConfig
from ..core.diffusion import PREDICTIONS, VARIANCES, GaussianDiffusion
from ..core.losses import OBJECTIVES
from ..nets import build_network, network_config_to_dict
from ..nets.layers import DictConfig
from ..sampling import SAMPLERS
from ..core.schedules import Schedule

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "DiffusionConfig",
    "OptimConfig",
    "TrainConfig",
    "load_config",
    "apply_overrides",
    "check_resumable",
    "list_presets",
    "network_kinds",
    "PRECISIONS",
]

SCHEDULES = ("linear", "cosine", "sigmoid")
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


def network_kinds() -> dict[str, type]:
    """``{kind: config class}`` of the networks in :mod:`ddpmkit.nets`."""
    from ..nets import MLPConfig, UNetConfig

    return {"unet": UNetConfig, "mlp": MLPConfig}


def _network_kind(network: Any) -> str:
    for kind, cls in network_kinds().items():
        if type(network) is cls:
            return kind
    raise ValueError(f"network must be one of the configs {list(network_kinds())}, got {type(network).__name__}")


@dataclass(frozen=True)
class DiffusionConfig(DictConfig):
    """The process and the objective (DDPM sec. 3-4; iDDPM sec. 3)."""

    schedule: str = "cosine"          # linear (DDPM) | cosine (iDDPM eq. 17) | sigmoid
    T: int = 1000
    prediction: str = "eps"           # eps | x0 | v
    variance: str = "fixed_small"     # fixed_small | fixed_large | learned_range (iDDPM eq. 15)
    objective: str = "simple"         # simple (DDPM eq. 14) | vlb | hybrid (iDDPM eq. 16)
    timestep_sampler: str = "uniform"  # uniform | importance (iDDPM eq. 18)
    hybrid_lambda: float = 0.001

    def __post_init__(self) -> None:
        owner = "diffusion"
        _choice(owner, "schedule", self.schedule, SCHEDULES)
        if not isinstance(self.T, int) or isinstance(self.T, bool) or self.T < 1:
            _fail(owner, "T", self.T, "must be an integer >= 1")
        _choice(owner, "prediction", self.prediction, PREDICTIONS)
        _choice(owner, "variance", self.variance, VARIANCES)
        _choice(owner, "objective", self.objective, OBJECTIVES)
        _choice(owner, "timestep_sampler", self.timestep_sampler, TIMESTEP_SAMPLERS)
        _at_least(owner, "hybrid_lambda", self.hybrid_lambda, 0.0)
        if self.variance == "learned_range" and self.objective == "simple":
            # L_simple has no gradient for the variance half (improved-diffusion switches to hybrid silently)
            _fail(owner, "objective", self.objective, "leaves a learned_range variance untrained: use hybrid or vlb")

    def build(self) -> GaussianDiffusion:
        """The :class:`GaussianDiffusion` this config describes."""
        return GaussianDiffusion(Schedule.named(self.schedule, self.T), self.prediction, self.variance)


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
        _network_kind(self.network)
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

    # ------------------------------------------------------------------ dict / JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values; the network section is tagged with its ``kind``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "network":
                value = network_config_to_dict(value)
            elif hasattr(value, "to_dict"):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; sections may be partial (defaults fill the rest)."""
        if not isinstance(values, Mapping):
            raise ValueError(f"TrainConfig.from_dict needs a mapping, got {type(values).__name__}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in hints:
                raise ValueError(f"unknown config key {key!r} (value {value!r}); known: {sorted(hints)}")
            section = _section_class(key, values)
            if section is not None:
                if not isinstance(value, Mapping):
                    raise ValueError(f"config section {key!r} must be a table, got {key}={value!r}")
                body = {k: v for k, v in value.items() if not (key == "network" and k == "kind")}
                value = section.from_dict(body)
            else:
                value = _check_type(key, value, hints[key])
            kwargs[key] = value
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the config as JSON, atomically."""
        from ..io.checkpoint import write_json

        return write_json(path, self.to_dict())

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def network_kind(self) -> str:
        return _network_kind(self.network)

    def build_network(self) -> Any:
        """The ``nn.Module`` that ``network`` describes (freshly initialised). A U-Net comes in
        the channels-last memory format: its convolutions run about 20% faster on the CPU."""
        network = build_network(self.network)
        if self.network_kind == "unet":
            network = network.to(memory_format=torch.channels_last)
        return network


def check_resumable(saved: TrainConfig, config: TrainConfig, sections: Sequence[str], where: Any) -> None:
    """One-line ValueError unless ``saved`` (a checkpoint's config) and ``config`` agree on ``sections``:
    a resumed run must keep the data, the process and the networks it was started with."""
    for section in sections:
        if getattr(saved, section) != getattr(config, section):
            raise ValueError(f"cannot resume from {where}: its config.{section} differs from this run's "
                             f"({getattr(saved, section)!r} vs {getattr(config, section)!r})")


def _section_class(key: str, values: Mapping[str, Any]) -> type | None:
    """The config class of a nested section, or None for a plain field."""
    if key == "data":
        return DataConfig
    if key == "diffusion":
        return DiffusionConfig
    if key == "optim":
        return OptimConfig
    if key == "network":
        section = values.get("network") or {}
        kind = section.get("kind", "unet") if isinstance(section, Mapping) else "unet"
        kinds = network_kinds()
        if kind not in kinds:
            raise ValueError(f"network.kind must be one of {list(kinds)}, got kind={kind!r}")
        return kinds[kind]
    return None


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against a field's type (ints pass as floats, lists become tuples)."""
    base, optional = _unwrap_optional(hint)
    if value is None and optional:
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(base) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key!r} must be a list, got {key}={value!r}")
        return tuple(_check_type(key, v, typing.get_args(base)[0]) for v in value)
    expected = base if isinstance(base, type) else object
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"config key {key!r} must be {expected.__name__}, got {key}={value!r}")
    return value


# ---------------------------------------------------------------------------- overrides
def _field_hint(key: str, tree: Mapping[str, Any]) -> Any:
    """The type hint of a dotted key, or a one-line error if there is no such field."""
    parts = key.split(".")
    top_hints = typing.get_type_hints(TrainConfig)
    head = parts[0]
    if head not in top_hints:
        raise ValueError(f"unknown config key {key!r}; known: {sorted(top_hints)}")
    section = _section_class(head, tree)
    if section is None:
        if len(parts) > 1:
            raise ValueError(f"config key {head!r} has no sub-keys, got {key!r}")
        return top_hints[head]
    if len(parts) != 2:
        raise ValueError(f"config key {key!r} must name a field of the {head!r} section, e.g. {head}.<field>")
    if head == "network" and parts[1] == "kind":
        return str
    hints = typing.get_type_hints(section)
    if parts[1] not in hints:
        raise ValueError(f"unknown config key {key!r}; {head} has: {sorted(hints)}")
    return hints[parts[1]]


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return inner[0], True
    return hint, False


def _parse_scalar(text: str, hint: Any) -> Any:
    """One value from override text: TOML literal syntax where it parses, else the bare text."""
    base, optional = _unwrap_optional(hint)
    if optional and text.lower() in ("none", "null"):
        return None
    if base is str:
        return text
    if base is bool and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _parse_value(text: str, hint: Any) -> Any:
    text = text.strip()
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        inner = text[1:-1] if text[:1] in "[(" and text[-1:] in "])" else text
        return [_parse_scalar(part.strip(), item) for part in inner.split(",") if part.strip()]
    return _parse_scalar(text, hint)


def _apply_one(tree: dict[str, Any], item: str) -> None:
    key, text = (s.strip() for s in item.split("=", 1))
    hint = _field_hint(key, tree)
    value = _check_type(key, _parse_value(text, hint), hint)
    value = list(value) if isinstance(value, tuple) else value
    parts = key.split(".")
    if len(parts) == 1:
        tree[key] = value
    elif key == "network.kind":
        if value != (tree.get("network") or {}).get("kind", "unet"):
            tree["network"] = {"kind": value}   # a new kind starts from its defaults
    else:
        tree.setdefault(parts[0], {})[parts[1]] = value


def _apply_all(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the config dict with the ``"key=value"`` strings applied, each checked on its own."""
    tree: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in values.items()}
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"an override must look like key=value, got {item!r}")
        try:
            _apply_one(tree, item)
        except ValueError as err:
            raise ValueError(f"bad override {item!r}: {err}") from None
    return tree


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``"key=value"`` strings to a config dict (see the module docstring); checks each,
    then the whole result."""
    tree = _apply_all(values, overrides)
    try:
        TrainConfig.from_dict(tree)
    except ValueError as err:
        raise ValueError(f"bad override: {err}") from None
    return tree


# ---------------------------------------------------------------------------- presets
def list_presets() -> list[str]:
    """Names of the presets shipped in ``ddpmkit/presets``."""
    folder = resources.files("ddpmkit") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_source(source: str | Path) -> tuple[dict[str, Any], str]:
    """The raw dict of a preset name, a .toml / .json file or a run directory."""
    text_source = str(source)
    if text_source in list_presets():
        preset = resources.files("ddpmkit") / "presets" / f"{text_source}.toml"
        return tomllib.loads(preset.read_text()), f"preset {text_source!r}"
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"config {text_source!r} is neither a preset {list_presets()} nor a file")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text()), str(path)
        raw = json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"config file {path} cannot be parsed: {err}") from None
    if isinstance(raw, dict) and "config" in raw and "format" in raw:   # a checkpoint's JSON
        raw = raw["config"]
    return raw, str(path)


def load_config(source: str | Path = "digits", overrides: Sequence[str] = ()) -> TrainConfig:
    """A :class:`TrainConfig` from a preset name, a TOML/JSON file or a run directory, with
    ``key=value`` overrides applied in order."""
    raw, where = _read_source(source)
    tree = _apply_all(raw, list(overrides))   # checked once, after the overrides: they may complete the file
    try:
        return TrainConfig.from_dict(tree)
    except ValueError as err:
        raise ValueError(f"{where}{' with its overrides' if overrides else ''}: {err}") from None
