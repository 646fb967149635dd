"""The ``folder`` preset: a training config sized from a folder of images.

    plan = folder_config("photos/", ["optim.steps=3000"])
    print(*plan.lines, sep="\\n"); train(plan.config)

``ddpmkit train folder DIR`` (or ``ddpmkit train DIR``) calls this. The fixed part of the recipe
is ``presets/folder.toml``; from the images (their headers: :func:`ddpmkit.data.folder.scan_folder`)
it chooses

* the image size: the images' side (the median shorter side when they differ or are not
  square), rounded to the nearest side the U-Net takes, a multiple of ``2**(levels-1)`` (ties
  round up); a different side is reached by resizing (bicubic; non-square images are resized by
  their shorter side and centre-cropped), and the first line of :attr:`FolderPlan.lines` says so;
* grey or colour: from the files (the loader makes every image RGB when any has colour);
* the U-Net: 2 levels up to 16 pixels, 3 up to 48, 4 up to 96, then 5; 32 base channels and one
  residual block per level up to 32 pixels, 64 and two above; self-attention at the feature-map
  sides of 16 and below except the input's (DDPM: 16 of 32; ADM: 32, 16, 8);
* the batch: 64, or the whole training split when it is smaller;
* the step budget: what a 2-core CPU trains in about :data:`TIME_BUDGET_S` seconds at
  :data:`CPU_FLOPS` (the digits preset's measured rate), from the network's counted FLOPs, but at
  most :data:`MAX_EPOCHS` passes over the training split (a small folder trained longer is
  memorised), rounded to 100 and kept within [:data:`MIN_STEPS`, :data:`MAX_STEPS`]; previews (samples) at
  every quarter of it.

Every one of these is only a default: a ``key=value`` override of the same key wins, and the
choices are made knowing the overrides (``data.test_fraction`` changes the training split,
``data.image_size`` the side, ``network.channel_mult`` the depth). The choices depend on the
files alone, so ``--resume`` rebuilds the same config.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch

from ..data.config import DataConfig
from ..data.folder import FolderScan, scan_folder
from .build import level_sides
from .overrides import apply_overrides_unchecked
from .presets import read_config_source
from .run_config import TrainConfig

__all__ = ["FolderPlan", "folder_config", "unet_levels", "network_side", "attention_sides", "training_flops",
           "CPU_FLOPS", "TIME_BUDGET_S", "MAX_BATCH", "MIN_STEPS", "MAX_STEPS", "MAX_EPOCHS"]

CPU_FLOPS = 1.4e11      # FLOP/s: the digits preset trains at 11.3 steps/s x 128 x 3 x 0.0325 GFLOP on 2 cores
TIME_BUDGET_S = 480.0   # the default step budget: about 8 minutes of that machine
MAX_BATCH = 64
MIN_STEPS, MAX_STEPS = 300, 5000
MAX_EPOCHS = 300        # passes over a small training split before the budget stops: the 75 LFW faces were
                        # copied by 97% of samples after 1024 epochs (1200 steps), by 5% after 341 (400 steps)


@dataclass(frozen=True)
class FolderPlan:
    """The config for a folder, what the folder holds, and what was chosen (two printable lines)."""

    config: TrainConfig
    scan: FolderScan
    lines: tuple[str, ...]


def unet_levels(side: int) -> int:
    """U-Net levels for images of ``side`` pixels: the lowest feature map keeps 4 to 12 pixels."""
    return 2 if side <= 16 else 3 if side <= 48 else 4 if side <= 96 else 5


def network_side(side: int, levels: int) -> int:
    """The multiple of ``2**(levels-1)`` nearest to ``side`` (a tie rounds up), at least twice it."""
    step = 2 ** (levels - 1)
    return max(2 * step, step * math.floor(side / step + 0.5))


def attention_sides(side: int, levels: int) -> tuple[int, ...]:
    """Feature-map sides of 16 and below other than the input's (the lowest level if none)."""
    sides = level_sides(side, levels)
    chosen = tuple(s for s in sides[1:] if s <= 16)
    return chosen or sides[-1:]


