"""The data configuration: a frozen dataclass that checks itself and round-trips through JSON
(through :class:`ddpmkit.config_base.DictConfig`, the serialiser every config shares)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..config_base import DictConfig

__all__ = ["DataConfig", "DATASET_NAMES", "TOY_NAMES", "FILE_NAMES", "POINT_NAMES"]

TOY_NAMES = ("swiss_roll", "moons", "eight_gaussians", "checkerboard")
FILE_NAMES = ("folder", "npz", "mnist", "cifar10")
POINT_NAMES = ("shapes", "points")   # point clouds: generated shapes, a user's point files
DATASET_NAMES = ("digits",) + TOY_NAMES + FILE_NAMES + ("series",) + POINT_NAMES + ("none",)   # none: an imported model (ddpmkit import), no examples


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
        rotate: point clouds only: turn every training cloud by a Haar-random rotation, drawn per
            example and batch by ``ArrayDataset.augment``. It leaves the data's law unchanged only
            where that law is rotation-invariant, as the ``shapes`` data's (every shape turned by a
            uniform random rotation); not with ``partial_points`` or ``patch_points``.
        n: toys only: the number of points, train and test together.
        seed: fixes the train/test split and the toy points.
        test_fraction: the held-out fraction; the test split has ``ceil(test_fraction * N)``
            examples (scikit-learn's rule: 450 of the 1797 digits at 0.25).
            ``none``: a model imported from published weights (``ddpmkit import``); it has no
            examples, its shape comes from the network (``in_channels`` x ``image_size``^2) and its
            levels are 256; give ``ddpmkit eval`` a data set with ``--data``.
        window: ``series`` only: the length of the windows cut from the series (None: 64); for
            ``series`` the test fraction counts blocks of 4 windows (see :mod:`ddpmkit.data.series`).
        points: point clouds (``shapes``, ``points``) only: points per cloud (None: 2048 for
            ``shapes``, every file's own count for ``points``; with a number, each file's cloud is
            subsampled to it, and a file with fewer points is an error).
        partial_points: point clouds only: also make the completion condition, the
            ``partial_points`` points of each cloud on one side of a random plane
            (:func:`ddpmkit.data.shapes.cut_by_plane`), given to the model as ``partial``.
            For ``shapes``, ``n`` is the number of shapes (train and test together).
        missing_only: with ``partial_points``, the examples are only the points *not* in the
            partial cloud (``points - partial_points`` of them): the model generates the missing
            part, and a completion is the partial plus what it generates (PDR, Lyu et al. 2022).
        patch_points: point clouds only: train on local patches instead of whole clouds (Luo &
            Hu 2021's denoiser): each cloud gives ``points // patch_points`` patches, the
            ``patch_points`` nearest neighbours of a random seed point, centred on their mean and
            turned into their principal axes (:func:`ddpmkit.data.pointsets.knn_patches`).
    """

    name: str = "digits"
    path: str | None = None
    image_size: int | None = None
    flip: bool = False
    rotate: bool = False
    n: int = 20000
    seed: int = 0
    test_fraction: float = 0.25
    window: int | None = None
    points: int | None = None
    partial_points: int | None = None
    patch_points: int | None = None
    missing_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in DATASET_NAMES:
            raise ValueError(f"DataConfig.name must be one of {list(DATASET_NAMES)}, got name={self.name!r}")
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ValueError(f"DataConfig.path must be a non-empty string or None, got path={self.path!r}")
        if self.name in FILE_NAMES + ("points",) and self.path is None:
            raise ValueError(f"DataConfig.path is required for name={self.name!r}, got path=None")
        if self.name not in FILE_NAMES + ("points",) and self.path is not None:
            raise ValueError(f"DataConfig.path is only read by {list(FILE_NAMES + ('points',))}, got path={self.path!r} "
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
        # >= 4: examples of shape (C, 3) would read as point clouds (N, 3) in sample, eval and the previews
        if self.window is not None and (self.name != "series" or not _is_int(self.window) or self.window < 4):
            raise ValueError(f"DataConfig.window must be None, or an integer >= 4 with name='series', got "
                             f"window={self.window!r} with name={self.name!r}")
        self._check_points()

    def _check_points(self) -> None:
        """The point-cloud fields: set only for point clouds, integers, partial < points."""
        for key, low in (("points", 1), ("partial_points", 1), ("patch_points", 2)):
            value = getattr(self, key)
            if value is not None and (self.name not in POINT_NAMES or not _is_int(value) or value < low):
                raise ValueError(f"DataConfig.{key} must be None, or an integer >= {low} with name in "
                                 f"{list(POINT_NAMES)}, got {key}={value!r} with name={self.name!r}")
        if self.image_size is not None and self.name in POINT_NAMES:
            raise ValueError(f"DataConfig.image_size does not apply to point clouds, got image_size={self.image_size!r}")
        if self.flip and self.name in POINT_NAMES:
            raise ValueError(f"DataConfig.flip applies to images only, got flip=True with name={self.name!r}")
        if not isinstance(self.rotate, bool):
            raise ValueError(f"DataConfig.rotate must be true or false, got rotate={self.rotate!r}")
        if self.rotate and (self.name not in POINT_NAMES or self.partial_points is not None or self.patch_points is not None):
            raise ValueError(f"DataConfig.rotate turns whole point clouds (name in {list(POINT_NAMES)}, no partial_points "
                             f"or patch_points), got rotate=True with name={self.name!r}, partial_points="
                             f"{self.partial_points!r}, patch_points={self.patch_points!r}")
        points = 2048 if self.points is None and self.name == "shapes" else self.points
        if self.partial_points is not None and points is not None and self.partial_points >= points:
            raise ValueError(f"DataConfig.partial_points must be smaller than points={points}, got "
                             f"partial_points={self.partial_points!r}")
        if self.patch_points is not None and points is not None and self.patch_points > points:
            raise ValueError(f"DataConfig.patch_points must be at most points={points}, got "
                             f"patch_points={self.patch_points!r}")
        if not isinstance(self.missing_only, bool) or (self.missing_only and self.partial_points is None):
            raise ValueError(f"DataConfig.missing_only must be true or false, and true only with partial_points set, "
                             f"got missing_only={self.missing_only!r} with partial_points={self.partial_points!r}")
        if self.patch_points is not None and self.partial_points is not None:
            raise ValueError("DataConfig.patch_points and partial_points do not go together (patches are for "
                             "denoising, partial clouds for completion)")
        if self.name == "shapes" and self.n * points > 2**24:
            raise ValueError(f"DataConfig.n * points must be at most 2^24 points in all for shapes "
                             f"(n is the number of shapes), got n={self.n} with points={points}; set data.n")
