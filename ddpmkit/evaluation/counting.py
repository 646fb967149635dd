"""Counting a network's calls: the number of function evaluations (NFE) of a sampler."""
from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["CountingModel"]


class CountingModel:
    """Wraps a model and counts its calls (the number of function evaluations, NFE)."""

    def __init__(self, model: Callable[..., torch.Tensor]):
        self.model = model
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        self.calls += 1
        return self.model(x, t, **cond)
