"""A run's configuration completed from its data: the network's data-dependent fields and the data's
kind, example shape and quantisation levels, stored in the run (config.json) so that sampling and
evaluation never guess them from shapes nor load the data to learn them."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..data import ArrayDataset
from .build import attention_at_size
from .config import TrainConfig

__all__ = ["resolve_config"]


def resolve_config(config: TrainConfig, dataset: ArrayDataset) -> TrainConfig:
    """Fill the network's data-dependent fields from the data (channels in and out, image size;
    a point network's coordinates per point, a 1-D U-Net's channels and length; twice the output
    channels for learned-range variance) and check the labels. When the data's
    image size differs from the network's, a U-Net's ``attention_resolutions`` move to the same
    levels at the new size (:func:`~ddpmkit.training.build.attention_at_size`)."""
    net = config.network
    factor = 2 if config.diffusion.variance == "learned_range" else 1
    changes: dict[str, Any] = {}
    if config.network_kind == "unet":
        if not dataset.is_image or dataset.shape[1] != dataset.shape[2]:
            raise ValueError(f"network.kind='unet' needs square images, got data of shape {dataset.shape}")
        size, levels = dataset.shape[1], len(net.channel_mult)
        changes = {"in_channels": dataset.shape[0], "out_channels": factor * dataset.shape[0], "image_size": size}
        if size != net.image_size:   # keep the attention at the same U-Net levels (4 of 8 -> 14 of 28)
            if size % 2 ** (levels - 1):
                raise ValueError(f"the data {dataset.name!r} has {size}x{size} images, but the {levels}-level U-Net "
                                 f"needs a side divisible by {2 ** (levels - 1)}; set data.image_size")
            moved = attention_at_size(net.attention_resolutions, net.image_size, size, levels)
            changes["attention_resolutions"] = net.attention_resolutions if moved is None else moved
    elif config.network_kind in ("pointnet", "pvcnn"):   # point sets (N, dim): per-point coordinates in and out
        if len(dataset.shape) != 2:
            raise ValueError(f"network.kind={config.network_kind!r} needs point sets (points, dim), got data of shape {dataset.shape}")
        changes = {"in_dim": dataset.shape[1], "out_dim": factor * dataset.shape[1]}
    elif config.network_kind == "unet1d":     # sequences (C, L)
        if len(dataset.shape) != 2:
            raise ValueError(f"network.kind='unet1d' needs sequences (channels, length), got data of shape {dataset.shape}")
        length, levels = dataset.shape[1], len(net.channel_mult)
        if length % 2 ** (levels - 1):
            raise ValueError(f"the data {dataset.name!r} has sequences of length {length}, but the {levels}-level "
                             f"1-D U-Net needs a length divisible by {2 ** (levels - 1)}; set data.window")
        changes = {"in_channels": dataset.shape[0], "out_channels": factor * dataset.shape[0], "length": length}
        if length != net.length:   # keep the attention at the same levels
            old, new = net.level_lengths(), tuple(length // 2 ** k for k in range(levels))
            changes["attention_lengths"] = tuple(new[old.index(a)] for a in net.attention_lengths)
    else:
        if dataset.is_image:
            raise ValueError(f"network.kind={config.network_kind!r} needs vector data, got shape {dataset.shape}")
        size = math.prod(dataset.shape)
        changes = {"in_dim": size, "out_dim": factor * size}
    classes = getattr(net, "num_classes", None)
    if classes is not None and (dataset.num_classes is None or classes < dataset.num_classes):
        raise ValueError(f"network.num_classes={classes} but the data {dataset.name!r} has "
                         f"num_classes={dataset.num_classes}")
    return config.replace(network=replace(net, **changes), data_kind=dataset.kind, data_shape=dataset.shape,
                          data_levels=dataset.levels)
