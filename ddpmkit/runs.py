"""Loading a trained run: the process, the network, the config and what the data look like.

    import ddpmkit as dk
    run = dk.load_run("runs/digits")                      # the EMA network, in eval mode
    x = dk.sample(run.process, run.model, (16, *run.shape), sampler="dpmpp2m", steps=20, seed=0)
    bpd = dk.vlb_bpd(run.process, run.model, x0, levels=run.levels)

A thin layer over :func:`ddpmkit.io.checkpoint.load_checkpoint` (safetensors + JSON, nothing
unpickled) that also answers the questions every caller asks next: which network to sample with
(the exponential moving average unless ``ema=False``), the shape of one example and the data's
level count (256 for 8-bit images, 17 for the digits, None for continuous data).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .io.checkpoint import load_checkpoint
from .training.config import TrainConfig

__all__ = ["Run", "load_run", "data_shape_levels"]


@dataclass(frozen=True)
class Run:
    """A trained run, ready to sample.

    Attributes:
        process: the GaussianDiffusion (discrete) or VE / VP / SubVP / EDM process it was trained on.
        model: the network (the EMA of ``ema_rate`` by default; the raw weights with ``ema=False``),
            in eval mode without gradients: ``model(x_t, t, **cond)``.
        config: the run's :class:`~ddpmkit.training.config.TrainConfig`.
        shape: one example's shape, e.g. ``(1, 8, 8)``: sample ``(n, *shape)``.
        levels: quantisation levels of the data (bits/dim's decoder bins), None for continuous data.
        step: the training step of the checkpoint.
        path: the checkpoint's JSON file.
    """

    process: Any
    model: nn.Module
    config: TrainConfig
    shape: tuple[int, ...]
    levels: int | None
    step: int
    path: Path


def data_shape_levels(config: TrainConfig) -> tuple[tuple[int, ...], int | None]:
    """The per-example shape and level count of a config's data (read from its test split; an
    imported model, data ``"none"``, has the network's images and 8-bit levels)."""
    if config.data.name == "none":
        net = config.network
        return (net.in_channels, net.image_size, net.image_size), 256
    from .data import load_dataset

    data = load_dataset(config.data, "test")
    return tuple(data.shape), data.levels


def load_run(path: str | Path, ema: bool = True, device: str | torch.device = "cpu",
             ema_rate: float | None = None) -> Run:
    """The run at ``path`` (a run directory, its ``checkpoints/`` folder or a checkpoint ``.json``:
    the latest checkpoint of a directory). ``ema_rate`` picks one of the saved averages (the first
    when None); a missing or damaged checkpoint is a one-line ValueError naming the file."""
    loaded = load_checkpoint(path, device=device, ema_rate=ema_rate)
    shape, levels = data_shape_levels(loaded.config)
    return Run(loaded.process, loaded.ema_model if ema else loaded.model, loaded.config, shape, levels,
               int(loaded.state.get("step", 0)), Path(loaded.state["path"]))