def training_flops(config: TrainConfig) -> float:
    """FLOPs of one training step: 3 x the forward pass (forward + backward) of the network on
    one example, counted by ``torch.utils.flop_counter``, times the batch."""
    from torch.utils.flop_counter import FlopCounterMode

    net = config.network
    network = config.build_network()
    x = torch.zeros(1, net.in_channels, net.image_size, net.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(x, torch.zeros(1, dtype=torch.long))
    return 3.0 * counter.get_total_flops() * config.optim.batch_size


def _resize_note(scan: FolderScan, shown: str, side: int, levels: int, explicit_size: bool) -> str:
    (width, height), _ = scan.sizes[0]
    found = f"{width}x{height}" if len(scan.sizes) == 1 else f"{len(scan.sizes)} sizes, most {width}x{height}"
    where = f"{scan.count} {'colour' if scan.colour else 'grey'} images in {shown}, {found} " \
            f"({scan.train_count} for training)"
    why = "as data.image_size says" if explicit_size else \
        f"the {levels}-level U-Net takes sides divisible by {2 ** (levels - 1)}"
    if scan.square and len(scan.sizes) == 1 and width == side:
        return f"{where}: used as they are, {side}x{side}"
    how = "resized" if scan.square else "resized by the shorter side and centre-cropped"
    return f"{where}: {how} to {side}x{side} ({why})"


def folder_config(path: str | Path, overrides: Sequence[str] = ()) -> FolderPlan:
    """The ``folder`` preset for the images under ``path``, with ``key=value`` ``overrides``
    (see the module docstring); one-line ValueErrors for a missing or empty folder."""
    raw, _ = read_config_source("folder")
    overrides = list(overrides)
    explicit = {item.split("=", 1)[0].strip() for item in overrides if "=" in item}
    base = [f"data.path={Path(path).resolve()}"]   # absolute: a resume or a sample from elsewhere finds it
    user_tree = apply_overrides_unchecked(raw, base + overrides)   # the folder as the overrides leave it
    data = DataConfig.from_dict(user_tree["data"])
    scan = scan_folder(data.path, data.test_fraction, data.seed)

    network = user_tree["network"]
    levels = len(network["channel_mult"]) if "network.channel_mult" in explicit else unet_levels(scan.side)
    side = data.image_size if data.image_size is not None else network_side(scan.side, levels)
    wide = side > 32
    derived = {
        "out": f"runs/{Path(data.path).resolve().name or 'folder'}",
        "data.image_size": None if scan.square and len(scan.sizes) == 1 and scan.side == side else side,
        "network.image_size": side,
        "network.channels": 64 if wide else 32,
        "network.channel_mult": [1] + [2] * (levels - 1),
        "network.num_res_blocks": 2 if wide else 1,
        "network.attention_resolutions": list(attention_sides(side, levels)),
        "network.in_channels": 3 if scan.colour else 1,
        "network.out_channels": 3 if scan.colour else 1,
        "optim.batch_size": min(MAX_BATCH, scan.train_count),
    }
    chosen = [f"{key}={_text(value)}" for key, value in derived.items() if key not in explicit]
    tree = apply_overrides_unchecked(apply_overrides_unchecked(raw, base + chosen), overrides)
    config = TrainConfig.from_dict(tree)

    step_flops = training_flops(config)
    if "optim.steps" not in explicit:   # ~8 minutes of this CPU, but at most MAX_EPOCHS passes over the photos
        by_time = TIME_BUDGET_S * CPU_FLOPS / step_flops
        by_epochs = MAX_EPOCHS * scan.train_count / config.optim.batch_size
        steps = int(round(min(by_time, by_epochs), -2))
        config = config.replace(optim=replace(config.optim, steps=min(MAX_STEPS, max(MIN_STEPS, steps))))
    every = max(1, config.optim.steps // 4)
    timing = {key: every for key in ("sample_every", "checkpoint_every") if key not in explicit}
    config = config.replace(**timing)
    net, steps = config.network, config.optim.steps
    params = sum(p.numel() for p in config.build_network().parameters())
    minutes = steps * step_flops / CPU_FLOPS / 60
    epochs = steps * config.optim.batch_size / scan.train_count
    shown = str(path) if "data.path" not in explicit else data.path   # the folder as the user wrote it
    lines = (_resize_note(scan, shown, net.image_size, len(net.channel_mult), "data.image_size" in explicit),
             f"model: {len(net.channel_mult)}-level U-Net, {net.channels} channels x {list(net.channel_mult)}, "
             f"attention at {', '.join(map(str, net.attention_resolutions)) or 'none'} ({params / 1e6:.2f}M "
             f"parameters); batch {config.optim.batch_size}; {steps} steps ({epochs:.0f} epochs, about {minutes:.0f} min "
             f"on a 2-core CPU); samples every {config.sample_every} steps in {config.out}/samples, "
             f"loss curve {config.out}/loss.png")
    return FolderPlan(config, scan, lines)


def _text(value: object) -> str:
    """An override's text for a derived value (``none`` for None, ``[1, 2]`` for a list)."""
    return "none" if value is None else str(value)
