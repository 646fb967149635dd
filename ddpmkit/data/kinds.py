"""What kind of data a data set holds, and the shape of one example of each kind.

The data set decides its kind (its loader knows what it read: :attr:`ArrayDataset.kind`), a
run stores it with the example shape and the level count (``TrainConfig.data_kind``,
``data_shape``, ``data_levels``), and pictures, the command line and evaluation read it there,
never guessing from a shape.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DATA_KINDS", "EXAMPLE_RANK", "check_data_record"]

DATA_KINDS = ("image", "points", "series", "vector")
EXAMPLE_RANK = {"image": 3, "points": 2, "series": 2, "vector": 1}
"""The number of axes of one example: images (C, H, W), point clouds (P, dim), sequences (C, L), vectors (D,)."""


def check_data_record(owner: str, kind: Any, shape: Any, levels: Any = None) -> None:
    """One-line ValueError naming ``owner`` unless ``kind`` is one of :data:`DATA_KINDS` (or None:
    data whose loader did not name it), ``shape`` a tuple of positive integers (with the kind's
    :data:`EXAMPLE_RANK` of them), and ``levels`` None or an integer in [2, 256]."""
    if kind is not None and kind not in DATA_KINDS:
        raise ValueError(f"{owner}: data_kind must be one of {list(DATA_KINDS)}, got data_kind={kind!r}")
    rank = None if kind is None else EXAMPLE_RANK[kind]
    if (not isinstance(shape, tuple) or (rank is not None and len(shape) != rank)
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape)):
        axes = "" if rank is None else f" of {rank} axes (one {kind} example)"
        raise ValueError(f"{owner}: data_shape must be a tuple of positive integers{axes}, got data_shape={shape!r}")
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= 256):
        raise ValueError(f"{owner}: data_levels must be None or an integer in [2, 256], got data_levels={levels!r}")
