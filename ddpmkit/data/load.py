"""``load_dataset``: from a :class:`DataConfig` and a split to an :class:`ArrayDataset`."""
from __future__ import annotations

import math

import numpy as np
import torch

from .config import POINT_NAMES, DataConfig, TOY_NAMES
from .dataset import ArrayDataset, codes_to_unit, resize_images, split_indices
from .folder import load_folder
from .series import load_series
from .formats import Loaded, load_cifar10, load_mnist, load_npz
from .toys import NUM_CLASSES, sample_toy
from .pointsets import load_pointset

__all__ = ["load_dataset", "SPLITS"]

SPLITS = ("train", "test")
DIGITS_LEVELS = 17  # scikit-learn's digits hold the values 0..16


def _load_digits(config: DataConfig, split: str) -> Loaded:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), split at random by
    ``train_test_split(test_size=0.25, random_state=seed)``: 1347 train / 450 test at the
    defaults, kept in the original order. Values 0..16, so 17 levels; 10 classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    codes = bunch.images.astype(np.uint8)[..., None]
    keep = split_indices(len(codes), config.test_fraction, config.seed, split)
    return Loaded(codes[keep], bunch.target[keep].astype(np.int64), 10, DIGITS_LEVELS)


def _load_toy(config: DataConfig, split: str) -> Loaded:
    """``n`` points in all: ``ceil(test_fraction n)`` for test, the rest for train, drawn from
    the independent streams ``(seed, 0)`` and ``(seed, 1)``."""
    n_test = math.ceil(config.test_fraction * config.n)
    if n_test >= config.n:
        raise ValueError(f"test_fraction={config.test_fraction} leaves no training points of n={config.n}")
    count, stream = (config.n - n_test, 0) if split == "train" else (n_test, 1)
    points, labels = sample_toy(config.name, count, config.seed, stream)
    return Loaded(points, labels, NUM_CLASSES.get(config.name), None)


def _load_files(config: DataConfig, split: str) -> Loaded:
    if config.name == "folder":
        codes, labels, num_classes = load_folder(config.path, split, config.image_size, config.test_fraction, config.seed)
        return Loaded(codes, labels, num_classes, 256)
    if config.name == "npz":
        return load_npz(config.path, split, config.test_fraction, config.seed)
    if config.name == "mnist":
        return load_mnist(config.path, split, config.image_size)
    return load_cifar10(config.path, split)


def _to_dataset(loaded: Loaded, config: DataConfig, split: str) -> ArrayDataset:
    values, levels = loaded.values, loaded.levels
    is_image = values.ndim == 4
    if config.image_size is not None:
        if not is_image or levels is None:
            raise ValueError(f"image_size={config.image_size} needs quantised images, got {config.name} data "
                             f"of shape {values.shape[1:]} with levels={levels}")
        # bicubic can overshoot: clip back onto the data's levels
        values = np.minimum(resize_images(values, config.image_size), levels - 1)
    x = codes_to_unit(values, levels) if levels is not None else torch.from_numpy(np.asarray(values, np.float32))
    if is_image:
        x = x.permute(0, 3, 1, 2).contiguous()
    y = None if loaded.labels is None else torch.from_numpy(np.asarray(loaded.labels, np.int64))
    if config.flip and not is_image:
        raise ValueError(f"flip=True needs image data, got {config.name} data of shape {tuple(x.shape[1:])}")
    # the kind of what was read; other data take the one kind of their rank (vectors), see ArrayDataset.kind
    kind = "image" if is_image else "series" if config.name == "series" else None
    return ArrayDataset(x=x, y=y, levels=levels, num_classes=None if y is None else loaded.num_classes,
                        name=f"{config.name}-{split}", flip=config.flip, kind=kind)


def load_dataset(config: DataConfig, split: str = "train") -> ArrayDataset:
    """Load the ``split`` ("train" or "test") of the data set ``config`` names.

    Images come back as float32 ``(N, C, H, W)`` in [-1, 1] with their level count (256 for
    8-bit files, 17 for the digits); toys as standardised ``(N, 2)`` points with
    ``levels=None``. Nothing is downloaded. A missing path, an empty folder or a malformed file
    raises a one-line ``ValueError`` naming the file and the problem.
    """
    if not isinstance(config, DataConfig):
        raise ValueError(f"config must be a DataConfig, got {type(config).__name__}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got split={split!r}")
    if config.name == "none":   # an imported model (ddpmkit.published.convert) carries no data set
        raise ValueError("data 'none' (an imported model) has no examples: name a data set, e.g. "
                         "`ddpmkit eval RUN --data cifar10:/data/cifar-10-batches-py`")
    if config.name in POINT_NAMES:   # point clouds (S, N, 3), with their completion condition
        return load_pointset(config, split)
    if config.name == "digits":
        loaded = _load_digits(config, split)
    elif config.name in TOY_NAMES:
        loaded = _load_toy(config, split)
    elif config.name == "series":   # windows (S, 1, window) of a bundled real series, standardised
        loaded = Loaded(load_series(config.window, split, config.test_fraction, config.seed), None, None, None)
    else:
        loaded = _load_files(config, split)
    return _to_dataset(loaded, config, split)
