"""``torch.load`` for files a user hands in: ``weights_only=True`` (no pickle runs code), and quiet
when it refuses.

torch warns about some files before refusing them (a pickle of protocol 4: "Detected pickle
protocol 4 ... please file an issue"); on a refusal that warning is torch's business, not the
user's, and read above ddpmkit's one-line error it looks like a crash. So the warnings of a load
that fails are dropped, and those of a load that succeeds are shown as usual.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_weights_only"]


def load_weights_only(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; its exception propagates for the
    caller's one-line error, without the warnings torch gave on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = torch.load(path, map_location="cpu", weights_only=True)
    for warning in caught:   # a successful load: show what torch said
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return value
