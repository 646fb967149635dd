"""Loading a trained run: the process, the network, the config and what the data look like.

    import ddpmkit as dk
    run = dk.load_run("runs/digits")                      # the EMA network, in eval mode
    x = dk.sample(run.process, run.model, (16, *run.shape), sampler="dpmpp2m", steps=20, seed=0)
    bpd = dk.vlb_bpd(run.process, run.model, x0, levels=run.levels)

A thin layer over :func:`ddpmkit.training.restore.load_checkpoint` (safetensors + JSON, nothing
unpickled) that also answers the questions every caller asks next: which network to sample with
(the exponential moving average unless ``ema=False``), what the data are (their kind, one
example's shape and their level count: 256 for 8-bit images, 17 for the digits, None for
continuous data). A run records these when it trains (``TrainConfig.data_kind`` / ``data_shape``
/ ``data_levels``, said by its data set); :func:`data_record` reads them, and asks the data set
itself only for a run older than those fields. It sits above ``io/`` and ``training/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .data import load_dataset
from .training.config import TrainConfig
from .training.restore import LoadedCheckpoint, load_checkpoint

__all__ = ["Run", "load_run", "DataRecord", "data_record", "data_shape_levels", "load_checkpoint",
           "LoadedCheckpoint"]

_KIND_OF_NETWORK = {"unet": "image", "unet1d": "series", "pointnet": "points", "pvcnn": "points", "mlp": "vector"}
"""For a run older than the recorded data kind whose data set cannot name it (an .npz of 3-D floats)."""


class DataRecord(NamedTuple):
    """What a run's data are: ``kind`` (image / points / series / vector), one example's
    ``shape`` and the quantisation ``levels`` (None for continuous data)."""

    kind: str
    shape: tuple[int, ...]
    levels: int | None


@dataclass(frozen=True)
class Run:
    """A trained run, ready to sample.

    Attributes:
        process: the process it was trained on (the discrete chain, VE, VP, SubVP, EDM, flow, ...).
        model: the network (the EMA of ``ema_rate`` by default; the raw weights with ``ema=False``),
            in eval mode without gradients: ``model(x_t, t, **cond)``.
        config: the run's :class:`~ddpmkit.training.config.TrainConfig`.
        kind: what the data are: "image", "points", "series" or "vector".
        shape: one example's shape, e.g. ``(1, 8, 8)``: sample ``(n, *shape)``.
        levels: quantisation levels of the data (bits/dim's decoder bins), None for continuous data.
        step: the training step of the checkpoint.
        path: the checkpoint's JSON file.
    """

    process: Any
    model: nn.Module
    config: TrainConfig
    kind: str
    shape: tuple[int, ...]
    levels: int | None
    step: int
    path: Path


def data_record(config: TrainConfig) -> DataRecord:
    """The kind, example shape and level count of a run's data, as the run recorded them when it
    trained. A run older than that record: an imported model (data ``"none"``) has the network's
    8-bit images; any other asks its test split once (the data set names its kind; where it
    cannot, the network's kind does)."""
    if config.data_kind is not None and config.data_shape is not None:
        return DataRecord(config.data_kind, tuple(config.data_shape), config.data_levels)
    net = config.network
    if config.data.name == "none":
        return DataRecord("image", (net.in_channels, net.image_size, net.image_size), 256)
    data = load_dataset(config.data, "test")
    return DataRecord(data.kind or _KIND_OF_NETWORK[config.network_kind], tuple(data.shape), data.levels)


def data_shape_levels(config: TrainConfig) -> tuple[tuple[int, ...], int | None]:
    """The per-example shape and level count of a config's data (:func:`data_record` without the kind)."""
    record = data_record(config)
    return record.shape, record.levels


def load_run(path: str | Path, ema: bool = True, device: str | torch.device = "cpu",
             ema_rate: float | None = None) -> Run:
    """The run at ``path`` (a run directory, its ``checkpoints/`` folder or a checkpoint ``.json``:
    the latest checkpoint of a directory). ``ema_rate`` picks one of the saved averages (the first
    when None); a missing or damaged checkpoint is a one-line ValueError naming the file."""
    loaded = load_checkpoint(path, device=device, ema_rate=ema_rate)
    record = data_record(loaded.config)
    return Run(loaded.process, loaded.ema_model if ema else loaded.model, loaded.config, record.kind, record.shape,
               record.levels, int(loaded.state.get("step", 0)), Path(loaded.state["path"]))
