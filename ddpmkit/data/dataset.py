"""In-memory data sets, batching with an explicit generator, and the level <-> [-1, 1] scaling.

Quantised data with ``L`` levels holds integer codes ``v in {0, ..., L - 1}``; the model sees
``x = 2 v / (L - 1) - 1 in [-1, 1]``, so neighbouring levels are ``2 / (L - 1)`` apart, the bin
width of the discretized decoder (DDPM eq. 13). :func:`to_uint8_images` inverts the map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from .kinds import EXAMPLE_RANK, check_data_record
from .shapes import random_rotations

__all__ = ["ArrayDataset", "to_uint8_images", "codes_to_unit", "split_indices", "resize_images"]


def codes_to_unit(codes: np.ndarray, levels: int) -> torch.Tensor:
    """Integer codes in ``[0, levels - 1]`` -> float32 in ``[-1, 1]`` (``2 v / (levels - 1) - 1``)."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() > levels - 1):
        raise ValueError(f"values must lie in [0, {levels - 1}] for levels={levels}, "
                         f"got range [{codes.min()}, {codes.max()}]")
    unit = codes.astype(np.float64) * (2.0 / (levels - 1)) - 1.0
    return torch.from_numpy(unit.astype(np.float32))


def to_uint8_images(
    x: torch.Tensor, levels: int, *, channels_last: bool = True, full_range: bool = False
) -> np.ndarray:
    """Map data in ``[-1, 1]`` back to integer codes ``round((x + 1) (levels - 1) / 2)`` as uint8.

    The inverse of the loader's scaling: ``to_uint8_images(load(...).x, levels)`` gives the
    file's values exactly. Values outside ``[-1, 1]`` (model samples) are clipped.

    Args:
        x: a tensor (or array) of any shape; 4-D ``(N, C, H, W)`` is returned as
            ``(N, H, W, C)`` when ``channels_last`` (the layout Pillow and matplotlib expect),
            and 3-D ``(C, H, W)`` as ``(H, W, C)``.
        levels: the data's quantisation levels, 2..256.
        full_range: stretch the codes to 0..255 for display (e.g. the 17-level digits).
    """
    if not isinstance(levels, (int, np.integer)) or isinstance(levels, bool) or not 2 <= levels <= 256:
        raise ValueError(f"levels must be an integer in [2, 256], got levels={levels!r}")
    array = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    codes = np.clip(np.rint((array + 1.0) * (levels - 1) / 2.0), 0, levels - 1)
    if full_range:
        codes = np.rint(codes * (255.0 / (levels - 1)))
    codes = codes.astype(np.uint8)
    if channels_last and codes.ndim in (3, 4):
        codes = np.moveaxis(codes, -3, -1)
    return np.ascontiguousarray(codes)


def split_indices(count: int, test_fraction: float, seed: int, split: str) -> np.ndarray:
    """The indices of ``split`` in a seeded random train/test split of ``range(count)``.

    Uses scikit-learn's ``train_test_split(test_size=test_fraction, random_state=seed)``, so
    the test part has ``ceil(test_fraction * count)`` items and, for the digits, the split is
    the familiar ``train_test_split(X, y, test_size=0.25, random_state=0)`` one (1347/450).
    """
    from sklearn.model_selection import train_test_split

    n_test = math.ceil(test_fraction * count)
    if count - n_test < 1 or n_test < 1:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split of {count} examples")
    train, test = train_test_split(np.arange(count), test_size=n_test, random_state=seed)
    return np.sort(train if split == "train" else test)


