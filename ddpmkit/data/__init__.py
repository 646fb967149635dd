"""Data sets for ddpmkit: bundled digits, 2-D toys, image folders, npz, MNIST and CIFAR-10.

    from ddpmkit.data import DataConfig, load_dataset
    train = load_dataset(DataConfig("digits"), "train")      # (1347, 1, 8, 8) in [-1, 1], 17 levels
    for x, y in train.batches(128, generator):               # explicit torch.Generator
        x = train.augment(x, generator)                      # random flips if the config asks

Everything is read from local files (nothing downloads) and held in memory as one tensor.
Quantised data keep their level count (``levels``) for the discretized decoder and bits/dim.
"""
from .config import DATASET_NAMES, DataConfig
from .dataset import ArrayDataset, to_uint8_images
from .kinds import DATA_KINDS
from .load import load_dataset

__all__ = ["DataConfig", "ArrayDataset", "load_dataset", "to_uint8_images", "DATASET_NAMES", "DATA_KINDS"]
