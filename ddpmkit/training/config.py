"""Training configuration: every public name, gathered from the modules that hold them.

    cfg = load_config("digits", ["optim.lr=1e-3", "ema_rates=0.999,0.9999"])
    cfg.save("runs/x/config.json"); load_config("runs/x/config.json") == cfg

* :mod:`.run_config`: the frozen dataclasses (``TrainConfig``, ``OptimConfig``; ``DiffusionConfig``
  from :mod:`.diffusion_config`, whose process keys its constructor judges), their checks and
  their dict/JSON round trip;
* :mod:`.overrides`: ``key=value`` parsing, applied before any check, and the derived fields
  (a U-Net's size follows ``data.image_size``, its attention levels follow its size);
* :mod:`.presets`: the TOML presets, config files and run directories (``load_config``);
* :mod:`.build`: the network and the process a config describes.

An unknown key, a wrong type or a bad value is a one-line ``ValueError`` naming the key and
the value.
"""
from __future__ import annotations

from .build import attention_at_size, build_network, build_process, network_kind, network_kinds
from .overrides import apply_overrides, apply_overrides_unchecked, follow_data_size, parse_override
from .presets import list_presets, load_config, read_config_source
from .run_config import (LR_DECAYS, PRECISIONS, SCHEDULES, SECTIONS, TIMESTEP_SAMPLERS, DiffusionConfig,
                         OptimConfig, TrainConfig, check_resumable)

__all__ = [
    "DiffusionConfig",
    "OptimConfig",
    "TrainConfig",
    "load_config",
    "apply_overrides",
    "apply_overrides_unchecked",
    "follow_data_size",
    "parse_override",
    "check_resumable",
    "list_presets",
    "read_config_source",
    "network_kinds",
    "network_kind",
    "build_network",
    "build_process",
    "attention_at_size",
    "PRECISIONS",
    "SCHEDULES",
    "TIMESTEP_SAMPLERS",
    "LR_DECAYS",
    "SECTIONS",
]
