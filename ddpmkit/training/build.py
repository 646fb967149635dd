"""From a config to objects: the network and the process, and the network's size-dependent fields.

    network = build_network(config.network)        # a U-Net comes channels-last
    process = build_process(config.diffusion)      # a GaussianDiffusion
    attention = attention_at_size((4,), old_size=8, new_size=28, levels=2)   # (14,)

The network kinds ("unet", "mlp") are those of :data:`ddpmkit.nets.NETWORK_KINDS`, the one
registry; :func:`network_kinds` returns it. Nothing here imports the config dataclasses (they call in).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..core.diffusion import GaussianDiffusion
from ..core.schedules import Schedule
from ..nets import NETWORK_KINDS
from ..nets import build_network as _build_module

__all__ = ["network_kinds", "network_kind", "build_network", "build_process", "level_sides",
           "attention_at_size"]


def network_kinds() -> Mapping[str, type]:
    """``{kind: config class}`` of the networks: :data:`ddpmkit.nets.NETWORK_KINDS` itself (read-only)."""
    return NETWORK_KINDS


def network_kind(network: Any) -> str:
    """The kind of a network config ("unet", "mlp"), or a one-line ValueError for anything else."""
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


def build_process(diffusion: Any) -> GaussianDiffusion:
    """The :class:`GaussianDiffusion` a ``DiffusionConfig`` describes."""
    return GaussianDiffusion(Schedule.named(diffusion.schedule, diffusion.T), diffusion.prediction,
                             diffusion.variance)


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
