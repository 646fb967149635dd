"""The data configuration: a frozen dataclass that checks itself and round-trips through JSON
(through :class:`ddpmkit.config_base.DictConfig`, the serialiser every config shares)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..config_base import DictConfig

__all__ = ["DataConfig", "DATASET_NAMES", "TOY_NAMES", "FILE_NAMES"]

TOY_NAMES = ("swiss_roll", "moons", "eight_gaussians", "checkerboard")
FILE_NAMES = ("folder", "npz", "mnist", "cifar10")
DATASET_NAMES = ("digits",) + TOY_NAMES + FILE_NAMES


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataConfig(DictConfig):
    """Which data set to load and how to split and shape it.

    Attributes:
        name: one of ``DATASET_NAMES``: ``digits`` (scikit-learn's 8x8 digits, bundled),
            the 2-D toys ``swiss_roll``, ``moons``, ``eight_gaussians``, ``checkerboard``, or
            a user's files: ``folder`` (png/jpg images), ``npz``, ``mnist`` (idx files),
            ``cifar10`` (binary or python batches).
        path: the directory or file for ``folder``/``npz``/``mnist``/``cifar10``; must be
            ``None`` for the bundled and toy data.
        image_size: ``folder``: resize the shorter side to this and centre-crop a square.
            ``mnist``: sizes above 28 zero-pad (32 gives the classic 32x32), smaller resize.
            ``digits``/``npz``/``cifar10``: optional square resize (shorter side + centre crop).
            Not allowed for the toys.
        flip: random horizontal flips, applied per batch by ``ArrayDataset.augment`` (images only).
        n: toys only: the number of points, train and test together.
        seed: fixes the train/test split and the toy points.
        test_fraction: the held-out fraction; the test split has ``ceil(test_fraction * N)``
            examples (scikit-learn's rule: 450 of the 1797 digits at 0.25).
    """

    name: str = "digits"
    path: str | None = None
    image_size: int | None = None
    flip: bool = False
    n: int = 20000
    seed: int = 0
    test_fraction: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in DATASET_NAMES:
            raise ValueError(f"DataConfig.name must be one of {list(DATASET_NAMES)}, got name={self.name!r}")
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ValueError(f"DataConfig.path must be a non-empty string or None, got path={self.path!r}")
        if self.name in FILE_NAMES and self.path is None:
            raise ValueError(f"DataConfig.path is required for name={self.name!r}, got path=None")
        if self.name not in FILE_NAMES and self.path is not None:
            raise ValueError(f"DataConfig.path is only read by {list(FILE_NAMES)}, got path={self.path!r} "
                             f"with name={self.name!r}")
        if self.image_size is not None and (not _is_int(self.image_size) or self.image_size < 1):
            raise ValueError(f"DataConfig.image_size must be an integer >= 1 or None, got image_size={self.image_size!r}")
        if self.image_size is not None and self.name in TOY_NAMES:
            raise ValueError(f"DataConfig.image_size does not apply to 2-D toy data, got image_size={self.image_size!r} "
                             f"with name={self.name!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"DataConfig.flip must be true or false, got flip={self.flip!r}")
        if self.flip and self.name in TOY_NAMES:
            raise ValueError(f"DataConfig.flip applies to images only, got flip=True with name={self.name!r}")
        if not _is_int(self.n) or self.n < 2:
            raise ValueError(f"DataConfig.n must be an integer >= 2, got n={self.n!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"DataConfig.seed must be an integer >= 0, got seed={self.seed!r}")
        fraction = self.test_fraction
        if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0.0 < fraction < 1.0):
            raise ValueError(f"DataConfig.test_fraction must be a number in (0, 1), got test_fraction={fraction!r}")
        object.__setattr__(self, "test_fraction", float(fraction))