def _crop_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The centred square of side ``min(width, height)``: resizing it equals resizing the
    shorter side then centre-cropping, done in one resampling step."""
    side = min(width, height)
    left, top = (width - side) / 2.0, (height - side) / 2.0
    return (left, top, left + side, top + side)


def resize_image(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop a ``size x size`` square (bicubic,
    antialiased)."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BICUBIC, box=_crop_box(*image.size))


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """:func:`resize_image` on every image of a uint8 ``(N, H, W, C)`` array (C = 1 or 3)."""
    n, height, width, channels = images.shape
    if (height, width) == (size, size):
        return images
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    for i in range(n):
        pixels = images[i, :, :, 0] if channels == 1 else images[i]
        resized = np.asarray(resize_image(Image.fromarray(pixels), size))
        out[i] = resized.reshape(size, size, channels)
    return out


@dataclass
class ArrayDataset:
    """A data set held in memory as one tensor.

    Attributes:
        x: float32 data: images ``(N, C, H, W)`` scaled to ``[-1, 1]``, or vectors ``(N, D)``.
        y: int64 class labels ``(N,)``, or ``None``.
        levels: quantisation levels (256 for 8-bit images, 17 for the digits); ``None`` for
            continuous data.
        num_classes: the number of classes when ``y`` is given.
        name: a label for reports.
        flip: whether :meth:`augment` applies random horizontal flips.
        rotate: whether :meth:`augment` turns each point cloud (N, P, 3) by a Haar-random rotation.
        cond: per-example conditions the model takes as keyword arguments, each a tensor whose
            first axis is aligned with ``x`` (e.g. ``{"partial": (N, M, 3)}``, the partial clouds
            of point-cloud completion); batches slice them with ``x``.
        kind: what the examples are, one of :data:`~ddpmkit.data.kinds.DATA_KINDS` ("image",
            "points", "series", "vector"), said by the loader that read them. Left out, it is the
            one kind of the examples' rank (images (C, H, W), vectors (D,)); (P, 3) point clouds
            and (C, L) sequences share a rank, so their loaders name them, else it stays None.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    levels: int | None
    num_classes: int | None
    name: str
    flip: bool = False
    cond: dict[str, torch.Tensor] = field(default_factory=dict)
    kind: str | None = None
    rotate: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dtype != torch.float32 or self.x.ndim < 2:
            raise ValueError(f"x must be a float32 tensor (N, ...), got {type(self.x).__name__} "
                             f"{getattr(self.x, 'dtype', '')} {tuple(getattr(self.x, 'shape', ()))}")
        if self.y is not None:
            if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64 or self.y.shape != (len(self.x),):
                raise ValueError(f"y must be an int64 tensor of shape ({len(self.x)},), got "
                                 f"{getattr(self.y, 'dtype', type(self.y).__name__)} {tuple(getattr(self.y, 'shape', ()))}")
            if self.num_classes is None or (len(self.y) and int(self.y.max()) >= self.num_classes):
                raise ValueError(f"num_classes must exceed every label, got num_classes={self.num_classes!r}")
        if self.levels is not None and not 2 <= self.levels <= 256:
            raise ValueError(f"levels must be in [2, 256] or None, got levels={self.levels!r}")
        if self.kind is None:
            ranks = [kind for kind, rank in EXAMPLE_RANK.items() if rank == len(self.shape)]
            self.kind = ranks[0] if len(ranks) == 1 else None
        else:
            check_data_record(f"ArrayDataset {self.name!r}", self.kind, self.shape)
        if self.flip and not self.is_image:
            raise ValueError(f"flip applies to images (N, C, H, W) only, got x of shape {tuple(self.x.shape)}")
        if self.rotate and (self.kind != "points" or self.x.shape[-1] != 3 or self.cond):
            raise ValueError(f"rotate applies to whole 3-D point clouds (N, P, 3) without conditions, got "
                             f"{self.kind} data of shape {tuple(self.x.shape)}, conditions {sorted(self.cond)}")
        for key, value in self.cond.items():
            if not isinstance(value, torch.Tensor) or value.ndim < 1 or value.shape[0] != len(self.x):
                raise ValueError(f"cond[{key!r}] must be a tensor with one row per example ({len(self.x)}), got "
                                 f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(1, 8, 8)`` or ``(2,)``."""
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    def to(self, device: torch.device | str) -> "ArrayDataset":
        """A copy with the tensors on ``device``."""
        y = None if self.y is None else self.y.to(device)
        return replace(self, x=self.x.to(device), y=y, cond={k: v.to(device) for k, v in self.cond.items()})

    def condition(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """The conditions of the examples ``index`` (the rows of ``x[index]``): ``{}`` without any."""
        return {key: value[index] for key, value in self.cond.items()}

    def batches(
        self, batch_size: int, generator: torch.Generator | None, shuffle: bool = True, drop_last: bool = True,
        with_cond: bool = False,
    ) -> Iterator[tuple[Any, ...]]:
        """One pass over the data in batches ``(x, y)`` (``y`` is ``None`` without labels).

        The order is ``torch.randperm`` drawn from ``generator`` (required when shuffling), so
        a generator seeded the same way gives the same batches. With ``drop_last`` every batch
        has exactly ``batch_size`` examples. With ``with_cond`` each batch is ``(x, y, cond)``,
        ``cond`` the batch's rows of :attr:`cond`.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got batch_size={batch_size!r}")
        if drop_last and batch_size > len(self):
            raise ValueError(f"batch_size={batch_size} exceeds the {len(self)} examples of {self.name!r} "
                             "(no full batch with drop_last=True)")
        if shuffle and not isinstance(generator, torch.Generator):
            raise ValueError(f"shuffle=True needs an explicit torch.Generator, got generator={generator!r}")
        if shuffle:
            order = torch.randperm(len(self), generator=generator, device=generator.device).to(self.x.device)
        else:
            order = torch.arange(len(self), device=self.x.device)
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size]
            y = None if self.y is None else self.y[index]
            yield (self.x[index], y, self.condition(index)) if with_cond else (self.x[index], y)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Flip each image of the batch left-right with probability 1/2 when ``flip`` is set, turn
        each point cloud by a Haar-random rotation when ``rotate`` is; otherwise return ``x``
        unchanged (drawing nothing from ``generator``)."""
        if self.rotate:
            return x @ random_rotations(x.shape[0], generator).to(x.device, x.dtype)
        if not self.flip:
            return x
        if x.ndim != 4:
            raise ValueError(f"augment expects images (B, C, H, W), got shape {tuple(x.shape)}")
        coin = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < 0.5
        return torch.where(coin[:, None, None, None], x.flip(-1), x)
